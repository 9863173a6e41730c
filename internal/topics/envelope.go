package topics

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/tidwall/gjson"
)

// Reason is why an event was refused, carried in the decnet_error metadata
// key so a dead-letter route can say why.
type Reason string

// Reasons an event is refused.
const (
	ReasonInvalidJSON  Reason = "invalid_json"
	ReasonBadEnvelope  Reason = "bad_envelope"
	ReasonBadSubject   Reason = "bad_subject"
	ReasonSpoofedTopic Reason = "spoofed_topic"
	ReasonNoRoute      Reason = "no_route"
	ReasonBadKey       Reason = "bad_key"
	ReasonDuplicateKey Reason = "duplicate_key"
)

// EventError is a refused event: a reason from the fixed list above and a
// detail for people.
type EventError struct {
	Reason Reason
	Detail string
}

func (e *EventError) Error() string { return string(e.Reason) + ": " + e.Detail }

func refuse(r Reason, format string, args ...any) *EventError {
	return &EventError{Reason: r, Detail: fmt.Sprintf(format, args...)}
}

// Envelope is a validated v1 DECNET event. Payload is the raw JSON object,
// left undecoded: most stages only need one field of it. The event is read
// in place: ID, Type, Payload and Member may point into its bytes, which
// must not change while they are used (clone what must outlive them). The
// router reads one of them per event; copying every one would cost it two
// allocations per event for nothing.
type Envelope struct {
	ID          string
	Topic       string
	Type        string
	Payload     []byte
	IDGenerated bool // the body had no id; WithID adds the generated one
	// Member is the payload member ParseEnvelopeMember was asked for (not
	// Exists when absent): read in the pass that checks the payload's keys,
	// so a router's key costs no second scan of the event.
	Member gjson.Result
}

// MaxEnvelopeBytes bounds what ParseEnvelope accepts: DECNET events are a
// few hundred bytes, and an attacker-fed sensor must not make us parse
// megabytes.
const MaxEnvelopeBytes = 1 << 20

// ParseEnvelope validates a v1 envelope delivered on subject. The subject
// the transport delivered the event on is the truth: a body whose topic
// names another subject is refused as spoofed.
func ParseEnvelope(data []byte, subject string) (Envelope, error) {
	return ParseEnvelopeMember(data, subject, "")
}

// ParseEnvelopeMember is ParseEnvelope that also returns the payload's
// member named member (a key, unescaped, not a path) in Envelope.Member.
func ParseEnvelopeMember(data []byte, subject, member string) (Envelope, error) {
	var env Envelope
	if len(data) > MaxEnvelopeBytes {
		return env, refuse(ReasonBadEnvelope, "event is %d bytes, over the %d limit", len(data), MaxEnvelopeBytes)
	}
	var sc envelopeScan
	sc.scan(data, member)
	if !sc.valid {
		return env, refuse(ReasonInvalidJSON, "body is not valid JSON")
	}
	if !sc.object {
		return env, refuse(ReasonBadEnvelope, "body is not a JSON object")
	}
	if sc.topKeys.found {
		return env, refuse(ReasonDuplicateKey, "key %q appears twice in the envelope", sc.topKeys.repeated)
	}
	if v := sc.raw(sc.v); !sc.isNumber(sc.v) || v != "1" && sc.result(sc.v).Num != 1 {
		return env, refuse(ReasonBadEnvelope, "v must be the number 1, got %s", sc.shown(sc.v))
	}
	if !sc.payload.exists() || data[sc.payload.start] != '{' {
		return env, refuse(ReasonBadEnvelope, "payload must be an object, got %s", sc.shown(sc.payload))
	}
	if sc.payloadKeys.found {
		return env, refuse(ReasonDuplicateKey, "key %q appears twice in the payload", sc.payloadKeys.repeated)
	}
	env.Member = sc.result(sc.member)
	// Epoch seconds (the scan validated the number) or ISO-8601 text.
	if !sc.isNumber(sc.ts) {
		if _, ok := EventTime(sc.result(sc.ts)); !ok {
			return env, refuse(ReasonBadEnvelope, "ts must be epoch seconds or an ISO-8601 time, got %s", sc.shown(sc.ts))
		}
	}
	topic, ok := sc.text(sc.topic)
	if !ok || topic == "" {
		return env, refuse(ReasonBadEnvelope, "topic must be a non-empty string, got %s", sc.shown(sc.topic))
	}
	typ, ok := sc.text(sc.typ)
	if sc.typ.exists() && !ok {
		return env, refuse(ReasonBadEnvelope, "type must be a string, got %s", sc.raw(sc.typ))
	}
	switch id, ok := sc.text(sc.id); {
	case !sc.id.exists() || sc.raw(sc.id) == "null":
		env.ID, env.IDGenerated = NewEventID(), true
	case ok && id != "":
		env.ID = id
	default:
		return env, refuse(ReasonBadEnvelope, "id must be a non-empty string, got %s", sc.raw(sc.id))
	}
	if topic != subject {
		return env, refuse(ReasonSpoofedTopic, "body says topic %q but it was delivered on %q", topic, subject)
	}
	env.Topic, env.Type = subject, typ
	env.Payload = data[sc.payload.start:sc.payload.end]
	return env, nil
}

