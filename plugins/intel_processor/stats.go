package intel_processor

import (
	"slices"
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
	pc := providerCounters(res.Provider)
	if res.Requests > 0 {
		stats.providerCalls.Add(int64(res.Requests))
		pc.calls.Add(int64(res.Requests))
	}
	if res.OK() {
		pc.answers.Add(1)
		return
	}
	if res.ErrKind == providers.ErrCovered {
		pc.covered.Add(1)
		return
	}
	stats.errs.Add(1)
	c, _ := pc.errors.LoadOrStore(string(res.ErrKind), new(atomic.Int64))
	c.(*atomic.Int64).Add(1)
}

// perProvider are one provider's process-wide counters.
type perProvider struct {
	calls, answers atomic.Int64
	covered        atomic.Int64 // not asked: a bulk list answered (skip_when)
	errors         sync.Map     // kind → *atomic.Int64
}

var (
	byProvider sync.Map // name → *perProvider
	// running are the providers of the processors running in this process,
	// for their quotas: the dev summary says which limit bites and why.
	running sync.Map // name → providers.Provider
)

func providerCounters(name string) *perProvider {
	pc, _ := byProvider.LoadOrStore(name, new(perProvider))
	return pc.(*perProvider)
}

func registerProviders(ps []providers.Provider) {
	for _, p := range ps {
		running.Store(p.Name(), p)
		providerCounters(p.Name())
	}
}

// ProviderStatus is one provider's figures since start, for people.
type ProviderStatus struct {
	Name           string
	Calls, Answers int64
	// Covered counts IPs this provider was not asked about because a feed
	// in its skip_when listed them: calls saved.
	Covered int64
	Errors  map[string]int64 // by kind
	// Quota is the provider's standing against its limits; nil for one
	// without (a feed).
	Quota *providers.Quota
	// FeedEntries and FeedAge describe a feed's last good copy.
	FeedEntries int
	FeedAge     time.Duration
	FeedErr     error
}

// ProviderStatuses are the running providers' figures, in provider order.
func ProviderStatuses() []ProviderStatus {
	var out []ProviderStatus
	running.Range(func(k, v any) bool {
		name := k.(string)
		pc := providerCounters(name)
		st := ProviderStatus{Name: name, Calls: pc.calls.Load(), Answers: pc.answers.Load(), Covered: pc.covered.Load(), Errors: map[string]int64{}}
		pc.errors.Range(func(k, v any) bool {
			st.Errors[k.(string)] = v.(*atomic.Int64).Load()
			return true
		})
		switch p := v.(type) {
		case providers.Quoted:
			q := p.Quota()
			st.Quota = &q
		case providers.Feed:
			st.FeedEntries, st.FeedAge, st.FeedErr = p.FeedStatus()
		}
		out = append(out, st)
		return true
	})
	slices.SortFunc(out, func(a, b ProviderStatus) int { return providers.Index(a.Name) - providers.Index(b.Name) })
	return out
}
