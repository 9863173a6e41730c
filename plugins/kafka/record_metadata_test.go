package kafka

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redpanda-data/benthos/v4/public/service"
	"github.com/twmb/franz-go/pkg/kgo"
)

// By default a message carries every record field, as Benthos' own kafka
// inputs write them; with record_metadata only the fields named, and always
// its topic, partition and offset (a nack is traced by them) and its
// headers.
func TestRecordMetadataWritesTheFieldsNamed(t *testing.T) {
	rec := &kgo.Record{Key: []byte("203.0.113.7"), Value: []byte(`{}`), Topic: "attacker.observed", Partition: 3, Offset: 40,
		Timestamp: time.UnixMilli(1_750_000_000_000), Headers: []kgo.RecordHeader{{Key: "decnet_subject", Value: []byte("attacker.observed")}}}
	keys := func(yaml string) []string {
		t.Helper()
		conf, err := inputSpec().ParseYAML("seed_brokers: [ 127.0.0.1:9092 ]\ntopics: [ t ]\n"+yaml, nil)
		if err != nil {
			t.Fatal(err)
		}
		rc, err := parseReaderConfig(conf)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		_ = rc.recordMeta.message(rec, 50).MetaWalkMut(func(k string, v any) error {
			got = append(got, fmt.Sprintf("%s=%v", k, v))
			return nil
		})
		slices.Sort(got)
		return got
	}
	always := []string{"decnet_subject=attacker.observed", "kafka_offset=40", "kafka_partition=3", "kafka_topic=attacker.observed"}
	if got, want := keys(""), sorted(append([]string{"kafka_key=203.0.113.7", "kafka_lag=9", "kafka_timestamp_ms=1750000000000", "kafka_tombstone_message=false"}, always...)); !slices.Equal(got, want) {
		t.Errorf("default: %v, want %v", got, want)
	}
	if got, want := keys("record_metadata: [ key ]"), sorted(append([]string{"kafka_key=203.0.113.7"}, always...)); !slices.Equal(got, want) {
		t.Errorf("record_metadata: [ key ]: %v, want %v", got, want)
	}
	if got, want := keys("record_metadata: []"), sorted(always); !slices.Equal(got, want) {
		t.Errorf("record_metadata: []: %v, want %v", got, want)
	}
}

func sorted(s []string) []string { slices.Sort(s); return s }

func TestRecordMetadataIsLinted(t *testing.T) {
	err := service.NewStreamBuilder().SetYAML(`
input:
  kafka_franz:
    seed_brokers: [ 127.0.0.1:9092 ]
    topics: [ t ]
    record_metadata: [ key, offset ]
output:
  drop: {}
`)
	if err == nil || !strings.Contains(err.Error(), `record_metadata: "offset" is not one of key, timestamp, tombstone, lag`) {
		t.Fatalf("lint said %v", err)
	}
}
