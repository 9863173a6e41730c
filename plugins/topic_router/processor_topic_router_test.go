package topic_router

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/redpanda-data/benthos/v4/public/service"

	"github.com/decnet/decnet-stream/internal/fixtures"
)

func newTestRouter(t testing.TB, yaml string) *router {
	t.Helper()
	conf, err := spec().ParseYAML(yaml, nil)
	if err != nil {
		t.Fatal(err)
	}
	r, err := newRouter(conf, service.MockResources())
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func message(subject, body string) *service.Message {
	m := service.NewMessage([]byte(body))
	m.MetaSetMut("kafka_topic", subject)
	return m
}

// processOne runs one message through and returns it, or nil if dropped.
func processOne(t testing.TB, r *router, m *service.Message) *service.Message {
	t.Helper()
	out, err := r.ProcessBatch(context.Background(), service.MessageBatch{m})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) == 0 {
		return nil
	}
	return out[0][0]
}

func meta(m *service.Message, k string) string {
	v, _ := m.MetaGet(k)
	return v
}

func lines(t *testing.T, name string) []fixtures.EventLine {
	t.Helper()
	l, err := fixtures.Events(name)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// Every valid DECNET fixture is routed by the default table.
func TestDefaultRoutesOnValidFixtures(t *testing.T) {
	r := newTestRouter(t, `{}`)
	want := map[string][2]string{ // subject → topic, key
		"attacker.observed":             {"attacker.observed", ""},
		"attacker.scored":               {"attacker.scored", ""},
		"attacker.session.ended":        {"attacker.session.ended", "203.0.113.45"},
		"credential.captured":           {"credential.captured", ""},
		"decky.decky-02.traffic":        {"decky.traffic", "decky-02"},
		"topology.t-1.mutation.applied": {"topology.mutation", "t-1"},
		"system.sniffer.health":         {"system.health", "sniffer"},
		"system.intel.control":          {"system.control", "intel"},
	}
	for _, l := range lines(t, "valid.jsonl") {
		subject := l.Subject
		m := processOne(t, r, message(subject, string(l.Event)))
		if m == nil || m.GetError() != nil {
			t.Fatalf("%s: refused: %v", subject, m.GetError())
		}
		exp, ok := want[subject]
		if !ok {
			t.Fatalf("fixture subject %s not in this test's table", subject)
		}
		if got := meta(m, MetaTopic); got != exp[0] {
			t.Errorf("%s: topic %q, want %q", subject, got, exp[0])
		}
		key := exp[1]
		if strings.HasPrefix(subject, "attacker.") || subject == "credential.captured" {
			var ev struct {
				Payload struct {
					IP string `json:"attacker_ip"`
				} `json:"payload"`
			}
			_ = json.Unmarshal(l.Event, &ev)
			key = ev.Payload.IP
		}
		if got := meta(m, MetaKey); got != key {
			t.Errorf("%s: key %q, want %q", subject, got, key)
		}
		if meta(m, MetaSubject) != subject {
			t.Errorf("%s: decnet_subject %q", subject, meta(m, MetaSubject))
		}
	}
}

// Every invalid fixture is refused with its reason and keeps its bytes.
func TestInvalidFixturesAreRefusedWithTheirReason(t *testing.T) {
	r := newTestRouter(t, `{}`)
	for _, l := range lines(t, "invalid.jsonl") {
		subject, raw, expect := l.Subject, l.Raw, l.Expect
		m := processOne(t, r, message(subject, raw))
		if m == nil {
			t.Fatalf("%q was dropped, not flagged", raw)
		}
		if m.GetError() == nil || meta(m, MetaError) != expect {
			t.Errorf("%s %q: error %v, decnet_error %q; want %s", subject, raw, m.GetError(), meta(m, MetaError), expect)
		}
		if b, _ := m.AsBytes(); string(b) != raw {
			t.Errorf("refused message changed: %q", b)
		}
	}
}

// A public attacker hidden behind a private duplicate key is refused with
// its reason and its bytes: the router keys by the first value, while
// Bloblang and encoding/json read the last.
func TestDuplicateKeysAreRefused(t *testing.T) {
	r := newTestRouter(t, `{}`)
	raw := `{"v":1,"id":"d1","topic":"attacker.observed","ts":1,"payload":{"attacker_ip":"10.0.0.1","attacker_ip":"8.8.4.4"}}`
	m := processOne(t, r, message("attacker.observed", raw))
	if m.GetError() == nil || meta(m, MetaError) != "duplicate_key" || !strings.Contains(meta(m, MetaErrorDetail), "attacker_ip") {
		t.Fatalf("error %v, decnet_error %q, detail %q", m.GetError(), meta(m, MetaError), meta(m, MetaErrorDetail))
	}
	if b, _ := m.AsBytes(); string(b) != raw {
		t.Errorf("refused message changed: %q", b)
	}
}

func TestAttackerKeys(t *testing.T) {
	r := newTestRouter(t, `{}`)
	body := func(ip string) string {
		return `{"v":1,"id":"a","topic":"attacker.observed","ts":1,"payload":{"attacker_ip":` + ip + `}}`
	}
	for ip, want := range map[string]string{
		`"203.0.113.9"`:        "203.0.113.9",
		`"::ffff:203.0.113.9"`: "203.0.113.9",
		`"2001:DB8::1"`:        "2001:db8::1",
		`"fe80::1%eth0"`:       "",
		`"203.0.113.9/../x"`:   "",
		`"203.0.113.9?x="`:     "",
		`"203.0.113.9\u0000"`:  "",
		`"２０３.0.113.9"`:        "",
		`"1.2.3"`:              "",
		`1234`:                 "",
		`null`:                 "",
		`{"ip":"203.0.113.9"}`: "",
	} {
		m := processOne(t, r, message("attacker.observed", body(ip)))
		switch {
		case want == "" && meta(m, MetaError) != "bad_key":
			t.Errorf("%s: accepted as key %q", ip, meta(m, MetaKey))
		case want != "" && (m.GetError() != nil || meta(m, MetaKey) != want):
			t.Errorf("%s: key %q, error %v; want %q", ip, meta(m, MetaKey), m.GetError(), want)
		}
	}
}

func TestSubjectSources(t *testing.T) {
	body := `{"v":1,"id":"a","topic":"attacker.scored","ts":1,"payload":{"attacker_ip":"203.0.113.9"}}`
	r := newTestRouter(t, `{}`)
	m := message("sensor.raw", body)
	m.MetaSetMut(MetaSubject, "attacker.scored") // a decnet_subject header wins over the topic
	if m = processOne(t, r, m); m.GetError() != nil || meta(m, MetaTopic) != "attacker.scored" {
		t.Fatalf("decnet_subject header ignored: %v %q", m.GetError(), meta(m, MetaTopic))
	}
	r = newTestRouter(t, `subject: ${! @nats_subject }`)
	m = service.NewMessage([]byte(body))
	m.MetaSetMut("nats_subject", "attacker.scored")
	if m = processOne(t, r, m); m.GetError() != nil || meta(m, MetaTopic) != "attacker.scored" {
		t.Fatalf("subject interpolation ignored: %v", m.GetError())
	}
	if m = processOne(t, newTestRouter(t, `{}`), service.NewMessage([]byte(body))); meta(m, MetaError) != "bad_subject" {
		t.Fatalf("a message with no subject got %q", meta(m, MetaError))
	}
}

func TestCustomRoutesCapturesDropAndGeneratedID(t *testing.T) {
	r := newTestRouter(t, `
routes:
  - match: decky.*.traffic
    drop: true
  - match: sensor.*.>
    topic: raw.$1
    key: $2-${! json("payload.n") }
`)
	if m := processOne(t, r, message("decky.d1.traffic", `garbage`)); m != nil {
		t.Fatalf("drop route kept %v", m)
	}
	m := processOne(t, r, message("sensor.s7.a.b", `{"v":1,"topic":"sensor.s7.a.b","ts":1,"payload":{"n":3}}`))
	if m.GetError() != nil || meta(m, MetaTopic) != "raw.s7" || meta(m, MetaKey) != "a.b-3" {
		t.Fatalf("got topic %q key %q err %v", meta(m, MetaTopic), meta(m, MetaKey), m.GetError())
	}
	b, _ := m.AsBytes()
	var ev struct{ ID string }
	if err := json.Unmarshal(b, &ev); err != nil || len(ev.ID) != 32 {
		t.Fatalf("generated id not in body: %s", b)
	}
}

func TestBadRoutesFailAtConstruction(t *testing.T) {
	for _, yaml := range []string{
		`routes: [ { match: "a.*", topic: "x.$2" } ]`,
		`routes: [ { match: "a.b.", topic: "x" } ]`,
		`routes: [ { match: "a.*", topic: "bad/topic" } ]`,
		`routes: [ { match: "a.*", topic: "." } ]`,
		`routes: [ { match: "a.*", topic: ".." } ]`,
		`routes: [ { match: "a.*", key: "$1", key_path: "payload.x" } ]`,
		`routes: [ { match: "a.*", key_format: ip } ]`,
		`routes: []`,
	} {
		conf, err := spec().ParseYAML(yaml, nil)
		if err != nil {
			continue
		}
		if _, err := newRouter(conf, service.MockResources()); err == nil {
			t.Errorf("accepted %s", yaml)
		}
	}
}

// With metadata: [key], as config/pipeline.yaml routes, a message from
// kafka_franz ends with eight metadata keys (Go's small map: no table per
// event), keeps the contract for what it does get, and a refused one still
// names its subject for the dead letter.
func TestMetadataListKeepsARoutedMessageAtEightKeys(t *testing.T) {
	r := newTestRouter(t, pipelineRouter)
	good := `{"v":1,"id":"a","topic":"attacker.observed","ts":1,"payload":{"attacker_ip":"::ffff:203.0.113.9"}}`
	m := processOne(t, r, kafkaMessage("attacker.observed", []byte(good), 7))
	if m.GetError() != nil || meta(m, MetaKey) != "203.0.113.9" {
		t.Fatalf("routed: err %v, key %q", m.GetError(), meta(m, MetaKey))
	}
	for _, k := range []string{MetaTopic, MetaSubject} {
		if _, ok := m.MetaGet(k); ok {
			t.Errorf("%s written although metadata leaves it out", k)
		}
	}
	n := 0
	_ = m.MetaWalk(func(string, string) error { n++; return nil })
	if n > 8 {
		t.Errorf("%d metadata keys: more than Go's small map holds", n)
	}

	m = processOne(t, r, kafkaMessage("attacker.observed", []byte(`{"v":2}`), 8))
	if meta(m, MetaError) != "bad_envelope" || meta(m, MetaSubject) != "attacker.observed" {
		t.Fatalf("refused: error %q, subject %q", meta(m, MetaError), meta(m, MetaSubject))
	}

	// A lookup request read back carries its subject as a header: read,
	// not written again.
	m = kafkaMessage("attacker.intel.lookup", []byte(good), 9)
	m.MetaSetMut(MetaSubject, "attacker.observed")
	if m = processOne(t, r, m); m.GetError() != nil || meta(m, MetaSubject) != "attacker.observed" {
		t.Fatalf("lookup request: err %v, subject %q", m.GetError(), meta(m, MetaSubject))
	}
}

func TestMetadataListIsLinted(t *testing.T) {
	err := service.NewStreamBuilder().AddProcessorYAML(`topic_router: { metadata: [ subject, topics ] }`)
	if err == nil || !strings.Contains(err.Error(), `lint errors: (1,1) metadata: "topics" is not one of subject, topic, key`) {
		t.Fatalf("lint said %v", err)
	}
}

// A batch of mixed subjects (decnet_bus and webhook batches are) routes each
// message as it would be routed alone: what one subject's validation and
// route found is reused only for the same subject.
func TestABatchRoutesEachMessageAsAlone(t *testing.T) {
	r := newTestRouter(t, `{}`)
	valid := lines(t, "valid.jsonl")
	var bodies, subjects []string
	for i, l := range valid {
		bodies = append(bodies, string(l.Event))
		subjects = append(subjects, l.Subject)
		if i%2 == 0 { // the same subject again, then a bad one and one no route matches
			bodies = append(bodies, string(l.Event), string(l.Event), string(l.Event))
			subjects = append(subjects, l.Subject, "attacker..observed", "nowhere")
		}
	}
	alone := func(i int) *service.Message { return processOne(t, r, message(subjects[i], bodies[i])) }
	batch := make(service.MessageBatch, len(bodies))
	for i := range bodies {
		batch[i] = message(subjects[i], bodies[i])
	}
	out, err := r.ProcessBatch(context.Background(), batch)
	if err != nil || len(out) != 1 || len(out[0]) != len(bodies) {
		t.Fatalf("%d batches (%v), want one of %d", len(out), err, len(bodies))
	}
	for i, got := range out[0] {
		want := alone(i)
		for _, k := range []string{MetaKey, MetaTopic, MetaSubject, MetaError, MetaErrorDetail} {
			if meta(got, k) != meta(want, k) {
				t.Errorf("message %d (%s): %s %q in the batch, %q alone", i, subjects[i], k, meta(got, k), meta(want, k))
			}
		}
		if (got.GetError() == nil) != (want.GetError() == nil) {
			t.Errorf("message %d (%s): error %v in the batch, %v alone", i, subjects[i], got.GetError(), want.GetError())
		}
	}
}
