package intel_processor

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/redpanda-data/benthos/v4/public/bloblang"

	"github.com/decnet/decnet-stream/internal/providers"
)

// stats are process-wide counters of every intel_enrich instance, for the
// worker heartbeat (config/streams/heartbeat.yaml reads them with the
// intel_stats() Bloblang function) and the dev summary. Metrics stay the
// place for dashboards; these exist because a heartbeat payload cannot
// read metrics.
var stats struct {
	started                                        time.Time
	events, hits, misses, coalesced, partial       atomic.Int64
	changes, skipped, invalid, providerCalls, errs atomic.Int64
	requests, lookups                              atomic.Int64
	// verdicts counts the aggregate verdicts of changes (enrichments).
	verdicts sync.Map // verdict → *atomic.Int64
}

func init() {
	stats.started = time.Now()
	err := bloblang.RegisterFunctionV2("intel_stats",
		bloblang.NewPluginSpec().
			Category("DECNET").
			Description("Counters of this process's intel_enrich processors since start: uptime_s, events (sightings), cache hits/misses/coalesced/partial, lookup requests sent, lookups made, changes emitted, skipped and invalid IPs, provider calls and errors. Used by the worker heartbeat."),
		func(*bloblang.ParsedParams) (bloblang.Function, error) {
			return func() (any, error) { return Stats(), nil }, nil
		})
	if err != nil {
		panic(err)
	}
}

// Stats is a snapshot of the counters.
func Stats() map[string]any {
	return map[string]any{
		"uptime_s":        int64(time.Since(stats.started).Seconds()),
		"events":          stats.events.Load(),
		"cache_hits":      stats.hits.Load(),
		"cache_misses":    stats.misses.Load(),
		"cache_coalesced": stats.coalesced.Load(),
		"cache_partial":   stats.partial.Load(),
		"lookup_requests": stats.requests.Load(),
		"lookups":         stats.lookups.Load(),
		"changes":         stats.changes.Load(),
		"skipped":         stats.skipped.Load(),
		"invalid_ip":      stats.invalid.Load(),
		"provider_calls":  stats.providerCalls.Load(),
		"provider_errors": stats.errs.Load(),
		"verdicts":        verdictCounts(),
	}
}

func verdictCounts() map[string]any {
	out := map[string]any{}
	stats.verdicts.Range(func(k, v any) bool {
		out[k.(string)] = v.(*atomic.Int64).Load()
		return true
	})
	return out
}

func countVerdict(v string) {
	c, _ := stats.verdicts.LoadOrStore(v, new(atomic.Int64))
	c.(*atomic.Int64).Add(1)
}

func countProvider(res providers.Result) {
	if res.ErrKind != providers.ErrSkipped && res.ErrKind != providers.ErrDisabled {
		stats.providerCalls.Add(1)
	}
	if !res.OK() {
		stats.errs.Add(1)
	}
}
