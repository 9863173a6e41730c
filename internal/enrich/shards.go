package enrich

import (
	"encoding/binary"
	"net/netip"

	"github.com/hashicorp/golang-lru/v2/expirable"
)

// shardedFrom is the cache size from which the cache is split into
// shards: below it one LRU keeps exact recency (tests, small caches).
const shardedFrom = 16 << 10

// lruShards is the cache of rows, split by IP into independently locked
// LRUs. Every hit is a Get, and a Get is a write (it moves the entry to the
// front): with one lock, the pipeline's threads answering repeat sightings
// queue on it. Each shard holds its share of max_entries, so the bound
// holds exactly; recency is per shard, which over a million IPs evicts
// nearly as a single LRU would.
type lruShards struct {
	s []*expirable.LRU[netip.Addr, *entry]
}

func newLRUShards(maxEntries int, onEvict func(netip.Addr, *entry)) lruShards {
	n := 1
	if maxEntries >= shardedFrom {
		n = 16
	}
	l := lruShards{s: make([]*expirable.LRU[netip.Addr, *entry], n)}
	for i := range l.s {
		size := maxEntries / n
		if i < maxEntries%n {
			size++
		}
		l.s[i] = expirable.NewLRU[netip.Addr, *entry](size, onEvict, 0)
	}
	return l
}

// of is ip's shard: the address's low 64 bits (where an IPv4 address and
// the varying part of most IPv6 ones are) mixed by a multiplication, top
// bits taken.
func (l lruShards) of(ip netip.Addr) *expirable.LRU[netip.Addr, *entry] {
	if len(l.s) == 1 {
		return l.s[0]
	}
	b := ip.As16()
	h := (binary.BigEndian.Uint64(b[8:]) ^ binary.BigEndian.Uint64(b[:8])) * 0x9E3779B97F4A7C15
	return l.s[h>>60%uint64(len(l.s))]
}

func (l lruShards) Get(ip netip.Addr) (*entry, bool)  { return l.of(ip).Get(ip) }
func (l lruShards) Peek(ip netip.Addr) (*entry, bool) { return l.of(ip).Peek(ip) }
func (l lruShards) Add(ip netip.Addr, e *entry)       { l.of(ip).Add(ip, e) }

// Len is the rows held, over every shard.
func (l lruShards) Len() int {
	n := 0
	for _, s := range l.s {
		n += s.Len()
	}
	return n
}
