// Package enrich is the engine behind the intel_enrich processor: a TTL'd
// LRU of each IP's row, coalesced lookups, and a parallel fan-out to the
// providers that never holds a caller past its wait. It is plain Go; the
// processor translates Benthos messages to calls of Engine.Enrich.
package enrich

import (
	"context"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/golang-lru/v2/expirable"

	"github.com/decnet/decnet-stream/internal/aggregate"
	"github.com/decnet/decnet-stream/internal/providers"
)

// Outcome says how a row was obtained, as the intel_cache metadata reports.
type Outcome string

// Outcomes.
const (
	OutcomeHit       Outcome = "hit"       // from the cache
	OutcomeMiss      Outcome = "miss"      // looked up now, complete
	OutcomeCoalesced Outcome = "coalesced" // shared another caller's lookup
	OutcomePartial   Outcome = "partial"   // some provider deferred, failed or out of budget
)

// BudgetedProvider is a provider whose daily budget can be read, so that
// its last calls can be reserved for the attackers that matter.
type BudgetedProvider interface {
	providers.Provider
	Remaining() int
	DailyBudget() int
}

// Config configures an Engine. Zero values take the documented defaults.
type Config struct {
	Providers   []providers.Provider
	MaxEntries  int           // default 100,000
	TTL         time.Duration // complete rows; default 24h
	NegativeTTL time.Duration // rows with a provider to ask again; default 10m
	Jitter      float64       // ± share of the TTL; default 0.05
	MaxWait     time.Duration // default 2s
	// BudgetReserve is the share of a daily budget kept for lookups with a
	// priority of at least PriorityThreshold.
	BudgetReserve     float64
	PriorityThreshold float64
	Now               func() time.Time
	// SecondLevel, when set, is asked on a miss before the providers: a
	// store every replica shares (ClickHouse). It returns the IP's
	// unexpired row, or nil.
	SecondLevel func(ctx context.Context, ip netip.Addr) (*aggregate.Row, Carrier)
	// KeepRaw keeps providers' raw responses in cached rows (for a
	// ClickHouse row); without it rows are a fraction of the memory.
	KeepRaw bool
	// Observer receives events for metrics; nil discards them.
	Observer Observer
}

// Observer is told what the engine does, for metrics.
type Observer interface {
	ProviderResult(res providers.Result)
	Deferred(provider string)
	Evicted()
}

type nopObserver struct{}

func (nopObserver) ProviderResult(providers.Result) {}
func (nopObserver) Deferred(string)                 {}
func (nopObserver) Evicted()                        {}

// entry is a cached row. Rows are never mutated once cached: an update
// replaces the entry, so readers need no lock.
type entry struct {
	// row is the full row, kept for partial rows (merged into later) and
	// when raw responses are kept; otherwise the row lives packed.
	row       *aggregate.Row
	packed    aggregate.Compact
	complete  bool // row.Complete(), computed once
	expiresAt time.Time
	// version counts the row's changes; Enrich reports a change when a
	// caller sees a version it has not been told about.
	version uint64
	// carrier identifies the event that carried the latest change, so a
	// redelivery of that event carries it again.
	carrier Carrier
	carried bool
	// encoded caches the row's JSON per variant (0: enrichment, 1: with
	// raw): rows are immutable once cached, so hits reuse it.
	encoded *[2]atomic.Pointer[[]byte]
}

// Engine enriches IPs. It is safe for concurrent use.
type Engine struct {
	conf  Config
	names []string
	cache *expirable.LRU[netip.Addr, *entry]
	obs   Observer

	mu       sync.Mutex
	inflight map[netip.Addr]*job
	jobs     sync.WaitGroup
}