// keySet finds the first key an object repeats. Keys are compared
// unescaped ("attacker\u005fip" is "attacker_ip"). Objects are small: a
// slice until one is not, then a map, so a hostile payload of many distinct
// keys costs one pass.
type keySet struct {
	few [16]string
	n   int
	// lengths has bit len%64 set for each key in few: a key whose length
	// no earlier key had is new without a comparison (most are).
	lengths  uint64
	many     map[string]struct{}
	repeated string
	found    bool // a key was repeated (perhaps "")
}

func (s *keySet) seen(k string) bool {
	if s.many != nil {
		if _, ok := s.many[k]; ok {
			s.repeated, s.found = k, true
			return true
		}
		s.many[k] = struct{}{}
		return false
	}
	bit := uint64(1) << (len(k) & 63)
	if s.lengths&bit != 0 {
		for _, f := range s.few[:s.n] {
			if f == k {
				s.repeated, s.found = k, true
				return true
			}
		}
	}
	if s.n < len(s.few) {
		s.few[s.n] = k
		s.n++
		s.lengths |= bit
		return false
	}
	s.many = make(map[string]struct{}, 64)
	for _, f := range s.few {
		s.many[f] = struct{}{}
	}
	s.many[k] = struct{}{}
	return false
}

// shown is the value at sp for an error message: its text, cut short, or
// "nothing" when absent.
func (s *envelopeScan) shown(sp span) string {
	if !sp.exists() {
		return "nothing"
	}
	if raw := s.raw(sp); len(raw) > 40 {
		return strconv.Quote(raw[:40]) + "…"
	}
	return s.raw(sp)
}

// NewEventID is a fresh event id in DECNET's form: 32 hex characters.
func NewEventID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// WithID returns the body with "id" added as its first member. Use it when
// ParseEnvelope generated the id, so that every copy of the event carries
// the same one.
func WithID(data []byte, id string) []byte {
	i := 0
	for i < len(data) && data[i] != '{' {
		i++
	}
	out := make([]byte, 0, len(data)+len(id)+8)
	out = append(out, data[:i+1]...)
	out = append(out, `"id":`...)
	out = strconv.AppendQuote(out, id)
	rest := data[i+1:]
	if j := firstNonSpace(rest); j < len(rest) && rest[j] != '}' {
		out = append(out, ',')
	}
	return append(out, rest...)
}

func firstNonSpace(b []byte) int {
	for i, c := range b {
		if c != ' ' && c != '\t' && c != '\n' && c != '\r' {
			return i
		}
	}
	return len(b)
}

// EventTime reads an envelope's ts: epoch seconds as DECNET's bus sends
// them, or ISO-8601 (RFC 3339) text as its webhook worker writes them.
func EventTime(ts gjson.Result) (time.Time, bool) {
	switch ts.Type {
	case gjson.Number:
		sec := math.Floor(ts.Num)
		return time.Unix(int64(sec), int64((ts.Num-sec)*1e9)), true
	case gjson.String:
		at, err := time.Parse(time.RFC3339Nano, ts.Str)
		return at, err == nil
	}
	return time.Time{}, false
}
