package chschema

import (
	"strings"
	"testing"
)

func TestDDLFollowsTheServerVersion(t *testing.T) {
	for _, tc := range []struct {
		version      string
		lowCard, ttl bool
	}{
		{"18.16.1", false, false},
		{"19.3.4", true, false},
		{"19.6.2.11", true, true},
		{"24.3.2.23", true, true},
	} {
		v, err := ParseVersion(tc.version)
		if err != nil {
			t.Fatal(err)
		}
		ddl, err := AttackerIntelDDL("attacker_intel", v)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(ddl, "LowCardinality") != tc.lowCard || strings.Contains(ddl, "TTL expires_at") != tc.ttl {
			t.Errorf("%s: LowCardinality %v TTL %v in\n%s", tc.version, strings.Contains(ddl, "LowCardinality"), strings.Contains(ddl, "TTL"), ddl)
		}
		for _, c := range AttackerIntelColumns {
			if !strings.Contains(ddl, "\n    "+c+" ") {
				t.Errorf("%s: column %s missing from the DDL", tc.version, c)
			}
		}
	}
	if _, err := ParseVersion("banana"); err == nil {
		t.Error("bad version accepted")
	}
	if _, err := AttackerIntelDDL("x; DROP TABLE y", Version{18, 16}); err == nil {
		t.Error("an injected table name was accepted")
	}
}
