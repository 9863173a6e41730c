package kafka

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redpanda-data/benthos/v4/public/service"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/decnet/decnet-stream/internal/recordmeta"
)

// Metadata keys set on every consumed message, as Redpanda Connect sets them.
const (
	metaKey       = "kafka_key"
	metaTopic     = recordmeta.Topic
	metaPartition = recordmeta.Partition
	metaOffset    = recordmeta.Offset
	metaTimestamp = "kafka_timestamp_ms"
	metaTombstone = "kafka_tombstone_message"
	// metaLag is how many records of the partition were behind this one
	// when it was fetched (high watermark - offset - 1).
	metaLag = "kafka_lag"
)

// maxPollRecords caps one poll so that a huge backlog is handed to the
// pipeline in pieces rather than all at once.
const maxPollRecords = 10000

// readBatch is one batch of one partition on its way to the pipeline.
type readBatch struct {
	msgs service.MessageBatch
	// recs are the records msgs were made from, in order: a replay rebuilds
	// its messages from them, untouched by the processors of the last try.
	recs    []*kgo.Record
	release func()
	attempt int // deliveries so far
	n       int // records of the batch first read (replays carry fewer)
}

// franzReader is the kafka_franz input. A poll goroutine turns fetches into
// per-partition batches, registers each with the checkpointer and hands it to
// ReadBatch; acknowledgements flow back through the checkpointer into
// franz-go's marked offsets, which are committed every commit_period.
type franzReader struct {
	conf readerConfig
	log  *service.Logger
	res  *service.Resources

	mu      sync.Mutex
	cl      *kgo.Client
	cp      *checkpointer
	batches chan readBatch
	stop    context.CancelFunc
	done    chan struct{}
	// closing tells the revoke callback run by Close not to wait for
	// batches that the stopping pipeline will never acknowledge.
	closing atomic.Bool

	// received counts records handed to the pipeline, per topic (replays
	// aside): input_received cannot tell a pipeline's topics apart.
	received *service.MetricCounter
	// acked counts records whose batch was acknowledged, per topic: what a
	// commit may cover.
	acked *service.MetricCounter
	lag   *lags

	// afterPoll, when set, runs between a poll and the tracking of its
	// records (tests put a rebalance there).
	afterPoll func()

	// replays are nacked messages due for another delivery; replayed is
	// signalled when one is added.
	replayMu sync.Mutex
	replays  []readBatch
	replayed chan struct{}
}

func newFranzReader(conf readerConfig, res *service.Resources) *franzReader {
	return &franzReader{conf: conf, log: res.Logger(), res: res, replayed: make(chan struct{}, 1),
		received: res.Metrics().NewCounter("kafka_records_received", "topic"),
		acked:    res.Metrics().NewCounter("kafka_records_acked", "topic"),
		lag:      newLags(res.Metrics())}
}

