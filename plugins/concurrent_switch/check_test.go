package concurrent_switch

import (
	"errors"
	"testing"

	"github.com/redpanda-data/benthos/v4/public/bloblang"
	"github.com/redpanda-data/benthos/v4/public/service"
)

// A check read from the metadata answers what Bloblang answers, for every
// shape of message: absent, a string equal or not, typed values, errored.
// Where it cannot tell (a value that is not a string) it says so, and
// Bloblang decides.
func TestMetadataChecksAnswerAsBloblangDoes(t *testing.T) {
	checks := []string{
		`errored()`,
		` errored() `,
		`@intel_lookup.or("") == "request"`,
		`@intel_skipped.or("") != ""`,
		`@kind.or("none") == "none"`,
		`@kind.or("x")!="y"`,
	}
	msgs := map[string]func() *service.Message{
		"empty": func() *service.Message { return service.NewMessage([]byte(`{}`)) },
		"errored": func() *service.Message {
			m := service.NewMessage([]byte(`{}`))
			m.SetError(errors.New("refused"))
			return m
		},
	}
	for _, key := range []string{"intel_lookup", "intel_skipped", "kind"} {
		for name, v := range map[string]any{"request": "request", "empty string": "", "none": "none", "y": "y",
			"int": 5, "bool": true, "bytes": []byte("request"), "null": nil} {
			msgs[key+"="+name] = func() *service.Message {
				m := service.NewMessage([]byte(`{}`))
				m.MetaSetMut(key, v)
				return m
			}
		}
	}
	for _, check := range checks {
		fast := metaCheckOf(check)
		if fast == nil {
			t.Fatalf("%s: not read from the metadata", check)
		}
		exec, err := bloblang.Parse(check)
		if err != nil {
			t.Fatal(err)
		}
		for name, mk := range msgs {
			batch := service.MessageBatch{mk()}
			res, err := batch.BloblangExecutor(exec).Query(0)
			want := false
			if err == nil && res != nil {
				v, _ := res.AsStructured()
				want, _ = v.(bool)
			}
			got, known := fast.test(batch[0])
			if known && got != want {
				t.Errorf("%s on %s: %v, Bloblang says %v", check, name, got, want)
			}
			if !known && (name == "empty" || name == "errored") {
				t.Errorf("%s on %s: left to Bloblang", check, name)
			}
		}
	}
	for _, other := range []string{`this.x == "y"`, `@a.or("") == @b`, `@a == "x"`, `meta("a") == "x"`, `@a.or("\"") == "x"`} {
		if metaCheckOf(other) != nil {
			t.Errorf("%s was taken for a metadata check", other)
		}
	}
}

// BenchmarkRoute: a batch of 500 messages through pipeline.yaml's cases
// (dead letters, lookup requests, skipped, rows), most of them lookup
// requests as in a storm, with each check run by Bloblang and with the
// metadata checks read from the message.
func BenchmarkRoute(b *testing.B) {
	checks := []string{`errored()`, `@intel_lookup.or("") == "request"`, `@intel_skipped.or("") != ""`}
	batch := make(service.MessageBatch, 500)
	for i := range batch {
		m := service.NewMessage([]byte(`{"v":1}`))
		for _, k := range []string{"kafka_key", "kafka_topic", "kafka_partition", "kafka_offset", "decnet_key", "decnet_subject"} {
			m.MetaSetMut(k, "x")
		}
		if i%10 != 0 {
			m.MetaSetMut("intel_lookup", "request")
		}
		batch[i] = m
	}
	for _, fast := range []bool{false, true} {
		b.Run(map[bool]string{false: "bloblang", true: "metadata"}[fast], func(b *testing.B) {
			o := &output{cases: make([]switchCase, len(checks)+1)}
			for c, check := range checks {
				exec, err := bloblang.Parse(check)
				if err != nil {
					b.Fatal(err)
				}
				o.cases[c].check = exec
				if fast {
					o.cases[c].fast = metaCheckOf(check)
				}
			}
			b.ReportAllocs()
			for b.Loop() {
				if routes := o.route(batch); len(routes[1]) != 450 {
					b.Fatalf("%d lookup requests routed, want 450", len(routes[1]))
				}
			}
		})
	}
}
