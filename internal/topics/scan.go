package topics

import (
	"encoding/binary"
	"math/bits"
	"strconv"
	"unsafe"

	"github.com/tidwall/gjson"
)

// envelopeScan is what one pass over an event finds: whether it is JSON at
// all, where the envelope's members are, the first key repeated in the
// envelope and in its payload, and where one payload member is. It records
// extents, not values: the hot path reads a few of them, and building a
// gjson.Result for each (a float parse for every number) cost more than
// the checks that use them.
type envelopeScan struct {
	valid, object                  bool
	v, id, topic, typ, ts, payload span
	member                         span
	topKeys, payloadKeys           keySet
	data                           []byte
	memberName                     string
	i                              int
	// escaped says whether the last string value validated holds an
	// escape: recorded with its span, so it is not looked for again.
	escaped bool
}

// span is where the scan found a value: data[start:end], end 0 when the
// member is absent. escaped marks a string that holds escapes.
type span struct {
	start, end int
	escaped    bool
}

func (sp span) exists() bool { return sp.end > 0 }

// scanEnvelope validates data as JSON (RFC 8259, as gjson.ValidBytes
// does) and, in the same pass, records the envelope's members and checks
// the envelope's and the payload's keys for repeats: the event is read
// once, not validated, then walked, then walked again for its payload.
func scanEnvelope(data []byte, member string) (s envelopeScan) {
	s.scan(data, member)
	return s
}

// scan is scanEnvelope into s, which the caller may keep on its stack.
func (s *envelopeScan) scan(data []byte, member string) {
	s.data, s.memberName = data, member
	s.ws()
	s.object = s.i < len(data) && data[s.i] == '{'
	if s.object {
		s.valid = s.obj(levelTop)
	} else {
		s.valid = s.value(levelNone)
	}
	s.ws()
	s.valid = s.valid && s.i == len(data)
}

// level says whose members an object holds: the envelope's and its
// payload's are recorded, deeper ones only validated.
type level uint8

const (
	levelNone level = iota
	levelTop
	levelPayload
)

// raw is the value's text in the event (it points into the event).
func (s *envelopeScan) raw(sp span) string {
	if !sp.exists() {
		return ""
	}
	return unsafe.String(&s.data[sp.start], sp.end-sp.start)
}

// text is the string at sp, unescaped as gjson does, and whether there is
// one (absent or another type: false). It may point into the event.
func (s *envelopeScan) text(sp span) (string, bool) {
	if !sp.exists() || s.data[sp.start] != '"' {
		return "", false
	}
	if sp.escaped {
		return gjson.Parse(s.raw(sp)).Str, true
	}
	return s.raw(sp)[1 : sp.end-sp.start-1], true
}

// isNumber says whether the value at sp is a number (the scan validated
// its grammar).
func (s *envelopeScan) isNumber(sp span) bool {
	if !sp.exists() {
		return false
	}
	c := s.data[sp.start]
	return c == '-' || c >= '0' && c <= '9'
}

// result is the value at sp as gjson would give it, built from what the
// scan already knows instead of parsing it again: only an escaped string
// is handed to gjson to unescape.
func (s *envelopeScan) result(sp span) gjson.Result {
	if !sp.exists() {
		return gjson.Result{}
	}
	raw := s.raw(sp)
	r := gjson.Result{Raw: raw, Index: sp.start}
	switch c := raw[0]; c {
	case '"':
		r.Type, r.Str = gjson.String, raw[1:len(raw)-1]
		if sp.escaped {
			r = gjson.Parse(raw)
			r.Index = sp.start
		}
	case '{', '[':
		r.Type = gjson.JSON
	case 't':
		r.Type = gjson.True
	case 'f':
		r.Type = gjson.False
	case 'n':
		r.Type = gjson.Null
	default: // a number the scan validated as JSON's grammar
		r.Type = gjson.Number
		r.Num, _ = strconv.ParseFloat(raw, 64)
	}
	return r
}

func (s *envelopeScan) onTop(key string, start, end int) {
	if s.topKeys.found || s.topKeys.seen(key) {
		return
	}
	sp := span{start, end, s.escaped}
	switch key {
	case "v":
		s.v = sp
	case "id":
		s.id = sp
	case "topic":
		s.topic = sp
	case "type":
		s.typ = sp
	case "ts":
		s.ts = sp
	case "payload":
		s.payload = sp
	}
}