func (r *franzReader) clientOpts(cp *checkpointer) []kgo.Opt {
	opts := append(r.conf.client.opts(r.log),
		kgo.ConsumeTopics(r.conf.topics...),
		kgo.ConsumeResetOffset(r.conf.startOffset),
		kgo.FetchMaxBytes(r.conf.fetchMaxBytes),
		kgo.FetchMaxPartitionBytes(r.conf.fetchMaxPart),
		kgo.FetchMaxWait(r.conf.fetchMaxWait),
		kgo.MetadataMaxAge(r.conf.metadataMaxAge),
		kgo.MetadataMinAge(min(r.conf.metadataMaxAge, 5*time.Second)),
	)
	if r.conf.regexpTopics {
		opts = append(opts, kgo.ConsumeRegex())
	}
	if r.conf.rackID != "" {
		opts = append(opts, kgo.Rack(r.conf.rackID))
	}
	if len(r.conf.excludeTopics) > 0 {
		opts = append(opts, kgo.ConsumeExcludeTopics(r.conf.excludeTopics...))
	}
	if r.conf.readCommitted {
		opts = append(opts, kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	}
	if r.conf.fetchMinBytes > 0 {
		opts = append(opts, kgo.FetchMinBytes(r.conf.fetchMinBytes))
	}
	if r.conf.instanceID != "" && r.conf.group != "" {
		opts = append(opts, kgo.InstanceID(r.conf.instanceID))
	}
	if r.conf.group != "" {
		opts = append(opts,
			kgo.ConsumerGroup(r.conf.group),
			kgo.Balancers(r.conf.balancer),
			kgo.SessionTimeout(r.conf.sessionTimeout),
			kgo.HeartbeatInterval(r.conf.heartbeat),
			kgo.RebalanceTimeout(r.conf.rebalance),
			kgo.AutoCommitMarks(),
			kgo.BlockRebalanceOnPoll(),
			kgo.AutoCommitInterval(r.conf.commitPeriod),
			kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, assigned map[string][]int32) {
				cp.assign(assigned)
			}),
			kgo.OnPartitionsRevoked(func(ctx context.Context, cl *kgo.Client, revoked map[string][]int32) {
				dctx, cancel := context.WithTimeout(ctx, drainTimeout)
				defer cancel()
				if r.closing.Load() {
					cancel()
				}
				cp.drain(dctx, revoked)
				if err := cl.CommitMarkedOffsets(ctx); err != nil {
					r.log.Warnf("Committing offsets of revoked partitions failed: %v", err)
				}
			}),
			kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
				cp.drop(lost)
			}),
		)
	}
	return opts
}

// Connect starts a client and its poll loop. It pings the cluster first so
// that an unreachable broker is reported here and retried with backoff.
func (r *franzReader) Connect(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cl != nil {
		return nil
	}
	var cl *kgo.Client
	cp := newCheckpointer(r.conf.checkpointLimit, func(rec *kgo.Record) { cl.MarkCommitRecords(rec) })
	cp.ordered = map[string]bool{}
	for _, t := range r.conf.orderedTopics {
		cp.ordered[t] = true
	}
	cl, err := kgo.NewClient(r.clientOpts(cp)...)
	if err != nil {
		return err
	}
	if err := cl.Ping(ctx); err != nil {
		cl.Close()
		return err
	}
	loopCtx, stop := context.WithCancel(context.Background())
	r.cl, r.cp, r.stop = cl, cp, stop
	r.batches = make(chan readBatch, 4)
	r.done = make(chan struct{})
	go r.pollLoop(loopCtx, cl, cp, r.batches, r.done)
	if r.conf.group != "" {
		go r.lag.pollGroup(loopCtx, cl, r.conf.group, cmp.Or(r.conf.lagPeriod, lagPeriod), r.log)
	}
	return nil
}

// partitionBuffer holds one partition's records until its batch policy says
// to flush. It belongs to the checkpoint the records were fetched under.
type partitionBuffer struct {
	pc      *partitionCheckpoint
	batcher *service.Batcher
	recs    []*kgo.Record
	n       int
}

