package topic_router

import (
	"context"
	"fmt"
	"testing"

	"github.com/redpanda-data/benthos/v4/public/service"
)

// kafkaMessage is a message as kafka_franz hands it over: the record's
// value and the seven kafka_* metadata keys, fresh (never written by a
// processor yet), so a benchmark pays what the pipeline pays per event.
func kafkaMessage(topic string, body []byte, offset int) *service.Message {
	m := service.NewMessage(body)
	m.MetaSetMut("kafka_key", "")
	m.MetaSetMut("kafka_topic", topic)
	m.MetaSetMut("kafka_partition", 0)
	m.MetaSetMut("kafka_offset", offset)
	m.MetaSetMut("kafka_timestamp_unix", int64(1750000000000))
	m.MetaSetMut("kafka_tombstone_message", false)
	m.MetaSetMut("kafka_lag", int64(0))
	return m
}

// pipelineRouter is config/pipeline.yaml's topic_router.
const pipelineRouter = `
metadata: [ key ]
routes:
  - match: "attacker.>"
    topic: attacker.intel.enriched
    key_path: payload.attacker_ip
    key_format: ip
`

// BenchmarkRouteBatch routes batches of 500 attacker envelopes through the
// processor with config/pipeline.yaml's route, each batch made afresh as
// the input makes it (that cost is counted too: it is a floor, not ours).
//
//	go test ./plugins/topic_router -run '^$' -bench RouteBatch -benchmem -cpu 1
func BenchmarkRouteBatch(b *testing.B) {
	r := newTestRouter(b, pipelineRouter)
	bodies := make([][]byte, 500)
	for i := range bodies {
		bodies[i] = fmt.Appendf(nil, `{"v":1,"id":"6513270e269e0d37f2a74de452e6b%03d","topic":"attacker.observed","type":"observed","ts":1750000000.0,"payload":{"attacker_ip":"203.0.113.%d","decky":"decky-01","service":"ssh","event_type":"login_attempt","first_seen":"2025-06-15T08:00:00+00:00"}}`, i, i%250)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		batch := make(service.MessageBatch, len(bodies))
		for j, body := range bodies {
			batch[j] = kafkaMessage("attacker.observed", body, i*len(bodies)+j)
		}
		out, err := r.ProcessBatch(context.Background(), batch)
		if err != nil || len(out[0]) != len(batch) || out[0][0].GetError() != nil {
			b.Fatal("routing failed", err)
		}
	}
	b.ReportMetric(float64(b.N*len(bodies))/b.Elapsed().Seconds(), "envelopes/s")
}

// BenchmarkMakeBatch is BenchmarkRouteBatch's floor: making the messages
// alone, to subtract from it.
func BenchmarkMakeBatch(b *testing.B) {
	body := []byte(`{}`)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		batch := make(service.MessageBatch, 500)
		for j := range batch {
			batch[j] = kafkaMessage("attacker.observed", body, j)
		}
	}
	b.ReportMetric(float64(b.N*500)/b.Elapsed().Seconds(), "envelopes/s")
}
