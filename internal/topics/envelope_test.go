package topics

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

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
	} {
		env, err := ParseEnvelope([]byte(tc.body), subj)
		var ee *EventError
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%.80s: %v", tc.body, err)
		case tc.want != "" && (!errors.As(err, &ee) || ee.Reason != tc.want):
			t.Errorf("%.80s: got %v, want %s", tc.body, err, tc.want)
		case tc.want == "" && string(env.Payload) != "{}":
			t.Errorf("%.80s: payload %q", tc.body, env.Payload)
		}
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