func (r *franzReader) pollLoop(ctx context.Context, cl *kgo.Client, cp *checkpointer, out chan<- readBatch, done chan<- struct{}) {
	defer close(done)
	batching := !r.conf.batching.IsNoop()
	buffers := map[topicPartition]*partitionBuffer{}
	defer func() {
		for _, b := range buffers {
			_ = b.batcher.Close(context.Background())
		}
	}()
	direct := r.conf.group == ""
	senders := map[topicPartition]*partitionSender{}
	enqueue := func(pc *partitionCheckpoint, b queuedBatch) {
		s := senders[pc.tp]
		if s == nil || s.pc != pc {
			s = r.newSender(ctx, cl, cp, out, pc)
			senders[pc.tp] = s
		}
		s.enqueue(b)
	}

	for {
		pollCtx, cancel := ctx, context.CancelFunc(func() {})
		if wait, ok := nextFlush(buffers); ok {
			pollCtx, cancel = context.WithTimeout(ctx, wait)
		}
		fetches := cl.PollRecords(pollCtx, maxPollRecords)
		cancel()
		// Rebalances wait while a poll's records are matched with the
		// assignment they were fetched under; after that, a revoke (and
		// perhaps a new assignment of the same partition) may come, and
		// track refuses records of a checkpoint that is no longer live.
		// Looked up after a rebalance instead, records fetched under the old
		// assignment were tracked under the new one, and a later offset
		// could be committed before earlier ones were read again.
		owners := map[topicPartition]*partitionCheckpoint{}
		fetches.EachPartition(func(p kgo.FetchTopicPartition) {
			if len(p.Records) > 0 {
				tp := topicPartition{p.Topic, p.Partition}
				owners[tp] = cp.current(tp, direct)
			}
		})
		cl.AllowRebalance()
		if r.afterPoll != nil {
			r.afterPoll()
		}
		if ctx.Err() != nil || fetches.IsClientClosed() {
			return
		}
		fetches.EachError(func(topic string, partition int32, err error) {
			if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
				return
			}
			r.log.Errorf("Fetching %s/%d failed: %v", topic, partition, err)
		})
		ok := true
		fetches.EachPartition(func(p kgo.FetchTopicPartition) {
			if !ok || len(p.Records) == 0 {
				return
			}
			tp := topicPartition{p.Topic, p.Partition}
			pc := owners[tp]
			if pc == nil {
				return // revoked while in flight from the broker
			}
			r.lag.fetched(p)
			if !batching {
				enqueue(pc, queuedBatch{recs: p.Records, hw: p.HighWatermark})
				return
			}
			buf := buffers[tp]
			if buf != nil && buf.pc != pc {
				// The partition was reassigned: what was buffered for the old
				// assignment will be read again from the last commit.
				_ = buf.batcher.Close(ctx)
				buf = nil
			}
			if buf == nil {
				batcher, err := r.conf.batching.NewBatcher(r.res)
				if err != nil {
					r.log.Errorf("Creating batcher: %v", err)
					ok = false
					return
				}
				buf = &partitionBuffer{pc: pc, batcher: batcher}
				buffers[tp] = buf
			}
			for _, rec := range p.Records {
				buf.recs = append(buf.recs, rec)
				buf.n++
				if buf.batcher.Add(r.conf.recordMeta.message(rec, p.HighWatermark)) && ok {
					ok = r.flush(ctx, buf, enqueue)
				}
			}
		})
		if !ok {
			return
		}
		for _, buf := range buffers {
			if periodDue(buf.batcher) && buf.n > 0 {
				if !r.flush(ctx, buf, enqueue) {
					return
				}
			}
		}
	}
}

// periodDue reports whether a batcher's period has passed. Benthos reports
// an overdue period as 1ns left, never as zero or less (so a check for
// "<= 0" never fires and a partition's last records wait forever); anything
// under a millisecond counts as due.
func periodDue(b *service.Batcher) bool {
	wait, has := b.UntilNext()
	return has && wait < time.Millisecond
}

// nextFlush is how long until the soonest period flush of any buffer.
func nextFlush(buffers map[topicPartition]*partitionBuffer) (time.Duration, bool) {
	var min time.Duration
	found := false
	for _, b := range buffers {
		if b.n == 0 {
			continue
		}
		if d, ok := b.batcher.UntilNext(); ok && (!found || d < min) {
			min, found = d, true
		}
	}
	if found && min < time.Millisecond {
		min = time.Millisecond
	}
	return min, found
}

func (r *franzReader) flush(ctx context.Context, buf *partitionBuffer, enqueue func(*partitionCheckpoint, queuedBatch)) bool {
	msgs, err := buf.batcher.Flush(ctx)
	recs := buf.recs
	buf.n, buf.recs = 0, nil
	if err != nil {
		r.log.Errorf("Flushing batch: %v", err)
		return ctx.Err() == nil
	}
	if len(msgs) > 0 {
		enqueue(buf.pc, queuedBatch{msgs: msgs, recs: recs})
	}
	return true
}

