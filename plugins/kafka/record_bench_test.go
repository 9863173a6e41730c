package kafka

import (
	"fmt"
	"testing"

	"github.com/redpanda-data/benthos/v4/public/service"
)

// BenchmarkWriterRecord is the writer's per-message work as pipeline.yaml's
// lookup requests and enriched events meet it: a message carrying the
// input's seven kafka_* keys and the router's decnet_key, keyed by
// ${! @decnet_key } and passing on the decnet_ metadata only.
func BenchmarkWriterRecord(b *testing.B) {
	conf, err := outputSpec().ParseYAML(`
seed_brokers: [ "127.0.0.1:9092" ]
topic: attacker.intel.lookup
key: ${! @decnet_key }
metadata:
  include_prefixes: [ decnet_ ]
`, nil)
	if err != nil {
		b.Fatal(err)
	}
	wc, err := parseWriterConfig(conf)
	if err != nil {
		b.Fatal(err)
	}
	w := newFranzWriter(wc, service.MockResources())
	batch := make(service.MessageBatch, 500)
	keys := make([]string, len(batch))
	for i := range batch {
		keys[i] = fmt.Sprintf("198.51.100.%d", i%250)
		m := service.NewMessage([]byte(`{"v":1,"id":"x","topic":"attacker.observed","type":"attacker.observed","ts":1,"payload":{"attacker_ip":"198.51.100.7"}}`))
		m.MetaSetMut("kafka_key", "198.51.100.7")
		m.MetaSetMut("kafka_topic", "attacker.observed")
		m.MetaSetMut("kafka_partition", 3)
		m.MetaSetMut("kafka_offset", 1000+i)
		m.MetaSetMut("kafka_timestamp_ms", int64(1_700_000_000_000))
		m.MetaSetMut("kafka_tombstone_message", false)
		m.MetaSetMut("kafka_lag", int64(12))
		m.MetaSetMut("decnet_key", keys[i])
		batch[i] = m
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		ex := w.executors(batch)
		for i, m := range batch {
			rec, err := w.record(ex, i, m)
			if err != nil || string(rec.Key) != keys[i] || len(rec.Headers) != 1 {
				b.Fatalf("record %d: %v %+v", i, err, rec)
			}
		}
	}
}