func (s *envelopeScan) onPayload(key string, start, end int) {
	if s.payloadKeys.found || s.payloadKeys.seen(key) {
		return
	}
	if s.memberName != "" && key == s.memberName {
		s.member = span{start, end, s.escaped}
	}
}

func (s *envelopeScan) ws() {
	// Compact JSON has none: one comparison (every whitespace byte is at
	// most a space) answers most calls.
	for s.i < len(s.data) && s.data[s.i] <= ' ' {
		switch s.data[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// value validates the value at s.i and moves past it. An object is the
// envelope's or its payload's when lv says so, and its members are
// recorded; anything nested deeper is only validated, without recursion.
func (s *envelopeScan) value(lv level) bool {
	if s.i >= len(s.data) {
		return false
	}
	switch c := s.data[s.i]; {
	case c == '"':
		var ok bool
		s.escaped, ok = s.str()
		return ok
	case c == '{' && lv != levelNone:
		return s.obj(lv)
	case c == '{' || c == '[':
		return s.nested()
	case c == '-' || c >= '0' && c <= '9':
		return s.number()
	}
	return s.scalar()
}

// scalar validates the number or literal at s.i.
func (s *envelopeScan) scalar() bool {
	if s.i >= len(s.data) {
		return false
	}
	switch c := s.data[s.i]; {
	case c == '-' || c >= '0' && c <= '9':
		return s.number()
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	}
	return false
}

// nested validates the object or array at s.i with a stack of the open
// brackets instead of recursion: an event may nest as deep as its size
// allows (a megabyte of brackets), and no goroutine stack grows with it.
func (s *envelopeScan) nested() bool {
	var buf [32]byte
	open := buf[:0]
	for {
		// A value is expected at s.i.
		if s.i >= len(s.data) {
			return false
		}
		switch c := s.data[s.i]; c {
		case '{', '[':
			s.i++
			s.ws()
			if s.i < len(s.data) && s.data[s.i] == c+2 { // {} or []
				s.i++
				break
			}
			open = append(open, c)
			if c == '{' && !s.memberKey() {
				return false
			}
			continue
		case '"':
			if _, ok := s.str(); !ok {
				return false
			}
		default:
			if !s.scalar() {
				return false
			}
		}
		// A value ended: close what it ends, or go on to the next one.
		for {
			if len(open) == 0 {
				return true
			}
			s.ws()
			if s.i >= len(s.data) {
				return false
			}
			top, c := open[len(open)-1], s.data[s.i]
			if c == top+2 { // } closes {, ] closes [
				s.i++
				open = open[:len(open)-1]
				continue
			}
			if c != ',' {
				return false
			}
			s.i++
			s.ws()
			if top == '{' && !s.memberKey() {
				return false
			}
			break
		}
	}
}

// memberKey validates an object key and its colon, leaving s.i at the
// value.
func (s *envelopeScan) memberKey() bool {
	if s.i >= len(s.data) || s.data[s.i] != '"' {
		return false
	}
	if _, ok := s.str(); !ok {
		return false
	}
	s.ws()
	if s.i >= len(s.data) || s.data[s.i] != ':' {
		return false
	}
	s.i++
	s.ws()
	return true
}

// obj validates the object at s.i, recording its members (unescaped key,
// value's extent) when it is the envelope or its payload.
func (s *envelopeScan) obj(lv level) bool {
	s.i++ // {
	s.ws()
	if s.i < len(s.data) && s.data[s.i] == '}' {
		s.i++
		return true
	}
	for {
		if s.i >= len(s.data) || s.data[s.i] != '"' {
			return false
		}
		ks := s.i
		escaped, ok := s.str()
		if !ok {
			return false
		}
		var key string
		if lv != levelNone {
			key = s.key(ks, escaped)
		}
		s.ws()
		if s.i >= len(s.data) || s.data[s.i] != ':' {
			return false
		}
		s.i++
		s.ws()
		nested := levelNone
		if lv == levelTop && key == "payload" && !s.payload.exists() {
			nested = levelPayload
		}
		vs := s.i
		if !s.value(nested) {
			return false
		}
		switch lv {
		case levelTop:
			s.onTop(key, vs, s.i)
		case levelPayload:
			s.onPayload(key, vs, s.i)
		}
		s.ws()
		if s.i >= len(s.data) {
			return false
		}
		switch s.data[s.i] {
		case ',':
			s.i++
			s.ws()
		case '}':
			s.i++
			return true
		default:
			return false
		}
	}
}

// key is the object key whose quoted text starts at start and ends at s.i,
// unescaped as gjson does. It may point into the event's bytes.
func (s *envelopeScan) key(start int, escaped bool) string {
	raw := s.data[start:s.i]
	if escaped {
		return gjson.Parse(string(raw)).Str
	}
	return unsafe.String(unsafe.SliceData(raw[1:]), len(raw)-2)
}

// Words of eight bytes, for skipping the plain runs of a string eight at a
// time: most of an event is string bytes that need no look one by one.
const (
	lsb = 0x0101010101010101
	msb = 0x8080808080808080
)

// stringStops marks the bytes of w (little-endian) that end a plain run in
// a JSON string: a quote, a backslash or a control character. Each test is
// the classic "has a zero / a smaller byte" bit trick; a borrow can mark a
// byte above a marked one, never below, so the lowest mark is exact.
func stringStops(w uint64) uint64 {
	q, b := w^(lsb*'"'), w^(lsb*'\\')
	return ((w-lsb*0x20)&^w | (q-lsb)&^q | (b-lsb)&^b) & msb
}

// str validates the string at s.i, reporting whether it holds escapes.
// It works on a local index, stored back once: the scan's own field,
// written through its pointer at every step, cost more than the checks.
func (s *envelopeScan) str() (escaped, ok bool) {
	data, i := s.data, s.i+1 // past the opening quote
	for {
		// Plain runs eight bytes at a time, then the rest one by one.
		for i+8 <= len(data) {
			if m := stringStops(binary.LittleEndian.Uint64(data[i:])); m != 0 {
				i += bits.TrailingZeros64(m) >> 3
				break
			}
			i += 8
		}
		for i < len(data) && data[i] >= 0x20 && data[i] != '"' && data[i] != '\\' {
			i++
		}
		if i >= len(data) {
			s.i = i
			return escaped, false
		}
		switch c := data[i]; {
		case c == '"':
			s.i = i + 1
			return escaped, true
		case c < 0x20:
			s.i = i
			return escaped, false
		}
		// A backslash: one escape.
		escaped = true
		i++
		if i >= len(data) {
			s.i = i
			return escaped, false
		}
		switch data[i] {
		case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			i++
		case 'u':
			if i+4 >= len(data) {
				s.i = i
				return escaped, false
			}
			for _, h := range data[i+1 : i+5] {
				if !(h >= '0' && h <= '9' || h >= 'a' && h <= 'f' || h >= 'A' && h <= 'F') {
					s.i = i
					return escaped, false
				}
			}
			i += 5
		default:
			s.i = i
			return escaped, false
		}
	}
}

func (s *envelopeScan) digits() bool {
	start := s.i
	for s.i < len(s.data) && s.data[s.i] >= '0' && s.data[s.i] <= '9' {
		s.i++
	}
	return s.i > start
}

// number validates -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
func (s *envelopeScan) number() bool {
	if s.data[s.i] == '-' {
		s.i++
	}
	if s.i < len(s.data) && s.data[s.i] == '0' {
		s.i++
	} else if !s.digits() {
		return false
	}
	if s.i < len(s.data) && s.data[s.i] == '.' {
		s.i++
		if !s.digits() {
			return false
		}
	}
	if s.i < len(s.data) && (s.data[s.i] == 'e' || s.data[s.i] == 'E') {
		s.i++
		if s.i < len(s.data) && (s.data[s.i] == '+' || s.data[s.i] == '-') {
			s.i++
		}
		if !s.digits() {
			return false
		}
	}
	return true
}

func (s *envelopeScan) literal(lit string) bool {
	if len(s.data)-s.i < len(lit) || string(s.data[s.i:s.i+len(lit)]) != lit {
		return false
	}
	s.i += len(lit)
	return true
}
