// Package bytesize reads the human byte sizes config fields take ("50MiB",
// "1MB", "512KiB", "1048576"), the way Redpanda Connect's users write them:
// one reading for every size field, and one pattern for their lint rules.
package bytesize

import (
	"fmt"
	"strconv"
	"strings"
)

// units are the suffixes accepted, binary and decimal.
var units = []struct {
	suffix string
	mult   int64
}{
	{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30},
	{"kb", 1000}, {"mb", 1000 * 1000}, {"gb", 1000 * 1000 * 1000},
	{"k", 1000}, {"m", 1000 * 1000}, {"g", 1000 * 1000 * 1000},
	{"b", 1},
}

// Pattern is what Parse accepts as text (RE2): a lint rule, which cannot
// parse units, checks the shape with it and leaves the range to the
// constructor.
const Pattern = `(?i)^\s*[0-9]+(\.[0-9]+)?\s*(b|k|m|g|kb|mb|gb|kib|mib|gib)?\s*$`

// Parse reads a human byte size. A bare number is bytes.
func Parse(s string) (int64, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseFloat(t, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("invalid byte size %q", s)
	}
	v := n * float64(mult)
	if v > 1<<40 {
		return 0, fmt.Errorf("byte size %q is too large", s)
	}
	return int64(v), nil
}
