package intel_processor

import (
	"sync"
	"time"

	"github.com/redpanda-data/benthos/v4/public/service"

	"github.com/decnet/decnet-stream/internal/enrich"
	"github.com/decnet/decnet-stream/internal/providers"
)

// metrics are the processor's counters, named like Benthos' own.
type metrics struct {
	hits, misses, coalesced, partial, evictions *service.MetricCounter
	requests, lookedUp, emitted                 *service.MetricCounter
	calls, errors, deferred, skipped            *service.MetricCounter
	invalid                                     *service.MetricCounter
	verdicts                                    *service.MetricCounter // emitted rows by aggregate verdict
	latency                                     *service.MetricTimer
	// Quota per provider (budget left) and per provider and key, and
	// answers by where they came from.
	budget, callsToday, dailyBudget, blockedUntil *service.MetricGauge
	answers                                       *service.MetricCounter
	quoted                                        map[string]providers.Quoted
	// Feeds: when the copy in service was downloaded (its age is time()
	// minus it, right even while nothing is looked up) and its size.
	feedLoaded, feedEntries *service.MetricGauge
	feeds                   map[string]providers.Feed
	// gauges holds each labelled gauge's last value, so that a gauge is
	// set only when it changes: a labelled Set resolves its labels in
	// Benthos on every call (set once per provider answer, unchanged
	// gauges were 8% of a storm's CPU; they are now set per batch with
	// answers and every second, see providerGauges).
	gauges gaugeCache
	// tallies holds the per-answer labelled counters' increments until
	// the next flush (at the end of each batch, every second, and on
	// Close): a labelled Incr resolves its labels in Benthos on every call,
	// and every provider answer made one or two (the storm profile: 6% of
	// the process).
	tallies   tally
	stop      chan struct{}
	stopped   chan struct{}
	closeOnce sync.Once
}

// tallyKey names one labelled counter series.
type tallyKey struct {
	c      *service.MetricCounter
	l1, l2 string
}

// tally sums counter increments per series between flushes.
type tally struct {
	mu      sync.Mutex
	pending map[tallyKey]int64
}

func (t *tally) add(c *service.MetricCounter, n int64, l1, l2 string) {
	t.mu.Lock()
	if t.pending == nil {
		t.pending = map[tallyKey]int64{}
	}
	t.pending[tallyKey{c, l1, l2}] += n
	t.mu.Unlock()
}

// flush hands every pending sum to incr (its counter's, in flushCounters).
// It reports whether there was anything.
func (t *tally) flush(incr func(k tallyKey, n int64)) bool {
	t.mu.Lock()
	if t.pending == nil {
		t.mu.Unlock()
		return false
	}
	pending := t.pending
	t.pending = nil
	t.mu.Unlock()
	for k, n := range pending {
		incr(k, n)
	}
	return true
}

func incrCounter(k tallyKey, n int64) {
	if k.l2 == "" {
		k.c.Incr(n, k.l1)
	} else {
		k.c.Incr(n, k.l1, k.l2)
	}
}

// run flushes the tallies every second until close.
func (m *metrics) run() {
	defer close(m.stopped)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			m.tallies.flush(incrCounter)
			m.providerGauges() // right even while nothing is looked up
		case <-m.stop:
			m.tallies.flush(incrCounter)
			m.providerGauges()
			return
		}
	}
}

// flush hands a batch's provider answers to their counters and, when
// there were any, brings the providers' gauges up to date.
func (m *metrics) flush() {
	if m.tallies.flush(incrCounter) {
		m.providerGauges()
	}
}

// providerGauges sets each feed's load time and size and each budgeted
// provider's quota. They change when a feed reloads or a call is paid for,
// not per answer: set per answer, every lookup read each feed's status
// and set its gauges again.
func (m *metrics) providerGauges() {
	for name, f := range m.feeds {
		if entries, age, _ := f.FeedStatus(); entries > 0 {
			m.set(m.feedLoaded, time.Now().Add(-age).Unix(), name)
			m.set(m.feedEntries, int64(entries), name)
		}
	}
	for name, qp := range m.quoted {
		q := qp.Quota()
		if q.Budget > 0 {
			m.set(m.budget, int64(q.Remaining), name)
		}
		m.set(m.callsToday, int64(q.Used), name, q.KeyID)
		m.set(m.dailyBudget, int64(q.Budget), name, q.KeyID)
		var until int64
		if q.Blocked(time.Now()) {
			until = q.BlockedUntil.Unix()
		}
		m.set(m.blockedUntil, until, name, q.KeyID)
	}
}

// close flushes what is pending and stops the flusher (once).
func (m *metrics) close() {
	m.closeOnce.Do(func() { close(m.stop) })
	<-m.stopped
}

// gaugeKey names one labelled gauge series.
type gaugeKey struct {
	g          *service.MetricGauge
	label, key string
}

// gaugeCache remembers the value each gauge series was last set to.
type gaugeCache struct {
	mu   sync.Mutex
	last map[gaugeKey]int64
}

// setIfChanged calls set unless k already holds v. set runs under the
// lock: two answers racing cannot leave a gauge at the older value while
// the cache holds the newer one (which would skip every later set of it).
func (c *gaugeCache) setIfChanged(k gaugeKey, v int64, set func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, seen := c.last[k]; seen && old == v {
		return
	}
	if c.last == nil {
		c.last = map[gaugeKey]int64{}
	}
	c.last[k] = v
	set()
}

// set sets gauge g's series (provider, and key when it has one) to v
// unless it already holds v.
func (m *metrics) set(g *service.MetricGauge, v int64, provider string, key ...string) {
	k := gaugeKey{g: g, label: provider}
	if len(key) > 0 {
		k.key = key[0]
	}
	m.gauges.setIfChanged(k, v, func() { g.Set(v, append([]string{provider}, key...)...) })
}

