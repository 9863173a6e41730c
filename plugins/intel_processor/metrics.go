package intel_processor

import (
	"github.com/redpanda-data/benthos/v4/public/service"

	"github.com/decnet/decnet-stream/internal/enrich"
	"github.com/decnet/decnet-stream/internal/providers"
)

// metrics are the processor's counters, named like Benthos' own.
type metrics struct {
	hits, misses, coalesced, partial, evictions *service.MetricCounter
	requests, errors, deferred, skipped         *service.MetricCounter
	invalid                                     *service.MetricCounter
	latency                                     *service.MetricTimer
	budget                                      *service.MetricGauge
	budgeted                                    map[string]enrich.BudgetedProvider
}

func newMetrics(m *service.Metrics, provs []providers.Provider) *metrics {
	mt := &metrics{
		hits:      m.NewCounter("intel_cache_hits"),
		misses:    m.NewCounter("intel_cache_misses"),
		coalesced: m.NewCounter("intel_cache_coalesced"),
		partial:   m.NewCounter("intel_cache_partial"),
		evictions: m.NewCounter("intel_cache_evictions"),
		requests:  m.NewCounter("intel_provider_requests", "provider"),
		errors:    m.NewCounter("intel_provider_errors", "provider", "kind"),
		deferred:  m.NewCounter("intel_deferred", "provider"),
		skipped:   m.NewCounter("intel_skipped", "reason"),
		invalid:   m.NewCounter("intel_invalid_ip"),
		latency:   m.NewTimer("intel_provider_latency_ns", "provider"),
		budget:    m.NewGauge("intel_provider_budget_remaining", "provider"),
		budgeted:  map[string]enrich.BudgetedProvider{},
	}
	for _, p := range provs {
		if bp, ok := p.(enrich.BudgetedProvider); ok && bp.DailyBudget() > 0 {
			mt.budgeted[p.Name()] = bp
		}
	}
	return mt
}

// outcomes counts a batch's enriched events, in the metrics and the
// heartbeat's process-wide counters alike: tallied first, then added once
// per counter, so a batch of repeat sightings costs a few atomic adds.
func (m *metrics) outcomes(answers []enrich.Answer) {
	var hits, misses, coalesced, partial, cached, partialLookups, changes int64
	for _, a := range answers {
		switch a.Outcome {
		case enrich.OutcomeHit:
			hits++
		case enrich.OutcomeMiss:
			misses++
		case enrich.OutcomeCoalesced:
			coalesced++
		case enrich.OutcomePartial:
			partial++
			if !a.Cached {
				partialLookups++
			}
		}
		if a.Cached {
			cached++
		}
		if a.Changed {
			changes++
			countVerdict(a.Verdict())
		}
	}
	for _, c := range []struct {
		n int64
		m *service.MetricCounter
	}{{hits, m.hits}, {misses, m.misses}, {coalesced, m.coalesced}, {partial, m.partial}} {
		if c.n > 0 {
			c.m.Incr(c.n)
		}
	}
	stats.events.Add(int64(len(answers)))
	stats.hits.Add(cached) // served from the cache, complete or partial
	stats.misses.Add(misses)
	stats.coalesced.Add(coalesced)
	stats.partial.Add(partialLookups)
	stats.changes.Add(changes)
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
	if res.ErrKind != providers.ErrSkipped && res.ErrKind != providers.ErrDisabled {
		m.requests.Incr(1, res.Provider)
		m.latency.Timing(res.Latency.Nanoseconds(), res.Provider)
	}
	if !res.OK() {
		m.errors.Incr(1, res.Provider, string(res.ErrKind))
	}
	if bp, ok := m.budgeted[res.Provider]; ok {
		m.budget.Set(int64(bp.Remaining()), res.Provider)
	}
}

func (m *metrics) Deferred(provider string) { m.deferred.Incr(1, provider) }
func (m *metrics) Evicted()                 { m.evictions.Incr(1) }
