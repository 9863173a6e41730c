package kafka

import (
	"context"
	"slices"
	"sync"

	"github.com/redpanda-data/benthos/v4/public/service"
	"github.com/twmb/franz-go/pkg/kgo"
)

// partitionSender hands one partition's batches to the pipeline in offset
// order, on its own goroutine. The poll loop only queues: a partition that
// is at its checkpoint limit (or an ordered topic's partition with a batch
// still out, waiting on slow work) holds up its own batches, never another
// partition's. Before, the poll loop itself waited on the full partition,
// and every other topic of the input waited with it: repeat sightings stood
// behind lookups of new attackers.
//
// A sender belongs to one assignment of its partition (its checkpoint):
// when the partition is revoked its remaining batches are dropped, to be
// read again by the new owner from the last commit. Backpressure is by
// pausing the partition's fetches while its queue is full.
type partitionSender struct {
	r   *franzReader
	cl  *kgo.Client
	cp  *checkpointer
	pc  *partitionCheckpoint
	out chan<- readBatch
	max int // queued messages at which fetching pauses
	// coalesce joins the batches queued while the last one waited into one
	// (up to maxPollRecords), as a poll after a wait would have returned
	// them: without a batching policy a batch is "what was fetched", and an
	// ordered partition sent one tiny fetch at a time fell far behind.
	coalesce bool
	// batchMax is the most messages in one batch: ordered_batch_size for
	// an ordered topic, a poll's worth otherwise.
	batchMax int

	mu     sync.Mutex
	queue  []queuedBatch
	queued int
	paused bool
	wake   chan struct{}
}

// maxQueued bounds what waits behind a partition's batches out with the
// pipeline before its fetches pause: enough to hand the next batch out at
// once, not a second checkpoint_limit of memory per partition (with
// 20,000 the benchmark's pipeline peaked at 1.2 GiB instead of 0.7).
const maxQueued = 1000

type queuedBatch struct {
	msgs service.MessageBatch
	recs []*kgo.Record
}

func (r *franzReader) newSender(ctx context.Context, cl *kgo.Client, cp *checkpointer, out chan<- readBatch, pc *partitionCheckpoint) *partitionSender {
	s := &partitionSender{r: r, cl: cl, cp: cp, pc: pc, out: out, max: max(min(cp.limit, maxQueued), 1), wake: make(chan struct{}, 1),
		coalesce: r.conf.batching.IsNoop(), batchMax: maxPollRecords}
	if cp.ordered[pc.tp.topic] {
		s.batchMax = r.conf.orderedBatch // at least 1: parseReaderConfig checks
	}
	go s.run(ctx)
	return s
}

// enqueue adds a batch, pausing the partition's fetches when the queue is
// full.
func (s *partitionSender) enqueue(msgs service.MessageBatch, recs []*kgo.Record) {
	s.mu.Lock()
	s.queue = append(s.queue, queuedBatch{msgs, recs})
	s.queued += len(msgs)
	if s.queued >= s.max && !s.paused {
		s.paused = true
		s.cl.PauseFetchPartitions(map[string][]int32{s.pc.tp.topic: {s.pc.tp.partition}})
	}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *partitionSender) run(ctx context.Context) {
	defer s.resume(true)
	for {
		s.mu.Lock()
		if len(s.queue) == 0 {
			s.mu.Unlock()
			select {
			case <-s.wake:
				continue
			case <-ctx.Done():
				return
			}
		}
		b := s.queue[0]
		s.queue[0] = queuedBatch{}
		s.queue = s.queue[1:]
		for s.coalesce && len(s.queue) > 0 && len(b.msgs)+len(s.queue[0].msgs) <= s.batchMax {
			b.msgs = append(b.msgs, s.queue[0].msgs...)
			b.recs = append(b.recs, s.queue[0].recs...)
			s.queue[0] = queuedBatch{}
			s.queue = s.queue[1:]
		}
		if n := s.batchMax; len(b.msgs) > n {
			// A fetch larger than a batch: the rest goes out next, first.
			// The batch gets slices of its own and its places in the
			// fetch's are cleared: the rest, waiting its turn, would
			// otherwise keep every message of it (and whatever the
			// pipeline wrote into them) until the fetch's last batch is
			// done.
			head := queuedBatch{slices.Clone(b.msgs[:n]), slices.Clone(b.recs[:n])}
			clear(b.msgs[:n])
			clear(b.recs[:n])
			s.queue = append([]queuedBatch{{b.msgs[n:], b.recs[n:]}}, s.queue...)
			b = head
		}
		s.mu.Unlock()

		release, ok := s.cp.track(ctx, s.pc, b.recs[len(b.recs)-1], len(b.msgs))
		if !ok {
			return // revoked since fetched (or shutting down): the new owner reads it
		}
		select {
		case s.out <- readBatch{msgs: b.msgs, recs: b.recs, release: release}:
		case <-ctx.Done():
			return
		}
		s.mu.Lock()
		s.queued -= len(b.msgs)
		s.mu.Unlock()
		s.resume(false)
	}
}

// resume lets the partition be fetched again once its queue has room (or
// at once when the sender ends, so a partition assigned back later is not
// left paused).
func (s *partitionSender) resume(ending bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ending {
		s.queue, s.queued = nil, 0
	}
	if s.paused && (ending || s.queued < s.max/2+1) {
		s.paused = false
		s.cl.ResumeFetchPartitions(map[string][]int32{s.pc.tp.topic: {s.pc.tp.partition}})
	}
}