// job is one IP's fan-out in progress, shared by every caller that needs
// the IP meanwhile (request coalescing). It is singleflight's idea, kept by
// hand because callers must also read the partial row of a job they stopped
// waiting for; the fan-out goes on and fills the cache when done.
type job struct {
	result  *entry    // set before done is closed
	started time.Time // wall clock: only compared with max_wait
	done    chan struct{}
	mu      sync.Mutex
	row     *aggregate.Row
	waiting map[string]bool // providers not answered yet
	// partialCarried is set once an event carried this job's partial row,
	// so concurrent batches past max_wait do not each emit it.
	partialCarried bool
}

// New builds an Engine.
func New(c Config) *Engine {
	if c.MaxEntries <= 0 {
		c.MaxEntries = 100_000
	}
	if c.TTL <= 0 {
		c.TTL = 24 * time.Hour
	}
	if c.NegativeTTL <= 0 {
		c.NegativeTTL = 10 * time.Minute
	}
	if c.Jitter <= 0 || c.Jitter >= 1 {
		c.Jitter = 0.05
	}
	if c.MaxWait <= 0 {
		c.MaxWait = 2 * time.Second
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Observer == nil {
		c.Observer = nopObserver{}
	}
	e := &Engine{conf: c, obs: c.Observer, inflight: map[netip.Addr]*job{}}
	for _, p := range c.Providers {
		e.names = append(e.names, p.Name())
	}
	// Expiry is the engine's own (fixed from fetch time, per row): the LRU
	// only bounds memory. A TTL of 0 also spares the LRU's cleanup goroutine.
	e.cache = expirable.NewLRU[netip.Addr, *entry](c.MaxEntries, func(netip.Addr, *entry) { e.obs.Evicted() }, 0)
	return e
}

// Names are the configured providers, in order.
func (e *Engine) Names() []string { return e.names }

// Len is the number of cached rows.
func (e *Engine) Len() int { return e.cache.Len() }

// Carrier identifies the record an event came from. The zero value is an
// event with no stable identity (not from Kafka).
type Carrier struct {
	Topic     string
	Partition int32
	Offset    int64
}

// Request is one IP to enrich for one event.
type Request struct {
	IP      netip.Addr
	Carrier Carrier
}

// Priority returns the priority of reqs[k], for the daily budget's
// reserve. The engine asks for it only when it starts a lookup: computing
// it (a Bloblang mapping over the event) would otherwise cost every repeat
// sighting far more than its cache lookup. Nil means priority 0 for all.
type Priority func(k int) float64

// Answer is what Enrich returns for one request.
type Answer struct {
	row     *aggregate.Row
	ent     *entry
	ip      netip.Addr
	names   []string
	Outcome Outcome
	// Changed is true when this event should carry the row: it is new or
	// updated, or this event is a redelivery of the one that carried it.
	Changed bool
	// Cached is true when the row came from the cache without a lookup
	// (Outcome says hit, or partial for a cached partial row).
	Cached bool
	enc    *[2]atomic.Pointer[[]byte]
}

// Row is the answer's row. A packed cached row is unpacked on each call:
// the hot paths use Verdict and JSON instead.
func (a Answer) Row() *aggregate.Row {
	if a.row != nil {
		return a.row
	}
	if a.ent.row != nil {
		return a.ent.row
	}
	return a.ent.packed.Unpack(a.ip.String(), a.names)
}

// Verdict is the aggregate verdict, without unpacking.
func (a Answer) Verdict() string {
	if a.row != nil {
		return a.row.AggregateVerdict
	}
	if a.ent.row != nil {
		return a.ent.row.AggregateVerdict
	}
	return a.ent.packed.Verdict()
}

// JSON is the row encoded by encode, computed once per cached row on its
// first hit and reused by every later hit (the hot path of emit: all).
func (a Answer) JSON(variant int, encode func(*aggregate.Row) ([]byte, error)) ([]byte, error) {
	if a.enc == nil {
		return encode(a.Row())
	}
	if b := a.enc[variant].Load(); b != nil {
		return *b, nil
	}
	b, err := encode(a.Row())
	if err == nil && a.Outcome == OutcomeHit {
		// Only rows read again keep their encoding: a row emitted once (a
		// change, under emit: changes) would otherwise hold it for nothing.
		a.enc[variant].Store(&b)
	}
	return b, err
}

// Enrich answers a batch of requests, waiting at most MaxWait from now for
// lookups. IPs repeated in the batch are looked up once, and only the first
// event of an IP can carry a change.
func (e *Engine) Enrich(ctx context.Context, reqs []Request, priority Priority) []Answer {
	out := make([]Answer, len(reqs))
	deadline := time.Now().Add(e.conf.MaxWait)
	type pendingIP struct {
		job     *job
		first   int // index of the first request for this IP
		outcome Outcome
	}
	var pending []*pendingIP
	seen := make(map[netip.Addr]int, len(reqs))
	now := e.conf.Now()

	for i, r := range reqs {
		if _, dup := seen[r.IP]; dup {
			continue // resolved from the first request after the lookups
		}
		seen[r.IP] = i
		ent, ok := e.cache.Get(r.IP)
		if ok && now.Before(ent.expiresAt) {
			out[i] = Answer{ent: ent, ip: r.IP, names: e.names, Outcome: OutcomeHit, Changed: e.carries(r.IP, ent, r.Carrier), Cached: true, enc: ent.encoded}
			if !ent.complete {
				out[i].Outcome = OutcomePartial
			}
			continue
		}
		var prior *aggregate.Row
		if ok && !ent.complete {
			prior = ent.row // ask only the providers still pending
		}
		j, started := e.start(r.IP, prior, priority, i)
		p := &pendingIP{job: j, first: i, outcome: OutcomeMiss}
		if !started {
			p.outcome = OutcomeCoalesced
			if !j.started.Add(e.conf.MaxWait).After(time.Now()) {
				// Its first callers already gave up waiting: do not stall
				// again, take what it has.
				out[i] = Answer{row: j.snapshot(e.conf.Now(), e.conf.NegativeTTL), Outcome: OutcomePartial, Changed: j.claimPartial()}
				continue
			}
		}
		pending = append(pending, p)
	}

	// Wait for the lookups, all together, until the shared deadline.
	var timer *time.Timer
	if len(pending) > 0 {
		timer = time.NewTimer(max(time.Until(deadline), 0))
		defer timer.Stop()
	}
	expired := false
	for _, p := range pending {
		i, ip := p.first, reqs[p.first].IP
		if !expired {
			select {
			case <-p.job.done:
			case <-timer.C:
				expired = true
			case <-ctx.Done():
				expired = true
			}
		}
		select {
		case <-p.job.done:
			ent := p.job.result
			out[i] = Answer{ent: ent, ip: ip, names: e.names, Outcome: p.outcome, Changed: e.carries(ip, ent, reqs[i].Carrier), enc: ent.encoded}
			if !ent.complete {
				out[i].Outcome = OutcomePartial
			}
			continue
		default:
		}
		// Past max_wait: the fan-out goes on and fills the cache; this
		// event carries what is known, with the rest marked deferred.
		for _, name := range p.job.pendingNames() {
			e.obs.Deferred(name)
		}
		out[i] = Answer{row: p.job.snapshot(e.conf.Now(), e.conf.NegativeTTL), Outcome: OutcomePartial, Changed: p.job.claimPartial()}
	}

	// Later events of an IP in this batch are repeats: same row, no change.
	for i, r := range reqs {
		if first := seen[r.IP]; first != i {
			out[i] = out[first]
			out[i].Changed, out[i].Cached = false, true
			if out[i].Outcome != OutcomePartial {
				out[i].Outcome = OutcomeHit
			}
		}
	}
	return out
}

func (j *job) pendingNames() []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	names := make([]string, 0, len(j.waiting))
	for n := range j.waiting {
		names = append(names, n)
	}
	return names
}

