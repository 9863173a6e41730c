package kafka

import (
	"context"
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
	max int // queued records at which fetching pauses
	// batchMax is the most messages in one batch: ordered_batch_size for
	// an ordered topic, else checkpoint_limit (at most a poll's worth), so
	// that the limit bounds what the partition has out.
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

// queuedBatch is a fetch's records of the partition, or a batch of the
// batching policy's. A fetch's records wait as records and become messages
// on the sender's goroutine as they go out: a queued record then costs its
// bytes, not a message with its metadata too, and the poll loop, which
// serves every partition, does not make the messages of all of them.
type queuedBatch struct {
	msgs service.MessageBatch // nil: made from recs as they go out
	recs []*kgo.Record
	hw   int64 // the partition's high watermark when fetched, for kafka_lag
}

func (r *franzReader) newSender(ctx context.Context, cl *kgo.Client, cp *checkpointer, out chan<- readBatch, pc *partitionCheckpoint) *partitionSender {
	s := &partitionSender{r: r, cl: cl, cp: cp, pc: pc, out: out, max: max(min(cp.limit, maxQueued), 1), wake: make(chan struct{}, 1),
		batchMax: min(maxPollRecords, cp.limit)}
	if cp.ordered[pc.tp.topic] {
		s.batchMax = r.conf.orderedBatch // at least 1: parseReaderConfig checks
	}
	go s.run(ctx)
	return s
}

// enqueue adds a batch, pausing the partition's fetches when the queue is
// full.
func (s *partitionSender) enqueue(b queuedBatch) {
	s.mu.Lock()
	s.queue = append(s.queue, b)
	s.queued += len(b.recs)
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
		b, runs := s.take()
		s.mu.Unlock()
		n := len(b.msgs)
		if b.msgs == nil {
			n = len(b.recs)
		}

		release, ok := s.cp.track(ctx, s.pc, b.recs[len(b.recs)-1], n)
		if !ok {
			return // revoked since fetched (or shutting down): the new owner reads it
		}
		if b.msgs == nil {
			// Made only now: while the partition waits for room, its next
			// batch is records.
			b.msgs = make(service.MessageBatch, 0, n)
			at := 0
			for _, r := range runs {
				b.msgs = s.r.conf.recordMeta.appendMessages(b.msgs, b.recs[at:at+r.n], r.hw)
				at += r.n
			}
		}
		select {
		case s.out <- readBatch{msgs: b.msgs, recs: b.recs, release: release}:
		case <-ctx.Done():
			return
		}
		s.mu.Lock()
		s.queued -= len(b.recs)
		s.mu.Unlock()
		s.resume(false)
	}
}

// run is what one queued fetch gave a batch: its next n records, fetched
// when the partition's high watermark was hw.
type run struct {
	n  int
	hw int64
}

// take removes the next batch from the head of the queue (mu held): a
// batching policy's batch as the policy made it (its processors may have
// changed how many messages it holds), or up to batchMax fetched records
// from as many queued fetches as there are, as a poll after the wait would
// have returned them (an ordered partition sent one tiny fetch at a time
// fell far behind), with the runs they came in. A fetch larger than the
// batch is split and its rest goes out next, first.
//
// The batch gets a slice of its own and its places in the queued ones are
// cleared: the rest, waiting its turn, would otherwise keep every message
// of it (and whatever the pipeline wrote into them) until the fetch's last
// batch is done.
func (s *partitionSender) take() (b queuedBatch, runs []run) {
	if q := s.queue[0]; q.msgs != nil {
		s.queue[0] = queuedBatch{}
		s.queue = s.queue[1:]
		return q, nil
	}
	// Fetched records only: with a batching policy every queued batch is
	// the policy's.
	b.recs = make([]*kgo.Record, 0, min(s.queued, s.batchMax))
	for len(s.queue) > 0 && len(b.recs) < s.batchMax {
		q := &s.queue[0]
		n := min(len(q.recs), s.batchMax-len(b.recs))
		runs = append(runs, run{n: n, hw: q.hw})
		b.recs = append(b.recs, q.recs[:n]...)
		clear(q.recs[:n])
		if q.recs = q.recs[n:]; len(q.recs) == 0 {
			s.queue[0] = queuedBatch{}
			s.queue = s.queue[1:]
		}
	}
	return b, runs
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
