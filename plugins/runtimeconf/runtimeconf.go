// Package runtimeconf adds a top-level `runtime` section to decnet-stream's
// config: the Go garbage collector's settings (GOGC, GOMEMLIMIT and a
// minimum heap goal, internal/gctune), set by the config a
// pipeline ships with instead of by whoever launches the process.
//
// Why a config section: the pipeline's CPU per event is a quarter garbage
// collection at Go's default, and the right trade of memory for CPU depends
// on the pipeline (what its cache holds), so it belongs with the pipeline's
// other settings, linted and reviewed with them. gc_percent and
// memory_limit have Go's own syntax, so `${GOGC:}` and `${GOMEMLIMIT:}` in
// a config keep an operator's environment variables meaning what Go
// documents.
//
// It is not a resource limit: the memory limit is a soft goal the collector
// works harder to keep (see runtime/debug.SetMemoryLimit).
package runtimeconf

import (
	"fmt"
	"math"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"

	"github.com/dustin/go-humanize"
	"github.com/redpanda-data/benthos/v4/public/service"

	"github.com/decnet/decnet-stream/internal/bytesize"
	"github.com/decnet/decnet-stream/internal/gctune"
)

const (
	// section is the top-level field's name.
	section          = "runtime"
	fieldGCPercent   = "gc_percent"
	fieldMemoryLimit = "memory_limit"
	fieldMinHeapGoal = "gc_min_heap_goal"
)

// field is the `runtime` section's spec.
func field() *service.ConfigField {
	return service.NewObjectField(section,
		service.NewStringField(fieldGCPercent).
			Description("The garbage collector's target, as `GOGC`: heap growth over the live heap, in percent, before a collection; `off` turns collection off (set `memory_limit` then). Empty leaves Go's own (the `GOGC` environment variable, else 100). A higher value trades memory for CPU.").
			Examples("200", "${GOGC:200}").
			LintRule(`root = if !this.string().re_match("^([0-9]+|off|)$") { [ "gc_percent must be a non-negative integer, off or empty" ] }`).
			Default(""),
		service.NewStringField(fieldMemoryLimit).
			Description("A soft limit on the Go runtime's memory, as `GOMEMLIMIT`: a size (`512MiB`, `2GiB`, `1073741824`) the collector works harder to stay under as the heap nears it. Empty or `off` leaves Go's own (the `GOMEMLIMIT` environment variable, else none). Set it below the host's or container's memory, above what the pipeline keeps live (its cache).").
			Examples("1GiB", "${GOMEMLIMIT:}").
			LintRule(sizeLint(fieldMemoryLimit)).
			Default(""),
		service.NewStringField(fieldMinHeapGoal).
			Description("A minimum heap goal: after each collection GOGC is raised (never below `gc_percent`) so that the heap may grow to at least this size before the next one; once `gc_percent`'s own goal is larger, it is left alone. A small live heap at a high allocation rate (repeat sightings over a small cache) then collects a few times less often, and the process's peak, set by its largest live heap (a full cache, a storm's lookups in flight), is where `gc_percent` puts it whenever that live heap reaches half this size. The older Go services' memory ballast, without the allocation. Empty or `off`: none; nothing either with `gc_percent: off`. `memory_limit` still caps the goal.").
			Examples("160MiB").
			LintRule(sizeLint(fieldMinHeapGoal)).
			Default(""),
	).Description("settings of the Go runtime decnet-stream runs on, applied before the pipeline starts.").
		Optional()
}

// sizeLint is the lint rule of a size field: empty, off, or a size as every
// size field reads it (internal/bytesize); the range is the parser's.
func sizeLint(name string) string {
	return `root = if !["", "off"].contains(this.string().trim()) && !this.string().re_match(` + strconv.Quote(bytesize.Pattern) + `) { [ "` + name + ` must be a size such as 512MiB or 2GiB, off or empty" ] }`
}

// Schema is Benthos' full config schema with the `runtime` section added:
// the schema `run`, `lint`, `test` and stream builders use, so a config with
// the section lints and runs everywhere.
func Schema(version, dateBuilt string) *service.ConfigSchema {
	return service.GlobalEnvironment().FullConfigSchema(version, dateBuilt).Field(field())
}

// settings are a parsed `runtime` section. A nil field leaves Go's own
// setting as it is.
type settings struct {
	GCPercent   *int   // -1 is off
	MemoryLimit *int64 // math.MaxInt64 is none
	MinHeapGoal uint64 // bytes; 0 is none
}

