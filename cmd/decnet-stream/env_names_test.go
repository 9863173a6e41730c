package main

import (
	"os"
	"strings"
	"testing"
)

// A deployment that still sets the old key names keeps its keys, is told
// which name to set, and the key never appears in what it is told.
func TestOldKeyNamesAreAdoptedAndNeverEchoed(t *testing.T) {
	t.Setenv("DECNET_GREYNOISE_API_KEY", "")
	t.Setenv("GREYNOISE_API_KEY", "sekrit-gn-old")
	t.Setenv("DECNET_ABUSEIPDB_API_KEY", "new-wins")
	t.Setenv("ABUSEIPDB_API_KEY", "sekrit-abuse-old")
	var w strings.Builder
	adoptOldKeyNames(&w)
	if got := os.Getenv("DECNET_GREYNOISE_API_KEY"); got != "sekrit-gn-old" {
		t.Errorf("DECNET_GREYNOISE_API_KEY = %q", got)
	}
	if got := os.Getenv("DECNET_ABUSEIPDB_API_KEY"); got != "new-wins" {
		t.Errorf("an explicit DECNET_ name was overridden: %q", got)
	}
	if !strings.Contains(w.String(), "GREYNOISE_API_KEY is deprecated, set DECNET_GREYNOISE_API_KEY") ||
		strings.Contains(w.String(), "ABUSEIPDB") || strings.Contains(w.String(), "sekrit") {
		t.Errorf("warnings: %q", w.String())
	}
}