// appendMessages appends the messages of recs, fetched when their
// partition's high watermark was highWatermark, to batch.
func (m recordMetadata) appendMessages(batch service.MessageBatch, recs []*kgo.Record, highWatermark int64) service.MessageBatch {
	for _, rec := range recs {
		batch = append(batch, m.message(rec, highWatermark))
	}
	return batch
}

// message makes rec a message, with the partition's high watermark as
// fetched for its kafka_lag. kafka_topic, kafka_partition and kafka_offset
// are always written: a nack is traced to its record by them.
func (m recordMetadata) message(rec *kgo.Record, highWatermark int64) *service.Message {
	msg := service.NewMessage(rec.Value)
	if m.key {
		msg.MetaSetMut(metaKey, string(rec.Key))
	}
	msg.MetaSetMut(metaTopic, rec.Topic)
	msg.MetaSetMut(metaPartition, int(rec.Partition))
	msg.MetaSetMut(metaOffset, int(rec.Offset))
	if m.timestamp {
		msg.MetaSetMut(metaTimestamp, rec.Timestamp.UnixMilli())
	}
	if m.tombstone {
		msg.MetaSetMut(metaTombstone, rec.Value == nil)
	}
	if m.lag {
		msg.MetaSetMut(metaLag, max(highWatermark-rec.Offset-1, 0))
	}
	for _, h := range rec.Headers {
		msg.MetaSetMut(h.Key, string(h.Value))
	}
	return msg
}

// ReadBatch hands the pipeline the next batch: a replay of nacked messages
// when one is due, else the next batch read. Its ack releases the batch's
// offsets for commit once every message of it has been delivered.
func (r *franzReader) ReadBatch(ctx context.Context) (service.MessageBatch, service.AckFunc, error) {
	r.mu.Lock()
	batches, done := r.batches, r.done
	r.mu.Unlock()
	if batches == nil {
		return nil, nil, service.ErrNotConnected
	}
	for {
		if b, ok := r.nextReplay(); ok {
			return r.deliver(b)
		}
		select {
		case b := <-batches:
			return r.deliver(b)
		case <-r.replayed:
		case <-done:
			r.reset()
			return nil, nil, service.ErrNotConnected
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		}
	}
}

// deliver hands b out. Its ack releases the batch for commit when every
// message was delivered; with auto_replay_nacks, messages that failed are
// delivered again (rebuilt from their records, after a backoff) until they
// are, and the batch is released only then. Without it a nack drops the
// batch, as Redpanda Connect documents.
//
// Replays are kept here rather than by Benthos' nack-replay wrapper, which
// maps a replayed batch's failures by the indexes of the batch first read:
// a message failing twice beyond the replayed batch's length was taken for
// delivered, and its offset committed.
func (r *franzReader) deliver(b readBatch) (service.MessageBatch, service.AckFunc, error) {
	b.attempt++
	if b.attempt == 1 {
		b.n = len(b.recs)
		r.received.Incr(int64(b.n), b.recs[0].Topic) // a batch is one partition's
	}
	release := func() {
		b.release()
		r.acked.Incr(int64(b.n), b.recs[0].Topic)
	}
	return b.msgs, func(_ context.Context, err error) error {
		if err == nil || !r.conf.replayNacks {
			release()
			return nil
		}
		failed := failedRecords(b, err)
		if len(failed) == 0 {
			release()
			return nil
		}
		// A redelivery's kafka_lag counts from the partition's end as now
		// known: it is being read again now.
		hw := r.lag.highWatermark(failed[0].Topic, failed[0].Partition)
		again := readBatch{msgs: r.conf.recordMeta.appendMessages(make(service.MessageBatch, 0, len(failed)), failed, hw), recs: failed, release: b.release, attempt: b.attempt, n: b.n}
		time.AfterFunc(replayBackoff(b.attempt), func() { r.addReplay(again) })
		return nil
	}, nil
}

