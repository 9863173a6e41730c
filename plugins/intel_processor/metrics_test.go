package intel_processor

import "testing"

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
