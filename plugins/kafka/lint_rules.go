package kafka

import (
	"strconv"
	"strings"

	"github.com/decnet/decnet-stream/internal/bytesize"
)

// byteSizeLint is the lint rule of a string size field (bytesize.Pattern).
func byteSizeLint(field string) string {
	return `root = if !this.string().re_match(` + strconv.Quote(bytesize.Pattern) + `) { [ "` + field + ` must be a byte size such as 1MiB, 50MB or 1048576, got " + this.string() ] }`
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
