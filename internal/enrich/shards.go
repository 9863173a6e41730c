package enrich

import (
	"encoding/binary"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/golang-lru/v2/expirable"
)

// shardedFrom is the cache size from which the cache is split into
// shards: below it one LRU keeps exact recency (tests, small caches).
const shardedFrom = 16 << 10

// numShards is how many LRUs a large cache is split into.
const numShards = 16

// lruShards is the cache of rows, split by IP into independently locked
// LRUs. Every hit is a Get, and a Get is a write (it moves the entry to the
// front): with one lock, the pipeline's threads answering repeat sightings
// queue on it.
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

type lruShard struct {
	mu  sync.Mutex // serialises additions, so a row is counted once
	lru *expirable.LRU[netip.Addr, *entry]
}

func newLRUShards(maxEntries int, onEvict func(netip.Addr, *entry)) *lruShards {
	if maxEntries < shardedFrom {
		return &lruShards{s: []*lruShard{{lru: expirable.NewLRU[netip.Addr, *entry](maxEntries, onEvict, 0)}}}
	}
	l := &lruShards{s: make([]*lruShard, numShards), max: int64(maxEntries)}
	for i := range l.s {
		// Each shard could hold every row: the global count evicts.
		l.s[i] = &lruShard{lru: expirable.NewLRU[netip.Addr, *entry](maxEntries, onEvict, 0)}
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

func (l *lruShards) Get(ip netip.Addr) (*entry, bool)  { return l.s[l.of(ip)].lru.Get(ip) }
func (l *lruShards) Peek(ip netip.Addr) (*entry, bool) { return l.s[l.of(ip)].lru.Peek(ip) }

// Add caches ip's entry; a new row over the bound evicts the least
// recently used row of its shard (of the next shard with another row, if
// it is alone in its own).
func (l *lruShards) Add(ip netip.Addr, e *entry) {
	at := l.of(ip)
	sh := l.s[at]
	if len(l.s) == 1 {
		sh.lru.Add(ip, e) // evicts by itself at max_entries
		return
	}
	sh.mu.Lock()
	existed := sh.lru.Contains(ip)
	sh.lru.Add(ip, e)
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
		return l.s[0].lru.Len()
	}
	return int(l.total.Load())
}