func (j *job) claimPartial() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.partialCarried {
		return false
	}
	j.partialCarried = true
	return true
}

// snapshot is the job's row so far, with unanswered providers deferred.
func (j *job) snapshot(now time.Time, negativeTTL time.Duration) *aggregate.Row {
	j.mu.Lock()
	defer j.mu.Unlock()
	row := j.row.Clone()
	for p := range j.waiting {
		row.MarkDeferred(p)
	}
	// Stamped like any partial row. The stamp is the stored row's version
	// (ReplacingMergeTree keeps the highest): left unset, it read as a
	// version above every later one, and the complete row never replaced
	// the deferred one in ClickHouse.
	row.CachedAt = now.UTC()
	row.ExpiresAt = now.Add(negativeTTL).UTC()
	return row
}

// carries decides whether the event identified by carrier carries ent's
// row: either it is a redelivery of the event that carried it, or nobody
// has carried this version yet and this event claims it. The claim is
// atomic, so concurrent batches emit one change, not one each.
func (e *Engine) carries(ip netip.Addr, ent *entry, carrier Carrier) bool {
	if ent.carried {
		return carrier != (Carrier{}) && ent.carrier == carrier
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	cur, ok := e.cache.Peek(ip)
	if !ok || cur.version != ent.version || cur.carried {
		return ok && cur.carried && carrier != (Carrier{}) && cur.carrier == carrier
	}
	upd := *cur
	upd.carrier, upd.carried = carrier, true
	e.cache.Add(ip, &upd)
	return true
}

// start returns the job looking ip up, starting one unless one is running
// (then started is false: the caller coalesces onto it).
//
// Only a lookup that starts needs its priority: priority(k) is asked then,
// outside the engine's lock (it runs a Bloblang mapping over the event).
func (e *Engine) start(ip netip.Addr, prior *aggregate.Row, priority Priority, k int) (j *job, started bool) {
	e.mu.Lock()
	if j, ok := e.inflight[ip]; ok {
		e.mu.Unlock()
		return j, false
	}
	j = &job{started: time.Now(), done: make(chan struct{}), waiting: map[string]bool{}}
	if prior != nil {
		j.row = prior.Clone()
	} else {
		j.row = aggregate.NewRow(ip.String(), e.names)
	}
	e.inflight[ip] = j
	e.jobs.Add(1)
	e.mu.Unlock()
	prio := 0.0
	if priority != nil {
		prio = priority(k)
	}
	go e.fetch(ip, j, prior, prio)
	return j, true
}

// fetch asks the providers still pending for ip, all in parallel, merges
// their answers into the prior row, caches the result and publishes it on
// the job. It runs to completion even when every caller stopped waiting.
func (e *Engine) fetch(ip netip.Addr, j *job, prior *aggregate.Row, priority float64) {
	defer e.jobs.Done()
	if prior == nil && e.conf.SecondLevel != nil {
		ctx, cancel := context.WithTimeout(context.Background(), e.conf.MaxWait)
		shared, carrier := e.conf.SecondLevel(ctx, ip)
		cancel()
		if shared != nil && e.conf.Now().Before(shared.ExpiresAt) {
			if shared.Complete() {
				// Another replica (or this one before a restart) paid for
				// it and published it, from carrier.
				ent := e.newEntry(shared, shared.ExpiresAt)
				ent.carried, ent.carrier = true, carrier
				e.finish(ip, j, ent)
				return
			}
			prior = shared
			j.mu.Lock()
			j.row = shared.Clone()
			j.mu.Unlock()
		}
	}
	j.mu.Lock()
	ask := e.conf.Providers
	if prior != nil {
		pending := map[string]bool{}
		for _, n := range prior.Pending() {
			pending[n] = true
		}
		ask = nil
		for _, p := range e.conf.Providers {
			if pending[p.Name()] {
				ask = append(ask, p)
			}
		}
	}
	var run []providers.Provider
	for _, p := range ask {
		if e.reserved(p, priority) {
			j.row.MarkReserved(p.Name())
			continue
		}
		j.waiting[p.Name()] = true
		run = append(run, p)
	}
	j.mu.Unlock()
	// A lookup may finish in the background, but may not queue behind a
	// provider's rate limit past what a batch would wait: then it is
	// rate_limited now and asked again after negative_ttl.
	ctx := providers.WithAcquireDeadline(context.Background(), time.Now().Add(e.conf.MaxWait))
	var wg sync.WaitGroup
	for _, p := range run {
		wg.Add(1)
		go func(p providers.Provider) {
			defer wg.Done()
			res := p.Lookup(ctx, ip)
			e.obs.ProviderResult(res)
			j.mu.Lock()
			j.row.Merge(res)
			delete(j.waiting, p.Name())
			j.mu.Unlock()
		}(p)
	}
	wg.Wait()

	now := e.conf.Now()
	j.mu.Lock()
	row := j.row
	j.mu.Unlock()
	if !e.conf.KeepRaw {
		row.StripRaw()
	}
	row.CachedAt = now.UTC()
	ttl := e.conf.TTL
	if !row.Complete() {
		ttl = e.conf.NegativeTTL
	}
	ttl = time.Duration(float64(ttl) * (1 + e.conf.Jitter*(2*rand.Float64()-1)))
	row.ExpiresAt = now.Add(ttl).UTC()
	e.finish(ip, j, e.newEntry(row, now.Add(ttl)))
}

// finish caches a job's entry and publishes it to the job's waiters.
func (e *Engine) finish(ip netip.Addr, j *job, ent *entry) {
	e.mu.Lock()
	if old, ok := e.cache.Peek(ip); ok {
		ent.version = old.version + 1
	}
	e.cache.Add(ip, ent)
	delete(e.inflight, ip)
	e.mu.Unlock()
	j.result = ent
	close(j.done)
}

// reserved reports whether p's last calls are kept for higher priorities.
func (e *Engine) reserved(p providers.Provider, priority float64) bool {
	bp, ok := p.(BudgetedProvider)
	if !ok || e.conf.BudgetReserve <= 0 || bp.DailyBudget() <= 0 {
		return false
	}
	left := bp.Remaining()
	return left >= 0 && float64(left) <= e.conf.BudgetReserve*float64(bp.DailyBudget()) && priority < e.conf.PriorityThreshold
}

// Settle waits until every lookup still running in the background has
// filled the cache, or ctx ends. Shutdown uses it so that answers already
// paid for are not thrown away.
func (e *Engine) Settle(ctx context.Context) error {
	done := make(chan struct{})
	go func() { e.jobs.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Preload puts a row read back from storage into the cache (warm start),
// unless the IP is cached already. Its expiry is the stored one, and it
// counts as carried by carrier: it was published before, so a first
// sighting after a restart is a repeat, not a change — unless it is that
// very record delivered again (the crash came between the row and the
// enriched event), which publishes it again.
func (e *Engine) Preload(ip netip.Addr, row *aggregate.Row, carrier Carrier) {
	if !e.conf.Now().Before(row.ExpiresAt) {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, ok := e.cache.Peek(ip); ok {
		return
	}
	ent := e.newEntry(row, row.ExpiresAt)
	ent.carried, ent.carrier = true, carrier
	e.cache.Add(ip, ent)
}

// newEntry wraps a finished row for the cache, packing it when complete.
func (e *Engine) newEntry(row *aggregate.Row, expiresAt time.Time) *entry {
	ent := &entry{row: row, complete: row.Complete(), expiresAt: expiresAt, encoded: new([2]atomic.Pointer[[]byte])}
	if ent.complete && !e.conf.KeepRaw {
		if packed, ok := row.Pack(); ok {
			ent.row, ent.packed = nil, packed
		}
	}
	return ent
}
