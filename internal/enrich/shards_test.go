package enrich

import (
	"net/netip"
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
