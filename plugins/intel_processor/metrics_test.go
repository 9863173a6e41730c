package intel_processor

import (
	"fmt"
	"sync"
	"testing"
)

// A gauge series is set when its value changes and only then, each series
// on its own, so the exported value is always the last one given.
func TestGaugeCacheSetsOnlyChanges(t *testing.T) {
	var c gaugeCache
	var sets []int64
	set := func(k gaugeKey, v int64) { c.setIfChanged(k, v, func() { sets = append(sets, v) }) }
	gn, ab := gaugeKey{label: "greynoise", key: "k1"}, gaugeKey{label: "abuseipdb", key: "k1"}
	set(gn, 0) // a first value is always set, zero too: the series must exist
	set(gn, 0)
	set(gn, 5)
	set(ab, 5) // another series holds its own value
	set(gn, 5)
	set(gn, 4)
	set(gaugeKey{label: "greynoise", key: "k2"}, 4) // another key: another series
	want := []int64{0, 5, 5, 4, 4}
	if len(sets) != len(want) {
		t.Fatalf("sets %v, want %v", sets, want)
	}
	for i := range want {
		if sets[i] != want[i] {
			t.Fatalf("sets %v, want %v", sets, want)
		}
	}
}

// Counter increments held between flushes all reach their series, exactly
// once, however adders and flushes interleave.
func TestTallyLosesAndRepeatsNothing(t *testing.T) {
	var tl tally
	got := map[tallyKey]int64{}
	var mu sync.Mutex
	sink := func(k tallyKey, n int64) { mu.Lock(); got[k] += n; mu.Unlock() }
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 1000 {
				tl.add(nil, 1, fmt.Sprintf("p%d", g%3), []string{"ok", "rate_limited"}[i%2])
				if i%97 == 0 {
					tl.flush(sink)
				}
			}
		}()
	}
	wg.Wait()
	tl.flush(sink)
	var total int64
	for k, n := range got {
		total += n
		if k.l2 != "ok" && k.l2 != "rate_limited" {
			t.Errorf("series %+v", k)
		}
	}
	if total != 8000 || got[tallyKey{nil, "p0", "ok"}] != 3*500 {
		t.Errorf("flushed %d in all, %d to p0/ok; want 8000 and 1500 (%v)", total, got[tallyKey{nil, "p0", "ok"}], got)
	}
}
