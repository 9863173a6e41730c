package runtimeconf

import (
	"math"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/redpanda-data/benthos/v4/public/service"
)

func parseYAML(t *testing.T, yaml string) (settings, error) {
	t.Helper()
	conf, err := service.NewConfigSpec().Field(field()).ParseYAML(yaml, nil)
	if err != nil {
		t.Fatal(err)
	}
	return parse(conf)
}

func TestParseReadsGosOwnSyntax(t *testing.T) {
	s, err := parseYAML(t, "{}")
	if err != nil || s.GCPercent != nil || s.MemoryLimit != nil || s.MinHeapGoal != 0 {
		t.Fatalf("no section: %+v, %v; want no settings", s, err)
	}
	s, err = parseYAML(t, "runtime: { gc_percent: '', memory_limit: '', gc_min_heap_goal: '' }")
	if err != nil || s.GCPercent != nil || s.MemoryLimit != nil || s.MinHeapGoal != 0 {
		t.Fatalf("empty fields (an unset ${GOGC:}): %+v, %v; want Go's own", s, err)
	}
	s, err = parseYAML(t, "runtime: { gc_percent: 200, memory_limit: 512MiB, gc_min_heap_goal: 128MiB }")
	if err != nil {
		t.Fatal(err)
	}
	if *s.GCPercent != 200 || *s.MemoryLimit != 512<<20 || s.MinHeapGoal != 128<<20 {
		t.Fatalf("got %d, %d, %d", *s.GCPercent, *s.MemoryLimit, s.MinHeapGoal)
	}
	s, err = parseYAML(t, "runtime: { gc_percent: 'off', memory_limit: 'off', gc_min_heap_goal: 'off' }")
	if err != nil {
		t.Fatal(err)
	}
	if *s.GCPercent != -1 || *s.MemoryLimit != math.MaxInt64 || s.MinHeapGoal != 0 {
		t.Fatalf("off: got %d, %d, %d", *s.GCPercent, *s.MemoryLimit, s.MinHeapGoal)
	}
}

func TestParseNamesTheBadField(t *testing.T) {
	for yaml, field := range map[string]string{
		"runtime: { gc_percent: lots }":       "runtime.gc_percent",
		"runtime: { gc_percent: -5 }":         "runtime.gc_percent",
		"runtime: { memory_limit: 12 bytes }": "runtime.memory_limit",
		"runtime: { memory_limit: 0 }":        "runtime.memory_limit",
		"runtime: { gc_min_heap_goal: big }":  "runtime.gc_min_heap_goal",
	} {
		if _, err := parseYAML(t, yaml); err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("%s: error %v, want one naming %s", yaml, err, field)
		}
	}
}

// apply sets Go's collector as the section says and reports what is in
// effect; stopping the tuner leaves the section's GOGC.
func TestApplySetsTheCollector(t *testing.T) {
	gc, limit := debug.SetGCPercent(100), debug.SetMemoryLimit(math.MaxInt64)
	defer func() { debug.SetGCPercent(gc); debug.SetMemoryLimit(limit) }()

	p, l := 150, int64(3<<30)
	a := settings{GCPercent: &p, MemoryLimit: &l, MinHeapGoal: 64 << 20}.apply()
	defer a.tuner.Stop()
	if a.GCPercent != 150 || a.MemoryLimit != 3<<30 || a.tuner == nil {
		t.Fatalf("applied %+v", a)
	}
	if got := debug.SetMemoryLimit(-1); got != 3<<30 {
		t.Fatalf("memory limit %d in effect, want 3 GiB", got)
	}
	if want := "gc_percent 150, memory_limit 3.0 GiB, gc_min_heap_goal 64 MiB"; a.String() != want {
		t.Fatalf("described as %q, want %q", a, want)
	}
	a.tuner.Stop()
	if got := debug.SetGCPercent(100); got != 150 {
		t.Fatalf("GOGC %d after stop, want the section's 150", got)
	}

	off := -1
	a = settings{GCPercent: &off, MinHeapGoal: 64 << 20}.apply()
	if a.GCPercent != -1 || a.tuner != nil || !strings.HasPrefix(a.String(), "gc_percent off,") {
		t.Fatalf("GC off: applied %+v (%s); want no floor with collection off", a, a)
	}
}
