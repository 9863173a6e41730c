package gctune

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"
)

func TestPercentGivesTheMinimumGoalAndNeverLessThanTheBase(t *testing.T) {
	const mib = 1 << 20
	for _, c := range []struct {
		live, roots, min uint64
		base, want       int
	}{
		{live: 64 * mib, min: 192 * mib, base: 100, want: 200}, // a small heap: the minimum's room
		{live: 64 * mib, roots: 64 * mib, min: 192 * mib, base: 100, want: 100},
		{live: 80 * mib, min: 192 * mib, base: 100, want: 140},
		{live: 96 * mib, min: 192 * mib, base: 100, want: 100},  // GOGC's goal is the minimum
		{live: 150 * mib, min: 192 * mib, base: 100, want: 100}, // and larger: the storm's peak is GOGC's
		{live: 1024 * mib, min: 192 * mib, base: 50, want: 50},
		{live: 1, min: 192 * mib, base: 100, want: maxPercent}, // start-up: bounded
		{live: 0, min: 192 * mib, base: 100, want: maxPercent},
	} {
		if got := goalPercent(c.live, c.roots, c.min, c.base); got != c.want {
			t.Errorf("goalPercent(%d MiB live, %d MiB roots, %d MiB minimum, base %d) = %d, want %d",
				c.live/mib, c.roots/mib, c.min/mib, c.base, got, c.want)
		}
	}
}

func TestStartDoesNothingWithoutAMinimumOrWithCollectionOff(t *testing.T) {
	if Start(0, 100) != nil || Start(64<<20, -1) != nil {
		t.Fatal("a tuner started with no minimum or with GC off")
	}
	var none *Tuner
	none.Stop() // safe on nil
}

// After a collection of a small heap the heap goal is the minimum; stopping
// sets GOGC back to its base.
func TestTheHeapGoalAfterACollectionIsTheMinimum(t *testing.T) {
	// A live heap of at least 8 MiB, so the minimum is within maxPercent.
	const minGoal = 32 << 20
	ballast := make([]byte, 8<<20)
	defer runtime.KeepAlive(ballast)
	base := debug.SetGCPercent(100)
	defer debug.SetGCPercent(base)

	set := make(chan int, 16)
	tu := start(minGoal, 100, func(p int) { set <- p })
	defer tu.Stop()
	runtime.GC()
	var p int
	select {
	case p = <-set:
	case <-time.After(30 * time.Second): // a guard against a hang, not a wait
		t.Fatal("no GOGC set after a collection")
	}
	if p <= 100 || p >= maxPercent {
		t.Fatalf("GOGC %d after collecting a small heap, want above the base and under the bound", p)
	}
	s := []metrics.Sample{{Name: "/gc/heap/goal:bytes"}}
	metrics.Read(s)
	if goal := s[0].Value.Uint64(); goal < minGoal*15/16 {
		t.Errorf("heap goal %d MiB, under the %d MiB minimum", goal>>20, minGoal>>20)
	}
	tu.Stop()
	tu.Stop() // twice is safe
	if got := debug.SetGCPercent(100); got != 100 {
		t.Errorf("GOGC %d after Stop, want the base 100", got)
	}
}

// A live heap that grew to the minimum (a cache warming) gets the base
// GOGC back after the collection that sees it: its goal is GOGC's, not the
// raised GOGC times its new size.
func TestAGrownLiveHeapGetsTheBaseBack(t *testing.T) {
	const minGoal = 32 << 20
	small := make([]byte, 8<<20)
	base := debug.SetGCPercent(100)
	defer debug.SetGCPercent(base)

	set := make(chan int, 16)
	tu := start(minGoal, 100, func(p int) { set <- p })
	defer tu.Stop()
	next := func() int {
		select {
		case p := <-set:
			return p
		case <-time.After(30 * time.Second): // a guard against a hang, not a wait
			t.Fatal("no GOGC set after a collection")
			return 0
		}
	}
	runtime.GC()
	if p := next(); p <= 100 {
		t.Fatalf("GOGC %d for a small heap", p)
	}
	grown := make([]byte, 40<<20) // live now past the minimum
	runtime.GC()
	if p := next(); p != 100 {
		t.Fatalf("GOGC %d once the live heap passed the minimum, want the base 100", p)
	}
	runtime.KeepAlive(small)
	runtime.KeepAlive(grown)
}
