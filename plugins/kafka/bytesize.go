package kafka

import (
	"fmt"
	"strconv"
	"strings"
)

// byteUnits are the suffixes accepted in size fields such as fetch_max_bytes,
// matching what Redpanda Connect's users write ("50MiB", "1MB", "512KiB").
var byteUnits = []struct {
	suffix string
	mult   int64
}{
	{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30},
	{"kb", 1000}, {"mb", 1000 * 1000}, {"gb", 1000 * 1000 * 1000},
	{"k", 1000}, {"m", 1000 * 1000}, {"g", 1000 * 1000 * 1000},
	{"b", 1},
}

// parseBytes reads a human byte size. A bare number is bytes.
func parseBytes(s string) (int64, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	mult := int64(1)
	for _, u := range byteUnits {
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

// byteSizeLint is the lint rule of a string size field: Bloblang cannot parse
// units, so it checks the shape and leaves the range to the constructor.
func byteSizeLint(field string) string {
	return `root = if !this.string().re_match("(?i)^\\s*[0-9]+(\\.[0-9]+)?\\s*(b|k|m|g|kb|mb|gb|kib|mib|gib)?\\s*$") { [ "` + field + ` must be a byte size such as 1MiB, 50MB or 1048576, got " + this.string() ] }`
}

// enumLint names the field in the lint error of an enum field, which Benthos
// alone reports only as "not a valid option".
func enumLint(field string, options ...string) string {
	quoted := make([]string, len(options))
	for i, o := range options {
		quoted[i] = strconv.Quote(o)
	}
	list := strings.Join(quoted, ", ")
	return `root = if ![` + list + `].contains(this) { [ "` + field + ` must be one of ` + strings.ReplaceAll(list, `"`, ``) + `, got " + this.string() ] }`
}
