package topics

import "strings"

// Table finds the first of an ordered list of patterns that matches a
// subject. It indexes the patterns by their first token, so a subject is
// only tried against the patterns that could match it: routing cost stays
// flat as the table grows.
type Table struct {
	byFirst  map[string][]int // literal first token → candidate indexes, in order
	wildcard []int            // patterns starting with * or >, in order
	patterns []Pattern
}

// NewTable indexes patterns; their order is their precedence.
func NewTable(patterns []Pattern) *Table {
	t := &Table{byFirst: map[string][]int{}, patterns: patterns}
	for i, p := range patterns {
		if len(p.tokens) == 0 || p.tokens[0] == "*" {
			t.wildcard = append(t.wildcard, i)
		}
	}
	for _, p := range patterns {
		if len(p.tokens) == 0 || p.tokens[0] == "*" {
			continue
		}
		first := p.tokens[0]
		if _, ok := t.byFirst[first]; !ok {
			// Merge, in precedence order, this token's patterns with the
			// wildcard-led ones.
			var merged []int
			for j, q := range patterns {
				if len(q.tokens) == 0 || q.tokens[0] == "*" || q.tokens[0] == first {
					merged = append(merged, j)
				}
			}
			t.byFirst[first] = merged
		}
	}
	return t
}

func (t *Table) candidates(subject string) []int {
	first := subject
	if i := strings.IndexByte(subject, '.'); i >= 0 {
		first = subject[:i]
	}
	if c, ok := t.byFirst[first]; ok {
		return c
	}
	return t.wildcard
}

// First returns the index of the first pattern matching subject.
func (t *Table) First(subject string) (int, bool) {
	for _, i := range t.candidates(subject) {
		if t.patterns[i].Match(subject) {
			return i, true
		}
	}
	return -1, false
}

// FirstCaptures is First that also appends the winning pattern's captures
// to dst.
func (t *Table) FirstCaptures(subject string, dst []string) (int, []string, bool) {
	for _, i := range t.candidates(subject) {
		if c, ok := t.patterns[i].Captures(subject, dst); ok {
			return i, c, true
		}
	}
	return -1, dst, false
}
