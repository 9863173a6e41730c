// Package gctune keeps a floor under the garbage collector's heap goal:
// after each collection it raises GOGC just enough that the heap may grow
// to a minimum size before the next one, and leaves GOGC as it was once
// GOGC's own goal is larger.
//
// Why: a collection's cost is mostly proportional to the live heap, and how
// often one runs to the allocation rate over the headroom (GOGC percent of
// the live heap). A stream processor that allocates fast over a small live
// heap (repeat sightings over a small cache) collects tens of times a second
// at GOGC=100 — a quarter of its CPU — for a heap far smaller than the
// memory it may use. A fixed GOGC=200 halves that cost but also lets a
// large live heap (a full cache, a storm's lookups in flight) grow to three
// times its size, raising the process's peak. A minimum goal gives the small
// heap room and leaves the peak where GOGC puts it whenever the live heap
// ever reaches half the minimum: the goal is max(GOGC's goal, the minimum).
// This is the "memory ballast" older Go services allocated, done with GOGC
// instead of a phantom allocation, beside GOMEMLIMIT, which still caps the
// goal (Go takes the lower of the two).
//
// It is not a memory limit and never sets GOGC below its base.
package gctune

import (
	"math"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"time"
)

// maxPercent bounds the GOGC the tuner sets. At start-up the live heap is a
// few MiB and the minimum goal would ask for thousands of percent; and a
// GOGC set for a small live heap is still in effect when the next
// collection ends, so that collection's goal is its live heap times this
// until the tuner reads the new live heap.
const maxPercent = 1000

// pollEvery is how often the tuner looks for a finished collection. A
// collection's goal is computed at its end with the GOGC then in effect; a
// live heap that grew since (a cache warming, a backlog) is corrected
// within this much time, not a cycle later. (A cleanup attached to a
// sentinel object, the usual after-GC hook, runs only once its span is
// swept, and a high goal slows sweeping: measured, the goal ran away to
// 868 MiB of RSS before the hook caught up.)
const pollEvery = 10 * time.Millisecond

// Tuner raises GOGC after each collection so that the heap goal is at least
// its minimum. Stop it with Stop.
type Tuner struct {
	minGoal uint64        // bytes
	base    int           // GOGC never set below this
	stop    chan struct{} // closed by Stop
	stopped sync.Once
	done    chan struct{} // closed when run has set GOGC back
	// adjusted, if set, hears each GOGC set (tests wait on it).
	adjusted func(percent int)
}

// Start keeps the heap goal at least minGoal bytes from the next collection
// on, never setting GOGC below base (the GOGC in effect). With collection
// off (base < 0) or no minimum it does nothing and returns nil.
func Start(minGoal uint64, base int) *Tuner {
	return start(minGoal, base, nil)
}

func start(minGoal uint64, base int, adjusted func(int)) *Tuner {
	if base < 0 || minGoal == 0 {
		return nil
	}
	t := &Tuner{minGoal: minGoal, base: base, adjusted: adjusted, stop: make(chan struct{}), done: make(chan struct{})}
	go t.run()
	return t
}

func (t *Tuner) run() {
	defer close(t.done)
	cycles := []metrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}}
	heap := []metrics.Sample{
		{Name: "/gc/heap/live:bytes"},
		// GOGC's share is of these too (Go 1.18's pacer).
		{Name: "/gc/scan/stack:bytes"},
		{Name: "/gc/scan/globals:bytes"},
	}
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	var seen uint64
	percent := t.base
	for {
		select {
		case <-t.stop:
			debug.SetGCPercent(t.base)
			return
		case <-tick.C:
		}
		metrics.Read(cycles)
		n := cycles[0].Value.Uint64()
		if n == seen {
			continue // no collection since the last look
		}
		seen = n
		metrics.Read(heap)
		live, roots := heap[0].Value.Uint64(), heap[1].Value.Uint64()+heap[2].Value.Uint64()
		if p := goalPercent(live, roots, t.minGoal, t.base); worthSetting(percent, p, t.base) {
			debug.SetGCPercent(p)
			percent = p
			if t.adjusted != nil {
				t.adjusted(p)
			}
		}
	}
}

// goalPercent is the GOGC whose heap goal for a live heap of live bytes (and
// roots bytes of stacks and globals) is at least minGoal, and never less
// than base: Go's goal is live + (live + roots) × GOGC/100.
func goalPercent(live, roots, minGoal uint64, base int) int {
	if live >= minGoal {
		return base
	}
	if live+roots == 0 {
		return max(base, maxPercent)
	}
	p := math.Ceil(100 * float64(minGoal-live) / float64(live+roots))
	return int(math.Max(float64(base), math.Min(maxPercent, p)))
}

// worthSetting says whether changing GOGC from old to p is: every set takes
// the heap lock and recomputes the pacer's goal, and a live heap that moves
// by a few percent between collections would otherwise set it after each
// one. Down to the base is always worth it.
func worthSetting(old, p, base int) bool {
	d := p - old
	return d != 0 && (p == base || d*16 > old || -d*16 > old)
}

// Stop ends the tuning and sets GOGC back to its base. Safe on nil and
// twice.
func (t *Tuner) Stop() {
	if t == nil {
		return
	}
	t.stopped.Do(func() { close(t.stop) })
	<-t.done
}