func newMetrics(m *service.Metrics, provs []providers.Provider) *metrics {
	mt := &metrics{
		hits:         m.NewCounter("intel_cache_hits"),
		misses:       m.NewCounter("intel_cache_misses"),
		coalesced:    m.NewCounter("intel_cache_coalesced"),
		partial:      m.NewCounter("intel_cache_partial"),
		evictions:    m.NewCounter("intel_cache_evictions"),
		requests:     m.NewCounter("intel_lookup_requests"),
		lookedUp:     m.NewCounter("intel_lookups"),
		emitted:      m.NewCounter("intel_enriched"),
		verdicts:     m.NewCounter("intel_verdicts", "verdict"),
		calls:        m.NewCounter("intel_provider_requests", "provider"),
		errors:       m.NewCounter("intel_provider_errors", "provider", "kind"),
		deferred:     m.NewCounter("intel_deferred", "provider"),
		skipped:      m.NewCounter("intel_skipped", "reason"),
		invalid:      m.NewCounter("intel_invalid_ip"),
		latency:      m.NewTimer("intel_provider_latency_ns", "provider"),
		budget:       m.NewGauge("intel_provider_budget_remaining", "provider"),
		callsToday:   m.NewGauge("intel_provider_calls_today", "provider", "key"),
		dailyBudget:  m.NewGauge("intel_provider_daily_budget", "provider", "key"),
		blockedUntil: m.NewGauge("intel_provider_blocked_until_seconds", "provider", "key"),
		answers:      m.NewCounter("intel_provider_answers", "provider", "source"),
		quoted:       map[string]providers.Quoted{},
		feedLoaded:   m.NewGauge("intel_feed_loaded_seconds", "provider"),
		feedEntries:  m.NewGauge("intel_feed_entries", "provider"),
		feeds:        map[string]providers.Feed{},
	}
	for _, p := range provs {
		if qp, ok := p.(providers.Quoted); ok {
			mt.quoted[p.Name()] = qp
		}
		if f, ok := p.(providers.Feed); ok {
			mt.feeds[p.Name()] = f
		}
	}
	mt.stop, mt.stopped = make(chan struct{}), make(chan struct{})
	go mt.run()
	return mt
}

// sightings counts a batch's sightings (and emit: all's annotated events),
// in the metrics and the heartbeat's process-wide counters alike: tallied
// first, then added once per counter, so a batch of repeat sightings costs
// a few atomic adds.
func (m *metrics) sightings(answers []enrich.Answer) {
	var hits, partial, misses, requests, emitted int64
	for _, a := range answers {
		switch {
		case a.Cached && a.Outcome == enrich.OutcomePartial:
			partial++
		case a.Cached:
			hits++
		default:
			misses++
		}
		if a.Request {
			requests++
		}
		if a.Emit && !a.Cached {
			emitted++
			m.verdict(a.Verdict())
		}
	}
	add(m.hits, hits)
	add(m.partial, partial)
	add(m.misses, misses)
	add(m.requests, requests)
	stats.events.Add(int64(len(answers)))
	stats.hits.Add(hits + partial)
	stats.misses.Add(misses)
	stats.requests.Add(requests)
	stats.changes.Add(emitted)
}

// lookups counts a batch's lookup requests: looked up (or coalesced onto a
// running lookup), redundant (the row was current), and emitted.
func (m *metrics) lookups(answers []enrich.Answer) {
	var looked, coalesced, partial, emitted int64
	for _, a := range answers {
		switch {
		case a.Coalesced:
			coalesced++
		case !a.Cached && !a.NoRow:
			looked++
		}
		if a.Outcome == enrich.OutcomePartial && !a.Cached {
			partial++
		}
		if a.Emit {
			emitted++
			m.verdict(a.Verdict())
		}
	}
	add(m.lookedUp, looked)
	add(m.coalesced, coalesced)
	add(m.emitted, emitted)
	stats.lookups.Add(looked)
	stats.coalesced.Add(coalesced)
	stats.partial.Add(partial)
	stats.changes.Add(emitted)
}

func add(c *service.MetricCounter, n int64) {
	if n > 0 {
		c.Incr(n)
	}
}

// skip counts an IP passed through without a lookup.
func (m *metrics) skip(why string) {
	m.skipped.Incr(1, why)
	stats.skipped.Add(1)
}

// invalidIP counts an event refused for its IP.
func (m *metrics) invalidIP() {
	m.invalid.Incr(1)
	stats.invalid.Add(1)
}

func (m *metrics) ProviderResult(res providers.Result) {
	countProvider(res)
	if res.Requests > 0 {
		m.tallies.add(m.calls, int64(res.Requests), res.Provider, "")
		m.latency.Timing(res.Latency.Nanoseconds(), res.Provider)
	}
	switch {
	case res.ErrKind == providers.ErrCovered:
		// Answered by a bulk list instead: not an error, a call saved.
		m.tallies.add(m.answers, 1, res.Provider, "covered")
	case !res.OK():
		m.tallies.add(m.errors, 1, res.Provider, string(res.ErrKind))
	default:
		source := "per_ip"
		if _, ok := m.feeds[res.Provider]; ok {
			source = "feed"
		}
		m.tallies.add(m.answers, 1, res.Provider, source)
	}
}

// verdict counts an emitted row's aggregate verdict, in the metrics and
// the heartbeat's counters.
func (m *metrics) verdict(v string) {
	countVerdict(v)
	m.verdicts.Incr(1, v)
}

func (m *metrics) Deferred(provider string) { m.deferred.Incr(1, provider) }
func (m *metrics) Evicted()                 { m.evictions.Incr(1) }
