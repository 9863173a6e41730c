// Package enrich is the engine behind the intel_enrich processor: a TTL'd
// LRU of each IP's row, coalesced lookups, and a parallel fan-out to the
// providers. It is plain Go; the processor translates Benthos messages to
// calls of the engine.
//
// Three calls serve three kinds of events:
//
//   - Sight answers a sighting from the cache, or says that its IP needs a
//     lookup. It never waits: a repeat sighting costs a cache lookup.
//   - Lookup makes sure each IP has a current row, asking the providers and
//     waiting until every provider asked has answered or failed, and says
//     which request carries the row out (Emit). A lookup request is what a
//     missed sighting becomes: in the lookup stage of a split pipeline it
//     arrives from its own topic; inline, it is the sighting itself.
//   - Annotate (emit: all) waits at most MaxWait and annotates with what is
//     known, the rest deferred.
//
// A row is emitted by exactly one request, or again by a redelivery of that
// request (same carrier): so a crash between the row and its enriched event
// publishes it again, and nothing else publishes an old row twice.
package enrich

import (
	"context"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/decnet/decnet-stream/internal/aggregate"
	"github.com/decnet/decnet-stream/internal/providers"
)

// Outcome says how a row was obtained, as the intel_cache metadata reports.
type Outcome string

// Outcomes.
const (
	OutcomeHit       Outcome = "hit"       // from the cache
	OutcomeMiss      Outcome = "miss"      // looked up now
	OutcomeCoalesced Outcome = "coalesced" // shared another caller's lookup
	OutcomePartial   Outcome = "partial"   // some provider failed, was deferred or is out of budget
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
	Jitter      float64       // share of the TTL added at random (0..Jitter); default 0.05
	// MaxWait bounds how long a lookup waits for a provider's rate-limit
	// token or slot (past it the provider is rate_limited in the row), and
	// how long Annotate waits for a lookup. Default 2s.
	MaxWait time.Duration
	// RequestTTL is how long a sighting's lookup request counts as pending:
	// later sightings of the IP send no request of their own meanwhile.
	// Default 10m.
	RequestTTL time.Duration
	// BudgetReserve is the share of a daily budget kept for lookups with a
	// priority of at least PriorityThreshold.
	BudgetReserve     float64
	PriorityThreshold float64
	Now               func() time.Time
	// SecondLevel, when set, is asked on a miss before the providers: a
	// store every replica shares (ClickHouse). It returns the IP's
	// unexpired row, or nil.
	SecondLevel func(ctx context.Context, ip netip.Addr) (*aggregate.Row, Carrier)
	// SkipWhen names, per per-IP provider, the feeds (Feodo, bulk lists)
	// whose listing of an IP makes asking that provider unnecessary: the
	// feeds answer first, and a provider whose IP one of them lists is
	// "covered" in the row, its per-IP budget kept for attackers nobody
	// has listed.
	SkipWhen map[string][]string
	// Geo, when set, says where an address is routed from (ASN, AS
	// organisation, country): written into each new row, free of quota.
	Geo func(ip netip.Addr) (asn *uint32, org, country *string)
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

// entry is a cached row. Entries are never mutated once cached: an update
// replaces the entry, so readers need no lock.
type entry struct {
	// row is the full row, kept when it holds raw responses that are to
	// be kept (or cannot be packed); otherwise the row lives packed.
	row    *aggregate.Row
	packed aggregate.Compact
	// expiresAt and cachedAt (the row's version) are unix nanoseconds: an
	// entry is kept per cached IP, and two time.Time cost 32 bytes more.
	expiresAt, cachedAt int64
	// carrier is the request that emitted this row (carried), so that a
	// redelivery of it emits the row again.
	carrier  Carrier
	carried  bool
	complete bool // row.Complete(), computed once
	// encoded caches the row's JSON per variant (0: enrichment, 1: with
	// raw): rows are immutable once cached, so hits reuse it.
	encoded *[2]atomic.Pointer[[]byte]
}

// Engine enriches IPs. It is safe for concurrent use.
type Engine struct {
	conf  Config
	names []string
	cache *lruShards
	obs   Observer

	mu        sync.Mutex
	inflight  map[netip.Addr]*job
	requested map[netip.Addr]pendingRequest
	sweepAt   int // len(requested) at which old requests are forgotten
	// The sizes inflight and requested last grew to (see forgetLocked).
	inflightPeak, requestedPeak int
	// reserves: some provider keeps a reserve of its daily budget, so a
	// lookup's priority can matter (see reserved).
	reserves bool
	// feeds and perIP are the configured providers split (splitFeeds):
	// what a new attacker's lookup asks.
	feeds []providers.Feed
	perIP []providers.Provider
	jobs  sync.WaitGroup
}

// pendingRequest is a lookup request a sighting has sent and whose row has
// not come back yet.
type pendingRequest struct {
	carrier Carrier
	at      int64 // unix nanoseconds: a storm holds one per new IP
}

// job is one IP's fan-out in progress, shared by every caller that needs
// the IP meanwhile (request coalescing). It is singleflight's idea, kept by
// hand because Annotate reads the partial row of a job it stopped waiting
// for; the fan-out goes on and fills the cache when done.
type job struct {
	result  *entry // set before done is closed
	done    chan struct{}
	mu      sync.Mutex
	row     *aggregate.Row
	waiting map[string]bool // providers not answered yet
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
	if c.RequestTTL <= 0 {
		c.RequestTTL = 10 * time.Minute
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Observer == nil {
		c.Observer = nopObserver{}
	}
	e := &Engine{conf: c, obs: c.Observer, inflight: map[netip.Addr]*job{}, requested: map[netip.Addr]pendingRequest{}}
	for _, p := range c.Providers {
		e.names = append(e.names, p.Name())
		if bp, ok := p.(BudgetedProvider); ok && c.BudgetReserve > 0 && bp.DailyBudget() > 0 {
			e.reserves = true
		}
	}
	e.feeds, e.perIP = splitFeeds(c.Providers)
	// Expiry is the engine's own (fixed from fetch time, per row): the LRU
	// only bounds memory.
	e.cache = newLRUShards(c.MaxEntries, func(netip.Addr, *entry) { e.obs.Evicted() })
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

// Answer is what the engine says of one request.
type Answer struct {
	row     *aggregate.Row
	ent     *entry
	ip      netip.Addr
	names   []string
	Outcome Outcome
	// Emit is true when this event carries the row out: the row is new, or
	// this event is a redelivery of the one that carried it (Lookup); with
	// Annotate, the event is annotated and Emit is always true.
	Emit bool
	// Cached is true when the row came from the cache without a lookup;
	// Coalesced when it came from a lookup another request started.
	Cached, Coalesced bool
	// Request is set by Sight when the IP has no current row and this
	// sighting must send the lookup request; NoRow when it has none but a
	// request is already on its way (the sighting needs nothing more).
	Request, NoRow bool
	enc            *[2]atomic.Pointer[[]byte]
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
		return string(a.row.AggregateVerdict)
	}
	if a.ent.row != nil {
		return string(a.ent.row.AggregateVerdict)
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
		// Only rows read again keep their encoding: a row emitted once
		// would otherwise hold it for nothing.
		a.enc[variant].Store(&b)
	}
	return b, err
}

func (e *Engine) hit(ip netip.Addr, ent *entry) Answer {
	a := Answer{ent: ent, ip: ip, names: e.names, Outcome: OutcomeHit, Cached: true, enc: ent.encoded}
	if !ent.complete {
		a.Outcome = OutcomePartial
	}
	return a
}

// current is ip's cached entry when it is still valid at now.
func (e *Engine) current(ip netip.Addr, now time.Time) (*entry, bool) {
	ent, ok := e.cache.Get(ip, uint32(now.Unix()))
	if ok && now.UnixNano() < ent.expiresAt {
		return ent, true
	}
	return ent, false
}

// Sight answers sightings from the cache without ever waiting. An IP with a
// current row is a hit (inline, the redelivered sighting that emitted it is
// sent back to Lookup, to emit it again). One without is a miss; with requests set, the
// sighting that first finds it so sends the lookup request (Request) and
// later ones do not (NoRow) until the row comes back or RequestTTL passes,
// except a redelivery of the sighting that sent it, which sends it again.
// Without requests, every miss has Request set (the caller looks it up).
func (e *Engine) Sight(reqs []Request, requests bool) []Answer {
	return e.SightInto(nil, reqs, requests)
}

// SightInto is Sight answering into out's memory (grown when short): a
// caller that sights batch after batch reuses one slice instead of
// allocating the answers of every batch.
func (e *Engine) SightInto(out []Answer, reqs []Request, requests bool) []Answer {
	out = slices.Grow(out[:0], len(reqs))[:len(reqs)]
	now := e.conf.Now()
	for i, r := range reqs {
		if ent, ok := e.current(r.IP, now); ok {
			out[i] = e.hit(r.IP, ent)
			// Inline, the sighting that emitted the row is its carrier: a
			// redelivery of it is sent to Lookup, which emits it again.
			out[i].Request = !requests && ent.carried && r.Carrier != (Carrier{}) && ent.carrier == r.Carrier
			continue
		}
		out[i] = Answer{ip: r.IP, names: e.names, Outcome: OutcomeMiss}
		if !requests {
			out[i].Request = true
			continue
		}
		e.mu.Lock()
		p, pending := e.requested[r.IP]
		switch {
		case pending && now.UnixNano()-p.at < int64(e.conf.RequestTTL):
			out[i].Request = r.Carrier != (Carrier{}) && p.carrier == r.Carrier
		default:
			e.requested[r.IP] = pendingRequest{carrier: r.Carrier, at: now.UnixNano()}
			out[i].Request = true
			e.sweepLocked(now)
		}
		e.mu.Unlock()
		out[i].NoRow = !out[i].Request
	}
	return out
}

// sweepLocked forgets requests older than RequestTTL once there are many:
// a request looked up elsewhere (another replica) never comes back here.
// Call with mu held.
func (e *Engine) sweepLocked(now time.Time) {
	if len(e.requested) < max(e.sweepAt, 1024) {
		return
	}
	e.requestedPeak = max(e.requestedPeak, len(e.requested))
	for ip, p := range e.requested {
		if now.UnixNano()-p.at >= int64(e.conf.RequestTTL) {
			delete(e.requested, ip)
		}
	}
	e.requested, e.requestedPeak = shrunk(e.requested, e.requestedPeak)
	e.sweepAt = 2 * len(e.requested)
}

// Lookup makes sure each request's IP has a current row and says which
// request emits it. An IP without a current row is looked up (coalesced
// with any lookup of it already running, and with the batch's other
// requests for it), asking every provider that has no current answer, and
// waits until each has answered or failed: the row that comes out is the
// whole answer, not a snapshot. An answer never gives way to a failure: a
// provider that fails keeps its earlier answer, marked stale.
//
// Every request is checked against the row's carrier, repeats of an IP in
// the batch included: a redelivered carrier emits the row again wherever it
// sits in its batch.
func (e *Engine) Lookup(reqs []Request, priority Priority) []Answer {
	out := make([]Answer, len(reqs))
	now := e.conf.Now()
	jobs := map[netip.Addr]*job{}
	outcome := map[netip.Addr]Outcome{}
	for i, r := range reqs {
		if _, started := jobs[r.IP]; started {
			continue
		}
		if _, done := outcome[r.IP]; done {
			continue
		}
		ent, ok := e.current(r.IP, now)
		if ok {
			outcome[r.IP] = OutcomeHit
			continue
		}
		var prior *aggregate.Row
		if ent != nil {
			prior = e.rowOf(r.IP, ent) // its answers stay until new ones replace them
		}
		j, started := e.start(r.IP, prior, priority, i)
		jobs[r.IP] = j
		outcome[r.IP] = OutcomeMiss
		if !started {
			outcome[r.IP] = OutcomeCoalesced
		}
	}
	// Every lookup ends by itself (provider timeouts, max_wait for tokens),
	// and the request is acknowledged only with its row: so it is waited
	// for even when ctx ends, rather than acknowledged with nothing.
	for _, j := range jobs {
		<-j.done
	}
	var evicted map[netip.Addr]bool // IPs of this batch whose new row left the cache already
	for i, r := range reqs {
		ent, ok := e.cache.Peek(r.IP)
		var emit bool
		if j := jobs[r.IP]; j != nil && (!ok || ent.cachedAt < j.result.cachedAt) {
			// Evicted by the batch's own lookups (more IPs than the cache
			// holds): the job's row, emitted by the first of its requests.
			ent, ok = j.result, true
			if evicted == nil {
				evicted = map[netip.Addr]bool{}
			}
			emit = !ent.carried && !evicted[r.IP]
			evicted[r.IP] = true
		} else if ok {
			emit = e.claim(r.IP, ent, r.Carrier)
		}
		if !ok {
			out[i] = Answer{ip: r.IP, names: e.names, Outcome: OutcomePartial, NoRow: true}
			continue
		}
		out[i] = Answer{ent: ent, ip: r.IP, names: e.names, Outcome: outcome[r.IP], enc: ent.encoded,
			Cached: outcome[r.IP] == OutcomeHit, Coalesced: outcome[r.IP] == OutcomeCoalesced, Emit: emit}
		if !ent.complete {
			out[i].Outcome = OutcomePartial
		}
	}
	return out
}

func closed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// claim decides whether the request identified by carrier emits ent's row:
// it is a redelivery of the request that emitted it, or nobody has emitted
// this row yet and this request claims it. The claim is atomic, so
// concurrent batches emit a row once, not once each.
func (e *Engine) claim(ip netip.Addr, ent *entry, carrier Carrier) bool {
	if ent.carried {
		return carrier != (Carrier{}) && ent.carrier == carrier
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	cur, ok := e.cache.Peek(ip)
	if !ok || cur.cachedAt < ent.cachedAt {
		// Evicted before anyone emitted it (a batch of more IPs than the
		// cache holds): the caller's own bookkeeping decides.
		return false
	}
	if cur.carried {
		return carrier != (Carrier{}) && cur.carrier == carrier
	}
	upd := *cur
	upd.carrier, upd.carried = carrier, true
	e.cache.Add(ip, &upd)
	return true
}

// Annotate answers every request for emit: all: hits from the cache, misses
// after at most MaxWait from now, with the providers that had not answered
// by then deferred; their lookups go on and fill the cache.
func (e *Engine) Annotate(ctx context.Context, reqs []Request, priority Priority) []Answer {
	out := make([]Answer, len(reqs))
	now := e.conf.Now()
	deadline := time.NewTimer(e.conf.MaxWait)
	defer deadline.Stop()
	expired := false
	jobs := map[netip.Addr]*job{}
	outcome := map[netip.Addr]Outcome{}
	for i, r := range reqs {
		if ent, ok := e.current(r.IP, now); ok {
			out[i] = e.hit(r.IP, ent)
			out[i].Emit = true
			continue
		}
		j, ok := jobs[r.IP]
		if !ok {
			var prior *aggregate.Row
			if ent, ok := e.cache.Peek(r.IP); ok {
				prior = e.rowOf(r.IP, ent)
			}
			var started bool
			j, started = e.start(r.IP, prior, priority, i)
			jobs[r.IP] = j
			outcome[r.IP] = OutcomeMiss
			if !started {
				outcome[r.IP] = OutcomeCoalesced
			}
		}
		if !expired {
			select {
			case <-j.done:
			case <-deadline.C:
				expired = true
			case <-ctx.Done():
				expired = true
			}
		}
		if closed(j.done) {
			ent := j.result
			out[i] = Answer{ent: ent, ip: r.IP, names: e.names, Outcome: outcome[r.IP], enc: ent.encoded, Emit: true}
			if !ent.complete {
				out[i].Outcome = OutcomePartial
			}
			continue
		}
		for _, name := range j.pendingNames() {
			e.obs.Deferred(name)
		}
		out[i] = Answer{row: j.snapshot(), ip: r.IP, names: e.names, Outcome: OutcomePartial, Emit: true}
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

// snapshot is the job's row so far, with unanswered providers deferred.
func (j *job) snapshot() *aggregate.Row {
	j.mu.Lock()
	defer j.mu.Unlock()
	row := j.row.Clone()
	for p := range j.waiting {
		row.MarkDeferred(p)
	}
	return row
}

// start returns the job looking ip up, starting one unless one is running
// (then started is false: the caller coalesces onto it).
//
// Only a lookup that starts needs its priority, and only when some
// provider keeps a reserve of its daily budget: priority(k) is asked then,
// outside the engine's lock (it runs a Bloblang mapping over the event).
func (e *Engine) start(ip netip.Addr, prior *aggregate.Row, priority Priority, k int) (j *job, started bool) {
	e.mu.Lock()
	if j, ok := e.inflight[ip]; ok {
		e.mu.Unlock()
		return j, false
	}
	j = &job{done: make(chan struct{}), waiting: map[string]bool{}}
	if prior != nil {
		j.row = prior.Clone()
	} else {
		j.row = aggregate.NewRow(ip.String(), e.names)
	}
	e.inflight[ip] = j
	e.jobs.Add(1)
	e.mu.Unlock()
	prio := 0.0
	if priority != nil && e.reserves {
		prio = priority(k)
	}
	go e.fetch(ip, j, prior, prio)
	return j, true
}

// fetch asks the providers without a current answer for ip, all in
// parallel, merges their answers into the prior row, caches the result and
// publishes it on the job. It runs to completion even when every caller
// stopped waiting.
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
	ask := e.conf.Providers // a first lookup, or a complete row's refresh
	feeds, perIP := e.feeds, e.perIP
	if prior != nil && !prior.Complete() {
		// A partial row: its pending providers, and the answered ones too
		// once their answers are as old as a full TTL.
		ask = e.dueOf(prior)
		feeds, perIP = splitFeeds(ask)
	}
	for _, p := range ask {
		j.waiting[p.Name()] = true
	}
	j.mu.Unlock()
	// A lookup may not queue behind a provider's rate limit longer than
	// max_wait: then it is rate_limited now, and asked again after
	// negative_ttl.
	ctx := providers.WithAcquireDeadline(context.Background(), time.Now().Add(e.conf.MaxWait))
	var answered atomic.Bool
	lookUp := func(p providers.Provider) {
		res := p.Lookup(ctx, ip)
		e.obs.ProviderResult(res)
		if res.OK() {
			answered.Store(true)
		}
		j.mu.Lock()
		j.row.Merge(res)
		delete(j.waiting, p.Name())
		j.mu.Unlock()
	}
	// Feeds first: a loaded one answers from memory, in turn, since a
	// goroutine each (four per new attacker with every list configured)
	// cost more than their lookups; one still to download (a first start)
	// is asked on its own goroutine, so cold downloads overlap. Then the
	// per-IP providers that no feed named in their skip_when has covered
	// and whose last calls are not kept for higher priorities, in
	// parallel: they wait on the network.
	var wg sync.WaitGroup
	for _, p := range feeds {
		if p.Ready() {
			lookUp(p)
		} else {
			wg.Go(func() { lookUp(p) })
		}
	}
	wg.Wait()
	// The last on this goroutine: it waits for the others anyway, and its
	// stack has grown already where a new one's would have to.
	if admitted := e.admitted(j, perIP, priority); len(admitted) > 0 {
		for _, p := range admitted[:len(admitted)-1] {
			wg.Go(func() { lookUp(p) })
		}
		lookUp(admitted[len(admitted)-1])
	}
	wg.Wait()
	if e.conf.Geo != nil { // cheap: every lookup takes the current file's answer
		asn, org, country := e.conf.Geo(ip)
		j.mu.Lock()
		j.row.SetOrigin(asn, org, country)
		j.mu.Unlock()
	}

	now := e.conf.Now()
	j.mu.Lock()
	row := j.row
	j.mu.Unlock()
	if !e.conf.KeepRaw {
		row.StripRaw()
	}
	ttl := e.conf.TTL
	if !row.Complete() {
		ttl = e.conf.NegativeTTL
	}
	// Jitter only lengthens: a row lives at least its TTL, so a 24h row is
	// never asked again within the day it was fetched (a refresh inside the
	// TTL would spend a daily quota on an answer that has not aged), and a
	// burst of lookups still does not expire at once.
	ttl = time.Duration(float64(ttl) * (1 + e.conf.Jitter*rand.Float64()))
	if prior != nil && !answered.Load() && row.SameStatuses(prior) {
		// Nothing new (every provider asked failed as before): the same
		// row, asked again later. A new version would only repeat it.
		e.extend(ip, j, now.Add(ttl))
		return
	}
	// Versions (cached_at, in ns) of one IP only ever grow, so ClickHouse's
	// ReplacingMergeTree keeps the newest even if the clock steps back.
	row.CachedAt = now.UTC()
	if prior != nil && !row.CachedAt.After(prior.CachedAt) {
		row.CachedAt = prior.CachedAt.Add(time.Nanosecond)
	}
	row.ExpiresAt = now.Add(ttl).UTC()
	e.finish(ip, j, e.newEntry(row, now.Add(ttl)))
}

// splitFeeds separates the providers answered from memory (Feodo, bulk
// lists) from those that cost a request per IP.
func splitFeeds(ps []providers.Provider) (feeds []providers.Feed, perIP []providers.Provider) {
	for _, p := range ps {
		if f, ok := p.(providers.Feed); ok {
			feeds = append(feeds, f)
		} else {
			perIP = append(perIP, p)
		}
	}
	return feeds, perIP
}

// admitted are the providers of ps to ask: the others are recorded in the
// job's row, unasked — covered when a feed in their skip_when lists the IP
// (final: a call saved), quota_reserved when their last calls are kept for
// higher priorities (asked again later).
func (e *Engine) admitted(j *job, ps []providers.Provider, priority float64) []providers.Provider {
	j.mu.Lock()
	defer j.mu.Unlock()
	var out []providers.Provider
	for _, p := range ps {
		by := ""
		for _, f := range e.conf.SkipWhen[p.Name()] {
			if j.row.Listed(f) {
				by = f
				break
			}
		}
		if by == "" {
			if e.reserved(p, priority) {
				j.row.MarkReserved(p.Name())
				delete(j.waiting, p.Name())
				continue
			}
			out = append(out, p)
			continue
		}
		res := providers.Result{Provider: p.Name(), ErrKind: providers.ErrCovered, Err: "listed by " + by, FetchedAt: e.conf.Now()}
		e.obs.ProviderResult(res)
		j.row.Merge(res)
		delete(j.waiting, p.Name())
	}
	return out
}

// dueOf are the providers of a partial row to ask again: the pending ones,
// and those whose answer is as old as a full TTL.
func (e *Engine) dueOf(r *aggregate.Row) []providers.Provider {
	pending := map[string]bool{}
	for _, n := range r.Pending() {
		pending[n] = true
	}
	old := e.conf.Now().Add(-e.conf.TTL)
	var out []providers.Provider
	for _, p := range e.conf.Providers {
		if pending[p.Name()] || (r.Status.Of(p.Name()) == aggregate.StatusOK && r.AnsweredBefore(p.Name(), old)) {
			out = append(out, p)
		}
	}
	return out
}

// extend keeps ip's row as it is, valid until expiresAt, after a lookup
// that found nothing new.
func (e *Engine) extend(ip netip.Addr, j *job, expiresAt time.Time) {
	e.mu.Lock()
	var ent *entry
	if old, ok := e.cache.Peek(ip); ok {
		upd := *old
		upd.expiresAt = expiresAt.UnixNano()
		ent = &upd
		e.cache.Add(ip, ent)
	}
	e.forgetLocked(ip)
	e.mu.Unlock()
	j.result = ent
	if ent == nil { // evicted meanwhile: the job's row stands
		j.mu.Lock()
		row := j.row
		j.mu.Unlock()
		j.result = e.newEntry(row, expiresAt)
		e.mu.Lock()
		e.cache.Add(ip, j.result)
		e.mu.Unlock()
	}
	close(j.done)
}

// finish caches a job's entry and publishes it to the job's waiters.
func (e *Engine) finish(ip netip.Addr, j *job, ent *entry) {
	e.mu.Lock()
	e.cache.Add(ip, ent)
	e.forgetLocked(ip)
	e.mu.Unlock()
	j.result = ent
	close(j.done)
}

// forgetLocked drops ip's lookup in flight and its pending request. Call
// with mu held.
//
// Go's maps keep their peak size when emptied, and a storm of new
// attackers grows both maps by one entry per IP (~90 bytes each for the
// requests): once one is down to a quarter of its peak, what is left moves
// to a map of its own size, so the storm's bookkeeping is given back with
// it (a copy paid for by the three quarters deleted before it).
func (e *Engine) forgetLocked(ip netip.Addr) {
	e.inflightPeak = max(e.inflightPeak, len(e.inflight))
	e.requestedPeak = max(e.requestedPeak, len(e.requested))
	delete(e.inflight, ip)
	delete(e.requested, ip)
	e.inflight, e.inflightPeak = shrunk(e.inflight, e.inflightPeak)
	e.requested, e.requestedPeak = shrunk(e.requested, e.requestedPeak)
}

// shrunk is m, or a copy of it sized to it when it holds a quarter or less
// of its peak (a small map is left as it is), with its new peak.
func shrunk[V any](m map[netip.Addr]V, peak int) (map[netip.Addr]V, int) {
	if peak < 4096 || len(m) > peak/4 {
		return m, peak
	}
	// Not maps.Clone: it copies the table at its old size.
	small := make(map[netip.Addr]V, len(m))
	for k, v := range m {
		small[k] = v
	}
	return small, len(small)
}

// rowOf is a cached entry's row, unpacked when packed.
func (e *Engine) rowOf(ip netip.Addr, ent *entry) *aggregate.Row {
	if ent.row != nil {
		return ent.row
	}
	return ent.packed.Unpack(ip.String(), e.names)
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
// filled the cache, or ctx ends.
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
// counts as carried by carrier: it was published before, so a new request
// for it is redundant, while a redelivery of that very record (the crash
// came between the row and the enriched event) publishes it again.
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

// newEntry wraps a finished row for the cache, packed when that loses nothing.
func (e *Engine) newEntry(row *aggregate.Row, expiresAt time.Time) *entry {
	ent := &entry{row: row, complete: row.Complete(), expiresAt: expiresAt.UnixNano(), cachedAt: row.CachedAt.UnixNano(), encoded: new([2]atomic.Pointer[[]byte])}
	// Packed whenever that loses nothing kept: a partial row is merged
	// into from its unpacked copy, and one without raw responses (a storm
	// of rate-limited lookups makes 100,000 of them) has none to keep.
	if !e.conf.KeepRaw || !row.HasRaw() {
		if packed, ok := row.Pack(); ok {
			ent.row, ent.packed = nil, packed
		}
	}
	return ent
}