// failedRecords are the records of b whose messages err says failed: those
// a batch error names, or all of them.
//
// A failed message is traced to its record by the kafka_topic,
// kafka_partition and kafka_offset this input wrote on it, which every
// message derived from it carries unless a processor removed them. A
// failure traced to no record of b (the metadata was removed or rewritten,
// or a processor made a new message) replays all of b: duplicates, never
// a record committed undelivered. The metadata is read only when a batch
// fails; Benthos' indexer, which tagged each message's context when the
// batch was handed out, cost seven allocations per message on every batch,
// and lost failures of messages made anew.
func failedRecords(b readBatch, err error) []*kgo.Record {
	var bErr *service.BatchError
	if !errors.As(err, &bErr) || bErr.IndexedErrors() == 0 || len(b.msgs) != len(b.recs) {
		return b.recs
	}
	seen := make([]bool, len(b.recs))
	traced := true
	// The walk is by the error's own positions, which is what the
	// deprecation warns of; each failed message is traced by its metadata,
	// not by where it stands.
	bErr.WalkMessages(func(_ int, m *service.Message, e error) bool { //nolint:staticcheck // see above
		if e == nil {
			return true
		}
		i, ok := recordOf(b.recs, m)
		if !ok {
			traced = false
			return false
		}
		seen[i] = true
		return true
	})
	if !traced {
		return b.recs
	}
	var out []*kgo.Record
	for i, rec := range b.recs {
		if seen[i] {
			out = append(out, rec)
		}
	}
	return out
}

// recordOf finds the record of recs (one partition's, by ascending
// offset) that m was made from, by m's kafka_* metadata.
func recordOf(recs []*kgo.Record, m *service.Message) (int, bool) {
	r, ok := recordmeta.Of(m)
	if !ok || r.Topic != recs[0].Topic || r.Partition != recs[0].Partition {
		return 0, false
	}
	return slices.BinarySearchFunc(recs, r.Offset, func(rec *kgo.Record, off int64) int { return cmp.Compare(rec.Offset, off) })
}

// replayBackoff grows from 1ms to 1s over a message's failed deliveries.
func replayBackoff(attempt int) time.Duration {
	return min(time.Millisecond<<min(attempt, 10), time.Second)
}

func (r *franzReader) addReplay(b readBatch) {
	r.replayMu.Lock()
	r.replays = append(r.replays, b)
	r.replayMu.Unlock()
	select {
	case r.replayed <- struct{}{}:
	default:
	}
}

func (r *franzReader) nextReplay() (readBatch, bool) {
	r.replayMu.Lock()
	defer r.replayMu.Unlock()
	if len(r.replays) == 0 {
		return readBatch{}, false
	}
	b := r.replays[0]
	r.replays = r.replays[1:]
	return b, true
}

// reset closes the client after the poll loop ended on its own, so that
// Connect starts afresh.
func (r *franzReader) reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cl != nil {
		r.stop()
		r.cl.Close()
		r.cl, r.batches = nil, nil
	}
	// The new client reads from the last commit: replays of the old one's
	// batches would only duplicate what it reads again.
	r.replayMu.Lock()
	r.replays = nil
	r.replayMu.Unlock()
}

// Close stops polling, commits every acknowledged offset and leaves the group.
func (r *franzReader) Close(ctx context.Context) error {
	r.mu.Lock()
	cl, stop, done := r.cl, r.stop, r.done
	r.cl, r.batches = nil, nil
	r.mu.Unlock()
	if cl == nil {
		return nil
	}
	r.closing.Store(true)
	stop()
	select {
	case <-done:
	case <-ctx.Done():
	}
	var err error
	if r.conf.group != "" {
		if err = cl.CommitMarkedOffsets(ctx); err != nil {
			err = errors.New("committing offsets on close: " + err.Error())
		}
	}
	cl.Close()
	return err
}
