package enrich

import (
	"encoding/binary"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// shardedFrom is the cache size from which the cache is split into
// shards: below it one LRU keeps exact recency (tests, small caches).
const shardedFrom = 16 << 10

// numShards is how many LRUs a large cache is split into.
const numShards = 16

// lruShards is the cache of rows, split by IP into independently locked
// LRUs. Every hit is a Get, and a Get can write (it moves the entry to the
// front, once a second): with one lock, the pipeline's threads answering
// repeat sightings queue on it.
//
// The bound is global: the cache holds max_entries rows whichever shards
// they fall in (a fixed share per shard would evict from a full shard while
// others had room, so a cache sized to its attackers would not hold them
// all). Past it, the shard taking a new row gives up its least recently
// used one: recency is per shard, which over many rows evicts nearly as one
// LRU would.
type lruShards struct {
	s     []*lruShard
	max   int64
	total atomic.Int64 // rows held, over every shard (sharded only)
}

// lruShard is one LRU and its lock. The LRU is golang-lru's simplelru, not
// its expirable one: a row's expiry is the engine's (fixed per row when it
// was fetched), and the expirable LRU read the clock on every Get for a TTL
// it was never given (70 of the 160ms its Gets took in a 2s profile of the
// hit-only pipeline).
type lruShard struct {
	mu  sync.Mutex // every use of lru; additions also keep the global count right
	lru *simplelru.LRU[netip.Addr, slot]
}

// slot is what the LRU holds per IP: the row's entry, and the second (unix,
// truncated) the row last moved to the front. touched is the cache's own,
// read and written under the shard's lock, so entries stay immutable; the
// LRU's element is 96 bytes with it or without (a size class).
type slot struct {
	ent     *entry
	touched uint32
}

func newShard(size int, onEvict func(netip.Addr, *entry)) *lruShard {
	var evicted func(netip.Addr, slot)
	if onEvict != nil {
		evicted = func(ip netip.Addr, s slot) { onEvict(ip, s.ent) }
	}
	lru, err := simplelru.NewLRU(size, evicted)
	if err != nil {
		panic(err) // size is max_entries, which the config holds to at least 1
	}
	return &lruShard{lru: lru}
}

func newLRUShards(maxEntries int, onEvict func(netip.Addr, *entry)) *lruShards {
	if maxEntries < shardedFrom {
		return &lruShards{s: []*lruShard{newShard(maxEntries, onEvict)}}
	}
	l := &lruShards{s: make([]*lruShard, numShards), max: int64(maxEntries)}
	for i := range l.s {
		// Each shard could hold every row: the global count evicts.
		l.s[i] = newShard(maxEntries, onEvict)
	}
	return l
}

// of is ip's shard index: the address's two halves folded and mixed by a
// multiplication, top bits taken.
func (l *lruShards) of(ip netip.Addr) int {
	if len(l.s) == 1 {
		return 0
	}
	b := ip.As16()
	h := (binary.BigEndian.Uint64(b[8:]) ^ binary.BigEndian.Uint64(b[:8])) * 0x9E3779B97F4A7C15
	return int(h >> 60 % uint64(len(l.s)))
}

// Get is ip's row, used at sec (unix seconds): the row moves to the front
// of its LRU on its first use in a second, not on every use. A move is a
// write to the list (pointers, so a write barrier while the GC runs, and
// cache lines of the row's neighbours): on the hot path it was half of
// what a hit cost, for an order that only matters to eviction, where a
// second's resolution is plenty.
func (l *lruShards) Get(ip netip.Addr, sec uint32) (*entry, bool) {
	sh := l.s[l.of(ip)]
	sh.mu.Lock()
	s, ok := sh.lru.Peek(ip)
	if ok && s.touched != sec {
		s.touched = sec
		sh.lru.Add(ip, s) // to the front
	}
	sh.mu.Unlock()
	return s.ent, ok
}

func (l *lruShards) Peek(ip netip.Addr) (*entry, bool) {
	sh := l.s[l.of(ip)]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	s, ok := sh.lru.Peek(ip)
	return s.ent, ok
}

// Add caches ip's entry; a new row over the bound evicts the least
// recently used row of its shard (of the next shard with another row, if
// it is alone in its own).
func (l *lruShards) Add(ip netip.Addr, e *entry) {
	at := l.of(ip)
	sh := l.s[at]
	sh.mu.Lock()
	if len(l.s) == 1 {
		sh.lru.Add(ip, slot{ent: e}) // evicts by itself at max_entries
		sh.mu.Unlock()
		return
	}
	existed := sh.lru.Contains(ip)
	sh.lru.Add(ip, slot{ent: e})
	sh.mu.Unlock()
	if existed || l.total.Add(1) <= l.max {
		return
	}
	for i := range l.s {
		victim := l.s[(at+i)%len(l.s)]
		victim.mu.Lock()
		evicted := false
		if victim != sh || victim.lru.Len() > 1 {
			_, _, evicted = victim.lru.RemoveOldest() // calls onEvict
		}
		victim.mu.Unlock()
		if evicted {
			l.total.Add(-1)
			return
		}
	}
}

// Len is the rows held, over every shard.
func (l *lruShards) Len() int {
	if len(l.s) == 1 {
		sh := l.s[0]
		sh.mu.Lock()
		defer sh.mu.Unlock()
		return sh.lru.Len()
	}
	return int(l.total.Load())
}
