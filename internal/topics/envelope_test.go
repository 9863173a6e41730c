package topics

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/tidwall/gjson"

	"github.com/decnet/decnet-stream/internal/fixtures"
)

func readLines(t *testing.T, name string) []fixtures.EventLine {
	t.Helper()
	lines, err := fixtures.Events(name)
	if err != nil {
		t.Fatal(err)
	}
	return lines
}

func TestParseEnvelopeAcceptsEveryValidFixture(t *testing.T) {
	for _, l := range readLines(t, "valid.jsonl") {
		env, err := ParseEnvelope(l.Event, l.Subject)
		if err != nil {
			t.Errorf("%s: %v", l.Subject, err)
			continue
		}
		if env.Topic != l.Subject || env.ID == "" || env.IDGenerated {
			t.Errorf("%s: parsed %+v", l.Subject, env)
		}
		var payload map[string]any
		if err := json.Unmarshal(env.Payload, &payload); err != nil {
			t.Errorf("%s: payload slice %q is not the object: %v", l.Subject, env.Payload, err)
		}
	}
}

// The invalid fixtures whose reason is about the envelope itself; subject
// and routing reasons are the router's, tested there.
func TestParseEnvelopeRefusesInvalidFixtures(t *testing.T) {
	checked := 0
	for _, l := range readLines(t, "invalid.jsonl") {
		switch Reason(l.Expect) {
		case ReasonInvalidJSON, ReasonBadEnvelope, ReasonSpoofedTopic:
		default:
			continue
		}
		checked++
		_, err := ParseEnvelope([]byte(l.Raw), l.Subject)
		var ee *EventError
		if !errors.As(err, &ee) || string(ee.Reason) != l.Expect {
			t.Errorf("%q: got %v, want %s", l.Raw, err, l.Expect)
		}
	}
	if checked == 0 {
		t.Fatal("no envelope fixtures checked")
	}
}

