package topics

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"
)

// ErrBadPattern and ErrBadSubject are wrapped by validation errors.
var (
	ErrBadPattern = errors.New("invalid subject pattern")
	ErrBadSubject = errors.New("invalid subject")
)

// ValidateSubject checks a concrete subject: non-empty dot-separated tokens,
// no wildcards, no white space or NUL.
func ValidateSubject(s string) error {
	if s == "" {
		return fmt.Errorf("%w: empty", ErrBadSubject)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("%w: %q is not valid UTF-8", ErrBadSubject, s)
	}
	start := 0
	for i := 0; i <= len(s); i++ {
		if i < len(s) && s[i] != '.' {
			c := s[i]
			if c == '*' || c == '>' || c == 0 || c == ' ' || c == '\t' || c == '\n' || c == '\r' {
				return fmt.Errorf("%w: %q contains %q", ErrBadSubject, s, c)
			}
			continue
		}
		if i == start {
			return fmt.Errorf("%w: %q has an empty token", ErrBadSubject, s)
		}
		start = i + 1
	}
	for _, r := range s {
		if r > unicode.MaxASCII && unicode.IsSpace(r) {
			return fmt.Errorf("%w: %q contains white space", ErrBadSubject, s)
		}
	}
	return nil
}

// Pattern is a parsed NATS subject pattern: `*` matches exactly one
// non-empty token, a final `>` one or more trailing tokens.
type Pattern struct {
	raw    string
	tokens []string // literal tokens, or "*"; the final ">" is not kept
	tail   bool     // ends in ">"
}

// ParsePattern validates a pattern: no empty tokens, `>` only as the last
// token, and no partial wildcards (`ab*`).
func ParsePattern(s string) (Pattern, error) {
	if s == "" {
		return Pattern{}, fmt.Errorf("%w: empty", ErrBadPattern)
	}
	if !utf8.ValidString(s) {
		return Pattern{}, fmt.Errorf("%w: %q is not valid UTF-8", ErrBadPattern, s)
	}
	toks := strings.Split(s, ".")
	p := Pattern{raw: s}
	for i, tok := range toks {
		switch {
		case tok == "":
			return Pattern{}, fmt.Errorf("%w: %q has an empty token", ErrBadPattern, s)
		case tok == ">":
			if i != len(toks)-1 {
				return Pattern{}, fmt.Errorf("%w: %q: '>' must be the last token", ErrBadPattern, s)
			}
			p.tail = true
			continue
		case tok == "*":
		case strings.ContainsAny(tok, "*>"):
			return Pattern{}, fmt.Errorf("%w: %q: wildcards must be whole tokens (%q)", ErrBadPattern, s, tok)
		case strings.IndexFunc(tok, func(r rune) bool { return unicode.IsSpace(r) || r == 0 }) >= 0:
			return Pattern{}, fmt.Errorf("%w: %q: token %q contains white space", ErrBadPattern, s, tok)
		}
		p.tokens = append(p.tokens, tok)
	}
	return p, nil
}

// MustPattern is ParsePattern for patterns written in code.
func MustPattern(s string) Pattern {
	p, err := ParsePattern(s)
	if err != nil {
		panic(err)
	}
	return p
}

// String is the pattern as written.
func (p Pattern) String() string { return p.raw }

// Wildcards is how many captures a match yields: one per `*`, plus one for
// a final `>`.
func (p Pattern) Wildcards() int {
	n := 0
	for _, t := range p.tokens {
		if t == "*" {
			n++
		}
	}
	if p.tail {
		n++
	}
	return n
}

// Match reports whether subject matches. It does not allocate.
func (p Pattern) Match(subject string) bool {
	_, ok := p.match(subject, nil, false)
	return ok
}

// Captures matches subject and appends to dst what each wildcard took, in
// order (a final `>` takes the dotted rest).
func (p Pattern) Captures(subject string, dst []string) ([]string, bool) {
	return p.match(subject, dst, true)
}

func (p Pattern) match(subject string, dst []string, capture bool) ([]string, bool) {
	rest := subject
	for _, want := range p.tokens {
		if rest == "" && want != "" {
			return dst, false
		}
		tok := rest
		if i := strings.IndexByte(rest, '.'); i >= 0 {
			tok, rest = rest[:i], rest[i+1:]
			if rest == "" { // trailing dot: an empty token
				return dst, false
			}
		} else {
			rest = ""
		}
		if tok == "" {
			return dst, false
		}
		if want == "*" {
			if capture {
				dst = append(dst, tok)
			}
		} else if tok != want {
			return dst, false
		}
	}
	if p.tail {
		if rest == "" || rest[0] == '.' || rest[len(rest)-1] == '.' || strings.Contains(rest, "..") {
			return dst, false
		}
		if capture {
			dst = append(dst, rest)
		}
		return dst, true
	}
	return dst, rest == "" && len(subject) > 0
}

// Match reports whether subject matches pattern; an invalid pattern matches
// nothing.
func Match(pattern, subject string) bool {
	p, err := ParsePattern(pattern)
	return err == nil && p.Match(subject)
}

// Regexp translates a pattern into an anchored regular expression over Kafka
// topic names, so a consumer can subscribe the way DECNET's workers do.
func (p Pattern) Regexp() string {
	var b strings.Builder
	b.WriteString("^")
	for i, t := range p.tokens {
		if i > 0 {
			b.WriteString(`\.`)
		}
		if t == "*" {
			b.WriteString(`[^.]+`)
		} else {
			b.WriteString(regexp.QuoteMeta(t))
		}
	}
	if p.tail {
		if len(p.tokens) > 0 {
			b.WriteString(`\.`)
		}
		b.WriteString(`[^.]+(\.[^.]+)*`)
	}
	b.WriteString("$")
	return b.String()
}
