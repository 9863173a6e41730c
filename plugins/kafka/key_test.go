package kafka

import (
	"bytes"
	"testing"

	"github.com/redpanda-data/benthos/v4/public/service"
)

// A key (or topic) that is one metadata reference is read from the metadata
// directly; it must be the bytes Benthos' interpolation renders, whatever
// the value.
func TestMetadataKeyIsWhatTheInterpolationRenders(t *testing.T) {
	for _, raw := range []string{"${! @decnet_key }", "${!@decnet_key}", "${!  @decnet_key  }"} {
		if got := metadataReference(raw); got != "decnet_key" {
			t.Fatalf("%q: metadata reference %q, want decnet_key", raw, got)
		}
	}
	for _, raw := range []string{"${! @decnet_key }-x", "${! @decnet_key.uppercase() }", `${! meta("decnet_key") }`, "static", "${! @ }"} {
		if got := metadataReference(raw); got != "" {
			t.Fatalf("%q read as a metadata reference to %q", raw, got)
		}
	}

	conf, err := outputSpec().ParseYAML("seed_brokers: [ \"127.0.0.1:9092\" ]\ntopic: ${! @decnet_key }\nkey: ${! @decnet_key }\n", nil)
	must(t, err)
	wc, err := parseWriterConfig(conf)
	must(t, err)
	if wc.key.meta != "decnet_key" {
		t.Fatalf("key's metadata reference %q", wc.key.meta)
	}
	fast := newFranzWriter(wc, service.MockResources())
	key, topic := *wc.key, *wc.topic
	key.meta, topic.meta = "", ""
	wc.key, wc.topic = &key, &topic
	slow := newFranzWriter(wc, service.MockResources())

	values := []any{"198.51.100.7", "", 42, int64(-3), 3.5, true, []byte("bytes"), nil, map[string]any{"a": 1}, []any{"x", 2}, "absent"}
	var batch service.MessageBatch
	for _, v := range values {
		m := service.NewMessage([]byte(`{}`))
		if v != "absent" {
			m.MetaSetMut("decnet_key", v)
		}
		batch = append(batch, m)
	}
	exFast, exSlow := fast.executors(batch), slow.executors(batch)
	for i, m := range batch {
		a, errA := fast.record(exFast, i, m)
		b, errB := slow.record(exSlow, i, m)
		if (errA != nil) != (errB != nil) {
			t.Fatalf("value %#v: errors %v / %v", values[i], errA, errB)
		}
		if errA == nil && !bytes.Equal(a.Key, b.Key) {
			t.Errorf("value %#v: key %q, the interpolation renders %q", values[i], a.Key, b.Key)
		}
		if errA == nil && a.Topic != b.Topic {
			t.Errorf("value %#v: topic %q, the interpolation renders %q", values[i], a.Topic, b.Topic)
		}
	}
}
