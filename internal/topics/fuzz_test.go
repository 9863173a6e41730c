package topics

import (
	"regexp"
	"strings"
	"testing"

	"github.com/tidwall/gjson"
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

// gjsonScan is what ParseEnvelope did before its one-pass scanner, kept as
// the oracle: gjson validates, then walks the envelope, then its payload.
// gjsonScan answers in gjson.Results, what the scan's spans are compared as.
type gjsonAnswer struct {
	valid, object                          bool
	v, id, topic, typ, ts, payload, member gjson.Result
	topKeys, payloadKeys                   keySet
}

func gjsonScan(data []byte, member string) (sc gjsonAnswer) {
	sc.valid = gjson.ValidBytes(data)
	if !sc.valid {
		return sc
	}
	root := gjson.ParseBytes(data)
	if sc.object = root.IsObject(); !sc.object {
		return sc
	}
	root.ForEach(func(k, val gjson.Result) bool {
		if sc.topKeys.seen(k.Str) {
			return false
		}
		switch k.Str {
		case "v":
			sc.v = val
		case "id":
			sc.id = val
		case "topic":
			sc.topic = val
		case "type":
			sc.typ = val
		case "ts":
			sc.ts = val
		case "payload":
			sc.payload = val
		}
		return true
	})
	if sc.topKeys.found || !sc.payload.IsObject() {
		return sc
	}
	sc.payload.ForEach(func(k, val gjson.Result) bool {
		if sc.payloadKeys.seen(k.Str) {
			return false
		}
		if k.Str == member {
			sc.member = val
		}
		return true
	})
	return sc
}

// FuzzScanEnvelopeAgreesWithGJSON: the one-pass scanner accepts exactly
// the JSON gjson accepts, and finds the same members, repeats and values.
func FuzzScanEnvelopeAgreesWithGJSON(f *testing.F) {
	for _, s := range []string{
		`{"v":1,"id":"a","topic":"attacker.observed","ts":1,"payload":{"attacker_ip":"203.0.113.45"}}`,
		`{"v":1,"v":2}`, `{"payload":{"a":1,"a\u0000":2,"a":3}}`, `{"payload":{"attacker\u005fip":"x"}}`,
		` [1, -0.5e+3, true, false, null, "\ud83d\ude00", {}] `, `{"a":01}`, `{"a":1.}`, `{"a":"\x"}`, "{\"a\":\"\x01\"}",
		`{"ts":"2025-06-15T08:00:00Z","payload":{"attacker_ip":null,"n":[{"attacker_ip":1}]}}`, `{"a":tru}`, `{"a" 1}`, `{,}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		scan, want := scanEnvelope(body, "attacker_ip"), gjsonScan(body, "attacker_ip")
		got := gjsonAnswer{valid: scan.valid, object: scan.object, v: scan.result(scan.v), id: scan.result(scan.id),
			topic: scan.result(scan.topic), typ: scan.result(scan.typ), ts: scan.result(scan.ts), payload: scan.result(scan.payload),
			member: scan.result(scan.member), topKeys: scan.topKeys, payloadKeys: scan.payloadKeys}
		if got.valid != want.valid || want.valid && got.object != want.object {
			t.Fatalf("%q: valid %v object %v; gjson says %v %v", body, got.valid, got.object, want.valid, want.object)
		}
		if !want.valid || !want.object {
			return
		}
		if got.topKeys.found != want.topKeys.found || got.topKeys.repeated != want.topKeys.repeated {
			t.Fatalf("%q: repeated %q; gjson says %q", body, got.topKeys.repeated, want.topKeys.repeated)
		}
		if want.topKeys.found {
			return
		}
		for i, pair := range [][2]gjson.Result{{got.v, want.v}, {got.id, want.id}, {got.topic, want.topic},
			{got.typ, want.typ}, {got.ts, want.ts}, {got.payload, want.payload}} {
			g, w := pair[0], pair[1]
			if g.Type != w.Type || g.Raw != w.Raw || g.Str != w.Str || g.Num != w.Num || w.Exists() && g.Index != w.Index {
				t.Fatalf("%q: member %d is %+v; gjson says %+v", body, i, g, w)
			}
		}
		for _, sp := range []span{scan.v, scan.id, scan.topic, scan.typ, scan.ts, scan.payload} {
			r := scan.result(sp)
			if text, ok := scan.text(sp); ok != (r.Type == gjson.String) || text != r.Str {
				t.Fatalf("%q: text %q %v; the member is %+v", body, text, ok, r)
			}
			if scan.isNumber(sp) != (r.Type == gjson.Number) {
				t.Fatalf("%q: isNumber %v; the member is %+v", body, scan.isNumber(sp), r)
			}
		}
		if !want.payload.IsObject() {
			return
		}
		if got.payloadKeys.found != want.payloadKeys.found || got.payloadKeys.repeated != want.payloadKeys.repeated {
			t.Fatalf("%q: payload repeats %q; gjson says %q", body, got.payloadKeys.repeated, want.payloadKeys.repeated)
		}
		if !want.payloadKeys.found && (got.member.Raw != want.member.Raw || got.member.Str != want.member.Str) {
			t.Fatalf("%q: member %+v; gjson says %+v", body, got.member, want.member)
		}
	})
}
