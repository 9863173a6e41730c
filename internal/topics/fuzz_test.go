package topics

import (
	"regexp"
	"strings"
	"testing"
)

// FuzzPattern: parsing never panics; a valid pattern's Match agrees with its
// regexp on valid subjects, and its captures rebuild the subject.
func FuzzPattern(f *testing.F) {
	for _, s := range [][2]string{
		{"attacker.>", "attacker.session.started"}, {"decky.*.*", "decky.d1.traffic"},
		{"*", "a"}, {">", "a.b"}, {"a.b", "a.b"}, {"ab*", "ab"}, {"a..b", "a.b"}, {"a.>.b", "a.x.b"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, pattern, subject string) {
		p, err := ParsePattern(pattern)
		if err != nil {
			if Match(pattern, subject) {
				t.Fatalf("invalid pattern %q matched %q", pattern, subject)
			}
			return
		}
		got := p.Match(subject)
		caps, ok := p.Captures(subject, nil)
		if ok != got {
			t.Fatalf("Match and Captures disagree on %q / %q", pattern, subject)
		}
		if ValidateSubject(subject) != nil {
			return
		}
		if re := regexp.MustCompile(p.Regexp()); re.MatchString(subject) != got {
			t.Fatalf("%q on %q: Match %v, regexp %s disagrees", pattern, subject, got, p.Regexp())
		}
		if got {
			// Substituting the captures back into the pattern yields the subject.
			var b strings.Builder
			i := 0
			for j, tok := range strings.Split(pattern, ".") {
				if j > 0 {
					b.WriteByte('.')
				}
				if tok == "*" || tok == ">" {
					b.WriteString(caps[i])
					i++
				} else {
					b.WriteString(tok)
				}
			}
			if b.String() != subject {
				t.Fatalf("captures %q of %q rebuild %q, not %q", caps, pattern, b.String(), subject)
			}
		}
	})
}

// FuzzParseEnvelope: never panics; an accepted envelope has a payload that
// is a JSON object slice of the input and the subject as its topic.
func FuzzParseEnvelope(f *testing.F) {
	f.Add([]byte(`{"v":1,"id":"a","topic":"attacker.observed","ts":1,"payload":{"attacker_ip":"203.0.113.45"}}`), "attacker.observed")
	f.Add([]byte(`{"v":1,"topic":"attacker.observed","ts":1,"payload":{}}`), "attacker.observed")
	f.Add([]byte(`not json`), "attacker.observed")
	f.Add([]byte(`{"v":1,"id":"a","topic":"x","ts":1,"payload":[[[[[[]]]]]]}`), "x")
	f.Fuzz(func(t *testing.T, body []byte, subject string) {
		env, err := ParseEnvelope(body, subject)
		if err != nil {
			return
		}
		if env.Topic != subject || env.ID == "" {
			t.Fatalf("accepted %+v for subject %q", env, subject)
		}
		if len(env.Payload) < 2 || env.Payload[0] != '{' || env.Payload[len(env.Payload)-1] != '}' {
			t.Fatalf("payload %q is not an object", env.Payload)
		}
		if env.IDGenerated {
			if _, err := ParseEnvelope(WithID(body, env.ID), subject); err != nil {
				t.Fatalf("WithID broke a valid body: %v", err)
			}
		}
	})
}
