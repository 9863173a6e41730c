package kafka

import (
	"context"
	"fmt"
	"strconv"
	"sync"

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
		kgo.AllowAutoTopicCreation(),
		// Produce requests are bounded by the write timeout instead.
		kgo.RecordDeliveryTimeout(w.conf.timeout),
		kgo.MaxBufferedRecords(50000),
	)
	if !w.conf.idempotent {
		opts = append(opts, kgo.DisableIdempotentWrite())
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
	index := make([]int, 0, len(batch)) // record i came from batch[index[i]]
	for i, msg := range batch {
		rec, err := w.record(batch, i, msg)
		if err != nil {
			fail(i, err)
			continue
		}
		records = append(records, rec)
		index = append(index, i)
	}
	if len(records) > 0 {
		ctx, cancel := context.WithTimeout(ctx, w.conf.timeout)
		results := cl.ProduceSync(ctx, records...)
		cancel()
		for i, res := range results {
			if res.Err != nil {
				fail(index[i], fmt.Errorf("producing to %s: %w", res.Record.Topic, res.Err))
			}
		}
	}
	if batchErr != nil {
		return batchErr
	}
	return nil
}

func (w *franzWriter) record(batch service.MessageBatch, i int, msg *service.Message) (*kgo.Record, error) {
	value, err := msg.AsBytes()
	if err != nil {
		return nil, err
	}
	rec := &kgo.Record{Value: value}
	if rec.Topic, err = batch.TryInterpolatedString(i, w.conf.topic); err != nil {
		return nil, fmt.Errorf("topic interpolation: %w", err)
	}
	if rec.Topic == "" {
		return nil, fmt.Errorf("topic interpolation: empty topic")
	}
	if w.conf.key != nil {
		if rec.Key, err = batch.TryInterpolatedBytes(i, w.conf.key); err != nil {
			return nil, fmt.Errorf("key interpolation: %w", err)
		}
	}
	if w.conf.partition != nil {
		s, err := batch.TryInterpolatedString(i, w.conf.partition)
		if err != nil {
			return nil, fmt.Errorf("partition interpolation: %w", err)
		}
		p, err := strconv.ParseInt(s, 10, 32)
		if err != nil || p < 0 {
			return nil, fmt.Errorf("partition interpolation: %q is not a partition number", s)
		}
		rec.Partition = int32(p)
	}
	if w.conf.metadata != nil {
		_ = w.conf.metadata.Walk(msg, func(k, v string) error {
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