func TestParseEnvelopeCases(t *testing.T) {
	const subj = "attacker.observed"
	for _, tc := range []struct {
		body string
		want Reason
	}{
		{`{"v":1,"id":"a","topic":"attacker.observed","type":"observed","ts":1.5,"payload":{}}`, ""},
		{`{"v":1,"topic":"attacker.observed","ts":1,"payload":{}}`, ""}, // id generated
		{`{"v":1,"id":null,"topic":"attacker.observed","ts":1,"payload":{}}`, ""},
		{``, ReasonInvalidJSON},
		{`{"v":1,`, ReasonInvalidJSON},
		{`[1,2]`, ReasonBadEnvelope},
		{`"str"`, ReasonBadEnvelope},
		{`{"v":"1","id":"a","topic":"attacker.observed","ts":1,"payload":{}}`, ReasonBadEnvelope},
		{`{"v":2,"id":"a","topic":"attacker.observed","ts":1,"payload":{}}`, ReasonBadEnvelope},
		{`{"id":"a","topic":"attacker.observed","ts":1,"payload":{}}`, ReasonBadEnvelope},
		{`{"v":1,"id":"a","topic":"attacker.observed","ts":"now","payload":{}}`, ReasonBadEnvelope},
		{`{"v":1,"id":"a","topic":"attacker.observed","payload":{}}`, ReasonBadEnvelope},
		{`{"v":1,"id":"a","topic":"attacker.observed","ts":1,"payload":[]}`, ReasonBadEnvelope},
		{`{"v":1,"id":"a","topic":"attacker.observed","ts":1}`, ReasonBadEnvelope},
		{`{"v":1,"id":7,"topic":"attacker.observed","ts":1,"payload":{}}`, ReasonBadEnvelope},
		{`{"v":1,"id":"","topic":"attacker.observed","ts":1,"payload":{}}`, ReasonBadEnvelope},
		{`{"v":1,"id":"a","ts":1,"payload":{}}`, ReasonBadEnvelope},
		{`{"v":1,"id":"a","topic":5,"ts":1,"payload":{}}`, ReasonBadEnvelope},
		{`{"v":1,"id":"a","topic":"attacker.observed","type":3,"ts":1,"payload":{}}`, ReasonBadEnvelope},
		{`{"v":1,"id":"a","topic":"attacker.scored","ts":1,"payload":{}}`, ReasonSpoofedTopic},
		{`{"v":1,"id":"a","topic":"attacker.observed ","ts":1,"payload":{}}`, ReasonSpoofedTopic},
		{`{"v":1,"id":"a","topic":"attacker.observed","ts":1,"payload":{}}` + strings.Repeat(" ", MaxEnvelopeBytes), ReasonBadEnvelope},
		// A key given twice is read as the first by some parsers and as the
		// last by others (Bloblang, encoding/json): a private duplicate must
		// not hide a public attacker, so the envelope is refused.
		{`{"v":1,"id":"a","topic":"attacker.observed","ts":1,"payload":{"attacker_ip":"10.0.0.1","attacker_ip":"8.8.4.4"}}`, ReasonDuplicateKey},
		{`{"v":1,"id":"a","topic":"attacker.observed","ts":1,"payload":{"attacker_ip":"10.0.0.1","attacker\u005fip":"8.8.4.4"}}`, ReasonDuplicateKey},
		{`{"v":1,"id":"a","topic":"attacker.observed","ts":1,"payload":{},"payload":{"attacker_ip":"8.8.4.4"}}`, ReasonDuplicateKey},
		{`{"v":1,"id":"a","topic":"attacker.observed","topic":"attacker.scored","ts":1,"payload":{}}`, ReasonDuplicateKey},
		{`{"v":1,"v":1,"id":"a","topic":"attacker.observed","ts":1,"payload":{}}`, ReasonDuplicateKey},
		{`{"v":1,"id":"a","topic":"attacker.observed","ts":1,"payload":{"k":{"x":1,"x":2}}}`, ""}, // deeper than anything routed: left to its readers
		// DECNET's webhook worker sends ts as an ISO-8601 string.
		{`{"id":"a","payload":{},"topic":"attacker.observed","ts":"2026-04-26T09:01:47.123456+00:00","type":"observed","v":1}`, ""},
		{`{"v":1,"id":"a","topic":"attacker.observed","ts":"2026-04-26T09:01:47Z","payload":{}}`, ""},
		{`{"v":1,"id":"a","topic":"attacker.observed","ts":"yesterday","payload":{}}`, ReasonBadEnvelope},
	} {
		env, err := ParseEnvelope([]byte(tc.body), subj)
		var ee *EventError
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%.80s: %v", tc.body, err)
		case tc.want != "" && (!errors.As(err, &ee) || ee.Reason != tc.want):
			t.Errorf("%.80s: got %v, want %s", tc.body, err, tc.want)
		case tc.want == "" && strings.Contains(tc.body, `"payload":{}`) && string(env.Payload) != "{}":
			t.Errorf("%.80s: payload %q", tc.body, env.Payload)
		}
	}
}

// DECNET's webhooks send ts as ISO-8601 text, its bus as epoch seconds:
// both are envelopes; text that is not a time is not.
func TestTimestampAsAnISOStringIsRead(t *testing.T) {
	for body, ok := range map[string]bool{
		`{"id":"a","payload":{},"topic":"attacker.observed","ts":"2026-04-26T09:01:47.5+00:00","type":"observed","v":1}`: true,
		`{"id":"a","payload":{},"topic":"attacker.observed","ts":1777194107.5,"type":"observed","v":1}`:                  true,
		`{"id":"a","payload":{},"topic":"attacker.observed","ts":"yesterday","type":"observed","v":1}`:                   false,
	} {
		if _, err := ParseEnvelope([]byte(body), "attacker.observed"); (err == nil) != ok {
			t.Errorf("%s: %v", body, err)
		}
	}
	if at, ok := EventTime(gjson.Parse(`"2026-04-26T09:01:47.5+00:00"`)); !ok || at.UnixMilli() != 1777194107500 {
		t.Fatalf("ISO ts read as %v", at)
	}
}

// Many distinct payload keys cost one pass, not one comparison per pair.
func TestManyPayloadKeysAreNotQuadratic(t *testing.T) {
	var b strings.Builder
	b.WriteString(`{"v":1,"id":"a","topic":"attacker.observed","ts":1,"payload":{`)
	for i := 0; i < 40000; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `"k%d":1`, i)
	}
	b.WriteString(`}}`)
	if _, err := ParseEnvelope([]byte(b.String()), "attacker.observed"); err != nil {
		t.Fatal(err)
	}
}

