package topic_router

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/redpanda-data/benthos/v4/public/service"
)

// template is a route's topic or key: literal text, `$N` references to what
// the match's wildcards captured (`$0` is the whole subject), and optionally
// Benthos interpolations. Static templates are compiled once; the hot path
// only concatenates.
type template struct {
	raw    string
	parts  []templatePart              // when static
	interp *service.InterpolatedString // when it has ${! } interpolations
}

type templatePart struct {
	lit     string
	capture int // -1 for a literal
}

func newTemplate(raw string, captures int) (*template, error) {
	t := &template{raw: raw}
	if strings.Contains(raw, "${!") {
		is, err := service.NewInterpolatedString(raw)
		if err != nil {
			return nil, err
		}
		t.interp = is
	}
	parts, maxRef := parseCaptures(raw)
	if maxRef > captures {
		return nil, fmt.Errorf("%q refers to $%d but the match captures only %d wildcard(s)", raw, maxRef, captures)
	}
	t.parts = parts
	return t, nil
}

// parseCaptures splits s into literals and $N references, returning the
// highest N used.
func parseCaptures(s string) ([]templatePart, int) {
	var parts []templatePart
	maxRef := 0
	lit := strings.Builder{}
	for i := 0; i < len(s); i++ {
		if s[i] == '$' && i+1 < len(s) && s[i+1] >= '0' && s[i+1] <= '9' {
			j := i + 1
			for j < len(s) && s[j] >= '0' && s[j] <= '9' {
				j++
			}
			n, _ := strconv.Atoi(s[i+1 : j])
			if lit.Len() > 0 {
				parts = append(parts, templatePart{lit: lit.String(), capture: -1})
				lit.Reset()
			}
			parts = append(parts, templatePart{capture: n})
			maxRef = max(maxRef, n)
			i = j - 1
			continue
		}
		lit.WriteByte(s[i])
	}
	if lit.Len() > 0 {
		parts = append(parts, templatePart{lit: lit.String(), capture: -1})
	}
	return parts, maxRef
}

// render fills the template for one message. caps[0] is the subject.
func (t *template) render(msg *service.Message, caps []string) (string, error) {
	parts := t.parts
	if t.interp != nil {
		s, err := t.interp.TryString(msg)
		if err != nil {
			return "", err
		}
		var maxRef int
		if parts, maxRef = parseCaptures(s); maxRef >= len(caps) {
			return "", fmt.Errorf("interpolated %q refers to $%d, beyond the captures", s, maxRef)
		}
	}
	if len(parts) == 1 {
		if parts[0].capture < 0 {
			return parts[0].lit, nil
		}
		return caps[parts[0].capture], nil
	}
	var b strings.Builder
	for _, p := range parts {
		if p.capture < 0 {
			b.WriteString(p.lit)
		} else {
			b.WriteString(caps[p.capture])
		}
	}
	return b.String(), nil
}

// literal reports whether the template is plain text, the same for every
// message.
func (t *template) literal() bool {
	return t.interp == nil && len(t.parts) == 1 && t.parts[0].capture < 0
}

// validKafkaTopic is Kafka's rule for topic names.
func validKafkaTopic(s string) error {
	if s == "" || s == "." || s == ".." {
		return fmt.Errorf("%q is not a legal Kafka topic name", s)
	}
	if len(s) > 249 {
		return fmt.Errorf("topic name of %d characters is over Kafka's 249", len(s))
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("%q is not a legal Kafka topic name: %q is not one of [a-zA-Z0-9._-]", s, c)
		}
	}
	return nil
}
