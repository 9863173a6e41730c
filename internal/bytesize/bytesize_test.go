package bytesize

import (
	"regexp"
	"testing"
)

func TestParse(t *testing.T) {
	for in, want := range map[string]int64{
		"1048576": 1 << 20, "1MiB": 1 << 20, "50MiB": 50 << 20, "1MB": 1_000_000,
		"512KiB": 512 << 10, "1.5kb": 1500, " 2 gib ": 2 << 30, "10B": 10,
	} {
		got, err := Parse(in)
		if err != nil || got != want {
			t.Errorf("Parse(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "lots", "-1MB", "1TB", "MB", "1.2.3MB"} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
}

// The lint rules' pattern accepts what Parse reads, and not what it refuses
// for its shape.
func TestPatternIsWhatParseReads(t *testing.T) {
	re := regexp.MustCompile(Pattern)
	for _, in := range []string{"1048576", "1MiB", "1.5kb", " 2 gib ", "10B"} {
		if _, err := Parse(in); err != nil || !re.MatchString(in) {
			t.Errorf("%q: Parse %v, pattern matches %v", in, err, re.MatchString(in))
		}
	}
	for _, bad := range []string{"", "lots", "-1MB", "1TB", "MB", "1.2.3MB"} {
		if re.MatchString(bad) {
			t.Errorf("pattern matches %q", bad)
		}
	}
}