func TestGeneratedIDIsWrittenIntoTheBody(t *testing.T) {
	for _, body := range []string{
		`{"v":1,"topic":"attacker.observed","ts":1,"payload":{}}`,
		` { "v":1,"topic":"attacker.observed","ts":1,"payload":{"attacker_ip":"203.0.113.9"}}`,
	} {
		env, err := ParseEnvelope([]byte(body), "attacker.observed")
		if err != nil || !env.IDGenerated || len(env.ID) != 32 {
			t.Fatalf("%s: %+v %v", body, env, err)
		}
		out := WithID([]byte(body), env.ID)
		again, err := ParseEnvelope(out, "attacker.observed")
		if err != nil || again.ID != env.ID || again.IDGenerated {
			t.Fatalf("rewritten body %s: %+v %v", out, again, err)
		}
	}
}

// The member read in the key-checking pass is the one a path lookup finds,
// escaped keys included: the router keys by it without a second scan.
func TestParseEnvelopeMemberIsThePathsValue(t *testing.T) {
	lines := readLines(t, "valid.jsonl")
	lines = append(lines,
		fixtures.EventLine{Subject: "attacker.observed", Event: []byte(`{"v":1,"topic":"attacker.observed","ts":1,"payload":{"attacker\u005fip":"203.0.113.7"}}`)},
		fixtures.EventLine{Subject: "attacker.observed", Event: []byte(`{"v":1,"topic":"attacker.observed","ts":1,"payload":{"nested":{"attacker_ip":"x"}}}`)},
		fixtures.EventLine{Subject: "attacker.observed", Event: []byte(`{"v":1,"topic":"attacker.observed","ts":1,"payload":{"attacker_ip":null}}`)},
	)
	for _, l := range lines {
		env, err := ParseEnvelopeMember(l.Event, l.Subject, "attacker_ip")
		if err != nil {
			t.Errorf("%s: %v", l.Event, err)
			continue
		}
		want := gjson.GetBytes(l.Event, "payload.attacker_ip")
		if env.Member.Exists() != want.Exists() || env.Member.Type != want.Type || env.Member.String() != want.String() {
			t.Errorf("%s: member %v (%q), the path gives %v (%q)", l.Event, env.Member.Type, env.Member.Raw, want.Type, want.Raw)
		}
	}
}

// A repeated empty key is a repeated key: found by the fuzzer, which the
// first version of the check let through because it kept the key's name
// ("") as its flag.
func TestRepeatedEmptyKeyIsADuplicate(t *testing.T) {
	for body, where := range map[string]string{
		`{"":1,"":2,"v":1,"topic":"a.b","ts":1,"payload":{}}`: "envelope",
		`{"v":1,"topic":"a.b","ts":1,"payload":{"":1,"":2}}`:  "payload",
	} {
		_, err := ParseEnvelope([]byte(body), "a.b")
		var ee *EventError
		if !errors.As(err, &ee) || ee.Reason != ReasonDuplicateKey || !strings.Contains(ee.Detail, where) {
			t.Errorf("%s: %v, want a duplicate key in the %s", body, err, where)
		}
	}
}

// Nesting as deep as the size limit allows is validated without
// recursion: valid deep JSON inside a payload is accepted, outside an
// object it is refused as what it is, and an unclosed one is not JSON.
func TestDeepNestingIsValidatedWithoutRecursion(t *testing.T) {
	deep := strings.Repeat("[", 500_000) + strings.Repeat("]", 500_000)
	body := `{"v":1,"id":"d","topic":"a.b","ts":1,"payload":{"attacker_ip":"45.9.0.3","x":` + deep + `}}`
	if _, err := ParseEnvelope([]byte(body), "a.b"); err != nil {
		t.Fatalf("deep payload refused: %v", err)
	}
	for body, want := range map[string]Reason{
		deep:                     ReasonBadEnvelope,
		deep[:len(deep)-1]:       ReasonInvalidJSON,
		`{"a":{"b":[{"c":1},]}}`: ReasonInvalidJSON,
	} {
		_, err := ParseEnvelope([]byte(body), "a.b")
		var ee *EventError
		if !errors.As(err, &ee) || ee.Reason != want {
			t.Errorf("%.20q…: %v, want %s", body, err, want)
		}
	}
}
