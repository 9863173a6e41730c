package enrich

import (
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
)

// A sharded cache holds exactly max_entries rows, whichever shards they
// fall in: sized to its attackers, it evicts none of them; past the bound
// it evicts one row per new row, concurrently too.
func TestShardedCacheHoldsItsWholeBound(t *testing.T) {
	const max = shardedFrom + 3
	var evicted atomic.Int64
	l := newLRUShards(max, func(netip.Addr, *entry) { evicted.Add(1) })
	if len(l.s) != numShards {
		t.Fatalf("%d shards", len(l.s))
	}
	ip := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{45, byte(i >> 16), byte(i >> 8), byte(i)}) }
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < max; i += 8 {
				l.Add(ip(i), &entry{})
				l.Add(ip(i), &entry{}) // a replacement is not a new row
			}
		}()
	}
	wg.Wait()
	held := 0
	for _, s := range l.s {
		held += s.lru.Len()
	}
	if l.Len() != max || held != max || evicted.Load() != 0 {
		t.Fatalf("sized to its %d rows: Len %d, held %d, %d evicted", max, l.Len(), held, evicted.Load())
	}
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := max + w; i < max+5000; i += 8 {
				l.Add(ip(i), &entry{})
			}
		}()
	}
	wg.Wait()
	held = 0
	for _, s := range l.s {
		held += s.lru.Len()
	}
	if l.Len() != max || held != max || evicted.Load() != 5000 {
		t.Fatalf("5,000 rows past the bound: Len %d, held %d, %d evicted", l.Len(), held, evicted.Load())
	}
	// The newest rows are kept: eviction takes each shard's oldest.
	for i := max + 4990; i < max+5000; i++ {
		if _, ok := l.Peek(ip(i)); !ok {
			t.Fatalf("row %d, just added, was evicted", i)
		}
	}
}

// Past its bound the cache evicts the row used longest ago, to the second: a
// hit moves its row to the front of the LRU once a second, not on every hit
// (on the hot path that list write was half of what a hit cost). A row hit
// in a later second than another was last used outlives it; rows used within
// one second leave in the order they were first used in it.
func TestEvictionKeepsTheRowsUsedLatestToTheSecond(t *testing.T) {
	ip := func(i byte) netip.Addr { return netip.AddrFrom4([4]byte{45, 0, 0, i}) }
	l := newLRUShards(3, nil)
	held := func(want ...byte) {
		t.Helper()
		for i := byte(1); i <= 6; i++ {
			_, ok := l.Peek(ip(i))
			if ok != slices.Contains(want, i) {
				t.Fatalf("row %d held: %v; want rows %v held", i, ok, want)
			}
		}
	}
	for i := byte(1); i <= 3; i++ {
		l.Add(ip(i), &entry{})
	}
	if _, ok := l.Get(ip(1), 100); !ok {
		t.Fatal("row 1 missing")
	}
	l.Add(ip(4), &entry{}) // the oldest row not hit since is 2
	held(1, 3, 4)
	// In second 101: 1 is hit, then 3, then 1 again, which moves nothing.
	// 4, not used since second 100, goes first; then 1, whose first use in
	// second 101 came before 3's.
	l.Get(ip(1), 101)
	l.Get(ip(3), 101)
	l.Get(ip(1), 101)
	l.Add(ip(5), &entry{})
	held(1, 3, 5)
	l.Add(ip(6), &entry{})
	held(3, 5, 6)
}