// parse reads the `runtime` section of a parsed main config (absent: no
// settings).
func parse(conf *service.ParsedConfig) (settings, error) {
	var s settings
	if !conf.Contains(section) {
		return s, nil
	}
	rc := conf.Namespace(section)
	gc, err := rc.FieldString(fieldGCPercent)
	if err != nil {
		return s, err
	}
	if s.GCPercent, err = parseGCPercent(gc); err != nil {
		return s, fmt.Errorf("%s.%s: %w", section, fieldGCPercent, err)
	}
	limit, err := rc.FieldString(fieldMemoryLimit)
	if err != nil {
		return s, err
	}
	if s.MemoryLimit, err = parseMemoryLimit(limit); err != nil {
		return s, fmt.Errorf("%s.%s: %w", section, fieldMemoryLimit, err)
	}
	minGoal, err := rc.FieldString(fieldMinHeapGoal)
	if err != nil {
		return s, err
	}
	if size, err := parseSize(minGoal); err != nil {
		return s, fmt.Errorf("%s.%s: %w", section, fieldMinHeapGoal, err)
	} else if size != nil {
		s.MinHeapGoal = uint64(*size)
	}
	return s, nil
}

func parseGCPercent(v string) (*int, error) {
	switch v = strings.TrimSpace(v); v {
	case "":
		return nil, nil
	case "off":
		off := -1
		return &off, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return nil, fmt.Errorf("%q: want a non-negative integer, off or empty", v)
	}
	return &n, nil
}

func parseMemoryLimit(v string) (*int64, error) {
	if strings.TrimSpace(v) == "off" {
		none := int64(math.MaxInt64)
		return &none, nil
	}
	return parseSize(v)
}

// parseSize reads a size ("512MiB", "2GiB", "1073741824"); empty or off is
// none (nil).
func parseSize(v string) (*int64, error) {
	switch v = strings.TrimSpace(v); v {
	case "", "off":
		return nil, nil
	}
	n, err := bytesize.Parse(v)
	if err != nil || n == 0 {
		return nil, fmt.Errorf("%q: want a size such as 512MiB or 2GiB, off or empty", v)
	}
	return &n, nil
}

// applied is what apply left in effect: Go's own settings where the
// section set none.
type applied struct {
	GCPercent   int
	MemoryLimit int64 // math.MaxInt64 is none
	MinHeapGoal uint64
	tuner       *gctune.Tuner
}

// apply sets what s holds, starting the minimum heap goal's tuner when there
// is one: it runs for the process's life (tests stop it with tuner.Stop).
func (s settings) apply() applied {
	if s.GCPercent != nil {
		debug.SetGCPercent(*s.GCPercent)
	}
	if s.MemoryLimit != nil {
		debug.SetMemoryLimit(*s.MemoryLimit)
	}
	now := []metrics.Sample{{Name: "/gc/gogc:percent"}, {Name: "/gc/gomemlimit:bytes"}}
	metrics.Read(now)
	gc := int(now[0].Value.Uint64()) // off, -1, reads as its two's complement
	return applied{GCPercent: gc, MemoryLimit: int64(now[1].Value.Uint64()), MinHeapGoal: s.MinHeapGoal,
		tuner: gctune.Start(s.MinHeapGoal, gc)}
}

// String is how the start-up log shows the settings in effect.
func (a applied) String() string {
	gc, limit, minGoal := strconv.Itoa(a.GCPercent), "none", "none"
	if a.GCPercent < 0 {
		gc = "off"
	}
	if a.MemoryLimit != math.MaxInt64 {
		limit = humanize.IBytes(uint64(a.MemoryLimit))
	}
	if a.tuner != nil {
		minGoal = humanize.IBytes(a.MinHeapGoal)
	}
	return fmt.Sprintf("gc_percent %s, memory_limit %s, gc_min_heap_goal %s", gc, limit, minGoal)
}

// OnConfigParse is the CLI hook that applies the section of the main
// config before any stream starts, and logs what is in effect.
func OnConfigParse(conf *service.ParsedConfig) error {
	if conf == nil { // a manager without a main config
		return nil
	}
	s, err := parse(conf)
	if err != nil {
		return err
	}
	conf.Resources().Logger().Infof("Go runtime: %s", s.apply())
	return nil
}
