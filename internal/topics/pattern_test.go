package topics

import (
	"errors"
	"regexp"
	"slices"
	"testing"
)

func TestMatch(t *testing.T) {
	for _, tc := range []struct {
		pattern, subject string
		want             bool
	}{
		{"attacker.observed", "attacker.observed", true},
		{"attacker.observed", "attacker.scored", false},
		{"attacker.observed", "attacker.observed.x", false},
		{"attacker.*", "attacker.observed", true},
		{"attacker.*", "attacker.session.started", false},
		{"attacker.*", "attacker", false},
		{"attacker.>", "attacker.session.started", true},
		{"attacker.>", "attacker.observed", true},
		{"attacker.>", "attacker", false},
		{"topology.>", "topology.a.status", true},
		{"topology.>", "topology", false},
		{">", "a", true},
		{">", "a.b.c", true},
		{"*", "a", true},
		{"*", "a.b", false},
		{"*.*", "a.b", true},
		{"decky.*.traffic", "decky.d1.traffic", true},
		{"decky.*.traffic", "decky..traffic", false},
		{"decky.*.*", "decky.d1.", false},
		{"a.>", "a.b.", false},
		{"a.>", "a..b", false},
		{"a.>", "a.", false},
		{"*", "", false},
		{"a", "", false},
		{"a.b", "a", false},
		{"system.*.health", "system.intel.health", true},
	} {
		p, err := ParsePattern(tc.pattern)
		if err != nil {
			t.Fatalf("%q: %v", tc.pattern, err)
		}
		if got := p.Match(tc.subject); got != tc.want {
			t.Errorf("%q matches %q = %v, want %v", tc.pattern, tc.subject, got, tc.want)
		}
		if got := Match(tc.pattern, tc.subject); got != tc.want {
			t.Errorf("Match(%q, %q) = %v, want %v", tc.pattern, tc.subject, got, tc.want)
		}
		re := regexp.MustCompile(p.Regexp())
		if got := re.MatchString(tc.subject); got != tc.want && ValidateSubject(tc.subject) == nil {
			t.Errorf("regexp %s of %q on %q = %v, want %v", p.Regexp(), tc.pattern, tc.subject, got, tc.want)
		}
	}
}

func TestCaptures(t *testing.T) {
	for _, tc := range []struct {
		pattern, subject string
		want             []string
	}{
		{"decky.*.*", "decky.d1.traffic", []string{"d1", "traffic"}},
		{"topology.*.mutation.*", "topology.t9.mutation.applied", []string{"t9", "applied"}},
		{"attacker.>", "attacker.session.started", []string{"session.started"}},
		{"system.*.health", "system.intel.health", []string{"intel"}},
		{"a.b", "a.b", nil},
	} {
		p := MustPattern(tc.pattern)
		got, ok := p.Captures(tc.subject, nil)
		if !ok || !slices.Equal(got, tc.want) {
			t.Errorf("%q captures of %q = %v, %v; want %v", tc.pattern, tc.subject, got, ok, tc.want)
		}
		if p.Wildcards() != len(tc.want) {
			t.Errorf("%q: Wildcards() = %d, want %d", tc.pattern, p.Wildcards(), len(tc.want))
		}
	}
}

func TestParsePatternRejects(t *testing.T) {
	for _, bad := range []string{"", ".", "a.", ".a", "a..b", ">.a", "a.>.b", "ab*", "a.*b", "a.>b", "a.b>", "a b", "a.\tb"} {
		if _, err := ParsePattern(bad); !errors.Is(err, ErrBadPattern) {
			t.Errorf("ParsePattern(%q) = %v, want ErrBadPattern", bad, err)
		}
		if Match(bad, "a.b") {
			t.Errorf("invalid pattern %q matched", bad)
		}
	}
}

func TestValidateSubject(t *testing.T) {
	for _, good := range []string{"a", "attacker.observed", "decky.decky-01.traffic", "system.webhook.subscriptions_changed"} {
		if err := ValidateSubject(good); err != nil {
			t.Errorf("%q: %v", good, err)
		}
	}
	for _, bad := range []string{"", ".", "a.", ".a", "a..b", "a.*", "a.>", "a b", "a\x00b", "decky..state", "a\u2003b"} {
		if err := ValidateSubject(bad); !errors.Is(err, ErrBadSubject) {
			t.Errorf("ValidateSubject(%q) = %v, want ErrBadSubject", bad, err)
		}
	}
}

func TestMatchDoesNotAllocate(t *testing.T) {
	p := MustPattern("decky.*.>")
	if n := testing.AllocsPerRun(100, func() { p.Match("decky.d1.traffic.x") }); n != 0 {
		t.Fatalf("Match allocates %v times", n)
	}
}
