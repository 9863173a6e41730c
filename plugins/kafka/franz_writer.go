package kafka

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/redpanda-data/benthos/v4/public/service"
	"github.com/twmb/franz-go/pkg/kgo"
)

// franzWriter is the kafka_franz output: one ProduceSync per batch, so a
// batch is acknowledged only once the brokers hold every record of it.
type franzWriter struct {
	conf writerConfig
	log  *service.Logger

	mu sync.RWMutex
	cl *kgo.Client
}

func newFranzWriter(conf writerConfig, res *service.Resources) *franzWriter {
	return &franzWriter{conf: conf, log: res.Logger()}
}

func (w *franzWriter) Connect(ctx context.Context) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.cl != nil {
		return nil
	}
	opts := append(w.conf.client.opts(w.log),
		kgo.RecordPartitioner(w.conf.partitioner),
		kgo.ProducerBatchCompression(w.conf.compression),
		kgo.ProducerBatchMaxBytes(w.conf.maxMessageBytes),
		kgo.MaxBufferedRecords(50000),
		// Benthos has already batched: lingering would only add latency to
		// every synchronous batch write.
		kgo.ProducerLinger(0),
	)
	if !w.conf.idempotent {
		opts = append(opts, kgo.DisableIdempotentWrite())
	}
	if w.conf.timestampMS == nil {
		// Produce requests are bounded by the write timeout instead.
		// franz-go times a record out from its Timestamp: with timestamp_ms
		// an old one would time out at once, so only the write's context
		// (timeout, below) bounds it then.
		opts = append(opts, kgo.RecordDeliveryTimeout(w.conf.timeout))
	}
	if !w.conf.noAutoCreate {
		opts = append(opts, kgo.AllowAutoTopicCreation())
	}
	if w.conf.brokerWriteMax > 0 {
		opts = append(opts, kgo.BrokerMaxWriteBytes(w.conf.brokerWriteMax))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return err
	}
	if err := cl.Ping(ctx); err != nil {
		cl.Close()
		return err
	}
	w.cl = cl
	return nil
}

// WriteBatch writes every message of the batch and reports each failed
// record against its own message.
func (w *franzWriter) WriteBatch(ctx context.Context, batch service.MessageBatch) error {
	w.mu.RLock()
	cl := w.cl
	w.mu.RUnlock()
	if cl == nil {
		return service.ErrNotConnected
	}
	records := make([]*kgo.Record, 0, len(batch))
	var batchErr *service.BatchError
	fail := func(i int, err error) {
		if batchErr == nil {
			batchErr = service.NewBatchError(batch, err)
		}
		batchErr.Failed(i, err)
	}
	// ProduceSync returns results in the order they complete, not the
	// order given: each result finds its message by its record.
	index := make(map[*kgo.Record]int, len(batch))
	ex := w.executors(batch)
	for i, msg := range batch {
		rec, err := w.record(ex, i, msg)
		if err != nil {
			fail(i, err)
			continue
		}
		records = append(records, rec)
		index[rec] = i
	}
	if len(records) > 0 {
		ctx, cancel := context.WithTimeout(ctx, w.conf.timeout)
		results := cl.ProduceSync(ctx, records...)
		cancel()
		for _, res := range results {
			if res.Err != nil {
				fail(index[res.Record], fmt.Errorf("producing to %s: %w", res.Record.Topic, res.Err))
			}
		}
	}
	if batchErr != nil {
		return batchErr
	}
	return nil
}

// batchExecutors evaluate the interpolated fields over one batch (nil for
// a field that is not set or needs no interpolation: see outField).
type batchExecutors struct {
	topic, key, partition, timestamp *service.MessageBatchInterpolationExecutor
}

func (w *franzWriter) executors(batch service.MessageBatch) batchExecutors {
	return batchExecutors{
		topic:     w.conf.topic.executor(batch),
		key:       w.conf.key.executor(batch),
		partition: w.conf.partition.executor(batch),
		timestamp: w.conf.timestampMS.executor(batch),
	}
}

func (w *franzWriter) record(ex batchExecutors, i int, msg *service.Message) (*kgo.Record, error) {
	value, err := msg.AsBytes()
	if err != nil {
		return nil, err
	}
	rec := &kgo.Record{Value: value}
	if rec.Topic, err = w.conf.topic.str(ex.topic, i, msg); err != nil {
		return nil, fmt.Errorf("topic interpolation: %w", err)
	}
	if rec.Topic == "" {
		return nil, fmt.Errorf("topic interpolation: empty topic")
	}
	if w.conf.key != nil {
		if rec.Key, err = w.conf.key.bytes(ex.key, i, msg); err != nil {
			return nil, fmt.Errorf("key interpolation: %w", err)
		}
		if len(rec.Key) == 0 {
			rec.Key = nil // no key: spread by the partitioner, not all on hash("")
		}
	}
	if w.conf.partition != nil {
		s, err := w.conf.partition.str(ex.partition, i, msg)
		if err != nil {
			return nil, fmt.Errorf("partition interpolation: %w", err)
		}
		p, err := strconv.ParseInt(s, 10, 32)
		if err != nil || p < 0 {
			return nil, fmt.Errorf("partition interpolation: %q is not a partition number", s)
		}
		rec.Partition = int32(p)
	}
	if w.conf.timestampMS != nil {
		s, err := w.conf.timestampMS.str(ex.timestamp, i, msg)
		if err != nil {
			return nil, fmt.Errorf("timestamp_ms interpolation: %w", err)
		}
		ms, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("timestamp_ms interpolation: %q is not milliseconds since the epoch", s)
		}
		rec.Timestamp = time.UnixMilli(ms)
	}
	if w.conf.metadata != nil {
		// Filtered before a value is made a string: Walk makes every value
		// one (the input's offsets and timestamps) and drops most of them.
		_ = w.conf.metadata.WalkMut(msg, func(k string, _ any) error {
			v, _ := msg.MetaGet(k)
			rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: k, Value: []byte(v)})
			return nil
		})
	}
	return rec, nil
}

func (w *franzWriter) Close(ctx context.Context) error {
	w.mu.Lock()
	cl := w.cl
	w.cl = nil
	w.mu.Unlock()
	if cl != nil {
		if err := cl.Flush(ctx); err != nil {
			w.log.Warnf("Flushing on close: %v", err)
		}
		cl.Close()
	}
	return nil
}
