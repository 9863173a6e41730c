package concurrent_switch

import (
	"regexp"

	"github.com/redpanda-data/benthos/v4/public/service"
)

// metaCheck is a case check that reads one metadata value, the shapes
// pipeline.yaml's cases take: `errored()`, and `@name.or("fallback") ==
// "value"` (or `!=`). Answered from the message, it costs a map lookup
// where Bloblang maps a copy of the message per case and message (a sixth of
// what a storm's lookup requests cost the output, in CPU profiles).
type metaCheck struct {
	errored               bool
	name, fallback, value string
	equal                 bool
}

var (
	erroredCheck = regexp.MustCompile(`^\s*errored\(\)\s*$`)
	// Literals without escapes: what they say is what they are.
	metaCompare = regexp.MustCompile(`^\s*@([A-Za-z_][A-Za-z0-9_]*)\.or\("([^"\\]*)"\)\s*(==|!=)\s*"([^"\\]*)"\s*$`)
)

// metaCheckOf is check as a metaCheck, or nil when it has another shape
// (Bloblang runs it).
func metaCheckOf(check string) *metaCheck {
	if erroredCheck.MatchString(check) {
		return &metaCheck{errored: true}
	}
	m := metaCompare.FindStringSubmatch(check)
	if m == nil {
		return nil
	}
	return &metaCheck{name: m[1], fallback: m[2], equal: m[3] == "==", value: m[4]}
}

// test answers the check for msg, and whether it could: a value that is not
// a string (Bloblang compares typed values) is left to Bloblang.
func (c *metaCheck) test(msg *service.Message) (pass, known bool) {
	if c.errored {
		return msg.GetError() != nil, true
	}
	s := c.fallback
	if v, ok := msg.MetaGetMut(c.name); ok {
		str, isString := v.(string)
		if !isString {
			return false, false
		}
		s = str
	}
	return (s == c.value) == c.equal, true
}
