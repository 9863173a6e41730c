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

// outcome counts one enriched event, in the metrics and the heartbeat's
// process-wide counters alike.
func (m *metrics) outcome(a enrich.Answer) {
	switch a.Outcome {
	case enrich.OutcomeHit:
		m.hits.Incr(1)
	case enrich.OutcomeMiss:
		m.misses.Incr(1)
	case enrich.OutcomeCoalesced:
		m.coalesced.Incr(1)
	case enrich.OutcomePartial:
		m.partial.Incr(1)
	}
	countOutcome(a)
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
