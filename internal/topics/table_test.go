package topics

import "testing"

// The table picks what a plain first-match scan picks, on every subject.
func TestTableAgreesWithScan(t *testing.T) {
	var ps []Pattern
	for _, s := range []string{"attacker.observed", "*.observed", "attacker.>", "decky.*.*", ">", "system.*.health", "*"} {
		ps = append(ps, MustPattern(s))
	}
	table := NewTable(ps)
	for _, subj := range []string{"attacker.observed", "attacker.scored", "x.observed", "decky.d.t", "system.a.health",
		"system.a.b", "solo", "a.b.c.d", "attacker"} {
		want := -1
		for i, p := range ps {
			if p.Match(subj) {
				want = i
				break
			}
		}
		got, ok := table.First(subj)
		if got != want || ok != (want >= 0) {
			t.Errorf("%s: table picks %d, scan %d", subj, got, want)
		}
		gi, caps, _ := table.FirstCaptures(subj, nil)
		if gi != want {
			t.Errorf("%s: FirstCaptures picks %d (%v)", subj, gi, caps)
		}
	}
}
