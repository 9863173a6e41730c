package kafka

import (
	"context"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// topicPartition names one partition of one topic.
type topicPartition struct {
	topic     string
	partition int32
}

// partitionCheckpoint tracks the batches of one assigned partition that are
// out with the pipeline. Batches are released for commit strictly in offset
// order: an offset becomes committable only when every batch before it has
// been acknowledged, so a crash can cause duplicates but never a gap.
//
// A partitionCheckpoint belongs to one assignment. When the partition is
// revoked or lost its checkpoint is dropped from the checkpointer, and acks
// that arrive later for it are ignored: the partition's new owner resumes
// from what was committed.
type partitionCheckpoint struct {
	tp      topicPartition
	pending []*inflightBatch // in offset order
	msgs    int              // messages out with the pipeline
}

type inflightBatch struct {
	last *kgo.Record // highest offset in the batch
	n    int
	done bool
}

// checkpointer owns the checkpoints of every partition this client consumes.
// It bounds the messages in flight per partition (checkpoint_limit) by pausing
// that partition's fetches, so a slow pipeline applies backpressure to the
// broker instead of growing memory.
type checkpointer struct {
	limit int
	// ordered topics have one batch of a partition out at a time.
	ordered map[string]bool
	commit  func(*kgo.Record)           // marks an offset as committable
	pause   func(tp topicPartition)     // stops fetching a partition
	resume  func(tps ...topicPartition) // resumes fetching

	mu      sync.Mutex
	parts   map[topicPartition]*partitionCheckpoint
	changed chan struct{} // closed and replaced whenever an ack lands
}

func newCheckpointer(limit int, commit func(*kgo.Record)) *checkpointer {
	return &checkpointer{
		limit:   limit,
		commit:  commit,
		parts:   map[topicPartition]*partitionCheckpoint{},
		changed: make(chan struct{}),
	}
}

// assign starts a fresh checkpoint for each partition, replacing any earlier
// one for the same partition.
func (c *checkpointer) assign(assigned map[string][]int32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for topic, parts := range assigned {
		for _, p := range parts {
			tp := topicPartition{topic, p}
			c.parts[tp] = &partitionCheckpoint{tp: tp}
		}
	}
}

// current returns the live checkpoint of a partition, creating one when
// create is set (consumers without a group have no assignment callbacks).
func (c *checkpointer) current(tp topicPartition, create bool) *partitionCheckpoint {
	c.mu.Lock()
	defer c.mu.Unlock()
	pc := c.parts[tp]
	if pc == nil && create {
		pc = &partitionCheckpoint{tp: tp}
		c.parts[tp] = pc
	}
	return pc
}

// track registers a batch whose highest record is last as out with the
// pipeline under the checkpoint pc, first waiting while the partition has
// checkpoint_limit messages or more out. (A batch larger than the limit, a
// batching policy's, goes out alone.) It returns false when pc is no longer the partition's live
// checkpoint (revoked or lost since its records were fetched) or ctx ended:
// the batch must then be dropped, and is read again from the last commit.
// The returned release function acknowledges the batch.
func (c *checkpointer) track(ctx context.Context, pc *partitionCheckpoint, last *kgo.Record, n int) (release func(), ok bool) {
	limit := c.limit
	if c.ordered[pc.tp.topic] {
		limit = 1 // a batch goes out alone
	}
	c.mu.Lock()
	for pc.msgs > 0 && pc.msgs+n > limit && c.parts[pc.tp] == pc {
		changed := c.changed
		c.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, false
		}
		c.mu.Lock()
	}
	defer c.mu.Unlock()
	if c.parts[pc.tp] != pc {
		return nil, false
	}
	b := &inflightBatch{last: last, n: n}
	pc.pending = append(pc.pending, b)
	pc.msgs += n
	return func() { c.ack(pc, b) }, true
}

func (c *checkpointer) ack(pc *partitionCheckpoint, b *inflightBatch) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if b.done {
		return
	}
	b.done = true
	pc.msgs -= b.n
	var release *kgo.Record
	for len(pc.pending) > 0 && pc.pending[0].done {
		release = pc.pending[0].last
		pc.pending[0] = nil
		pc.pending = pc.pending[1:]
	}
	if release != nil && c.parts[pc.tp] == pc {
		c.commit(release)
	}
	c.notify()
}

// notify wakes everything waiting on a change; call with mu held.
func (c *checkpointer) notify() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// drain waits until the given partitions have nothing out with the pipeline,
// or until ctx is done, and then drops their checkpoints. Whatever was
// acknowledged by then has been released for commit; acks that come later are
// ignored.
func (c *checkpointer) drain(ctx context.Context, parts map[string][]int32) {
	for {
		c.mu.Lock()
		busy := false
		for topic, ps := range parts {
			for _, p := range ps {
				if pc := c.parts[topicPartition{topic, p}]; pc != nil && pc.msgs > 0 {
					busy = true
				}
			}
		}
		changed := c.changed
		c.mu.Unlock()
		if !busy {
			break
		}
		select {
		case <-changed:
		case <-ctx.Done():
			c.drop(parts)
			return
		}
	}
	c.drop(parts)
}

// drop forgets the given partitions at once (they were lost, or the drain
// gave up), waking a poll loop that waits on one of them.
func (c *checkpointer) drop(parts map[string][]int32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for topic, ps := range parts {
		for _, p := range ps {
			delete(c.parts, topicPartition{topic, p})
		}
	}
	c.notify()
}

// drainTimeout bounds how long a rebalance waits for a revoked partition's
// batches to be acknowledged before letting the partition go uncommitted.
const drainTimeout = 10 * time.Second
