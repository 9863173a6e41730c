package kafka

import "testing"

func TestParseBytes(t *testing.T) {
	for in, want := range map[string]int64{
		"1048576": 1 << 20, "1MiB": 1 << 20, "50MiB": 50 << 20, "1MB": 1_000_000,
		"512KiB": 512 << 10, "1.5kb": 1500, " 2 gib ": 2 << 30, "10B": 10,
	} {
		got, err := parseBytes(in)
		if err != nil || got != want {
			t.Errorf("parseBytes(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "lots", "-1MB", "1TB", "MB", "1.2.3MB"} {
		if _, err := parseBytes(bad); err == nil {
			t.Errorf("parseBytes(%q) accepted", bad)
		}
	}
}
