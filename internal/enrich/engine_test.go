package enrich

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/decnet/decnet-stream/internal/aggregate"
	"github.com/decnet/decnet-stream/internal/providers"
)

// providerServer is a local stand-in for all four providers: it answers
// like the real APIs (shapes from the recorded fixtures), counts requests per
// provider and IP, and can be made to fail or to hold requests.
type providerServer struct {
	*httptest.Server
	mu       sync.Mutex
	calls    map[string]map[string]int // provider → ip → requests
	failing  map[string]bool           // provider → answer 500
	hold     chan struct{}             // when set, greynoise waits on it
	feedHits atomic.Int32
}

func newProviderServer(t testing.TB) *providerServer {
	ps := &providerServer{calls: map[string]map[string]int{}, failing: map[string]bool{}}
	mux := http.NewServeMux()
	mux.HandleFunc("/v3/community/{ip}", func(w http.ResponseWriter, r *http.Request) {
		ip := r.PathValue("ip")
		if ps.count(providers.NameGreyNoise, ip, w) {
			return
		}
		ps.mu.Lock()
		hold := ps.hold
		ps.mu.Unlock()
		if hold != nil {
			select {
			case <-hold:
			case <-r.Context().Done():
				return
			}
		}
		fmt.Fprintf(w, `{"ip":%q,"noise":true,"riot":false,"classification":"malicious","name":"unknown","last_seen":"2025-06-15","message":"Success"}`, ip)
	})
	mux.HandleFunc("/api/v2/check", func(w http.ResponseWriter, r *http.Request) {
		ip := r.URL.Query().Get("ipAddress")
		if ps.count(providers.NameAbuseIPDB, ip, w) {
			return
		}
		fmt.Fprintf(w, `{"data":{"ipAddress":%q,"isPublic":true,"ipVersion":4,"isWhitelisted":false,"abuseConfidenceScore":37,"countryCode":"FR","usageType":"Data Center/Web Hosting/Transit","isp":"Example","domain":"example.net","hostnames":[],"isTor":false,"totalReports":4,"numDistinctUsers":2,"lastReportedAt":"2025-06-15T06:41:09+00:00"}}`, ip)
	})
	mux.HandleFunc("/api/v1/", func(w http.ResponseWriter, r *http.Request) {
		if ps.count(providers.NameThreatFox, "any", w) {
			return
		}
		fmt.Fprint(w, `{"query_status":"no_result","data":"Your search did not yield any results"}`)
	})
	mux.HandleFunc("/feodo.json", func(w http.ResponseWriter, r *http.Request) {
		ps.feedHits.Add(1)
		fmt.Fprint(w, `[{"ip_address":"45.0.0.1","port":443,"status":"online","hostname":null,"as_number":64496,"as_name":"EX","country":"FR","first_seen":"2025-06-01 00:00:00","last_online":"2025-06-15","malware":"QakBot"}]`)
	})
	ps.Server = httptest.NewServer(mux)
	t.Cleanup(ps.Close)
	return ps
}

// count records a request and, when the provider is failing, answers 500.
func (ps *providerServer) count(provider, ip string, w http.ResponseWriter) bool {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.calls[provider] == nil {
		ps.calls[provider] = map[string]int{}
	}
	ps.calls[provider][ip]++
	if ps.failing[provider] {
		w.WriteHeader(500)
		fmt.Fprint(w, `{"message":"Encountered error while performing request"}`)
		return true
	}
	return false
}

func (ps *providerServer) total(provider string) int {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	n := 0
	for _, c := range ps.calls[provider] {
		n += c
	}
	return n
}

func (ps *providerServer) setFailing(provider string, on bool) {
	ps.mu.Lock()
	ps.failing[provider] = on
	ps.mu.Unlock()
}

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) Add(d time.Duration) { c.mu.Lock(); c.now = c.now.Add(d); c.mu.Unlock() }

func allProviders(ps *providerServer) []providers.Provider {
	common := func() providers.Common {
		return providers.Common{BaseURL: ps.URL, Limits: providers.Limits{Timeout: 10 * time.Second, Retries: 0}}
	}
	return []providers.Provider{
		providers.NewGreyNoise(providers.GreyNoiseConfig{Common: common()}),
		providers.NewAbuseIPDB(providers.AbuseIPDBConfig{Common: common(), APIKey: "k"}),
		providers.NewFeodo(providers.FeodoConfig{URL: ps.URL + "/feodo.json"}),
		providers.NewThreatFox(providers.ThreatFoxConfig{Common: common(), AuthKey: "k"}),
	}
}

func ipN(i int) netip.Addr { return netip.AddrFrom4([4]byte{45, 1, byte(i >> 8), byte(i)}) }

func reqs(n int, carrier string) []Request {
	rs := make([]Request, n)
	for i := range rs {
		rs[i] = Request{IP: ipN(i)}
		if carrier != "" {
			rs[i].Carrier = Carrier{Topic: carrier, Offset: int64(i)}
		}
	}
	return rs
}

// 64 concurrent batches over the same 1,000 IPs make exactly one call per
// IP to each per-IP provider, and one feed fetch.
func TestCoalescingOneCallPerIPPerProvider(t *testing.T) {
	ps := newProviderServer(t)
	e := New(Config{Providers: allProviders(ps), MaxWait: 30 * time.Second})
	var wg sync.WaitGroup
	var changed atomic.Int32
	for b := 0; b < 64; b++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, a := range e.Enrich(context.Background(), reqs(1000, ""), nil) {
				if a.Row() == nil || a.Row().AggregateVerdict != "malicious" {
					t.Errorf("row %+v", a.Row())
					return
				}
				if a.Changed {
					changed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	for _, p := range []string{providers.NameGreyNoise, providers.NameAbuseIPDB} {
		if got := ps.total(p); got != 1000 {
			t.Errorf("%s: %d calls for 1,000 IPs", p, got)
		}
		for ip, n := range ps.calls[p] {
			if n != 1 {
				t.Errorf("%s: %s asked %d times", p, ip, n)
			}
		}
	}
	if got := ps.total(providers.NameThreatFox); got != 1000 {
		t.Errorf("threatfox: %d calls", got)
	}
	if got := ps.feedHits.Load(); got != 1 {
		t.Errorf("feodo: %d feed fetches", got)
	}
	if changed.Load() != 1000 {
		t.Errorf("%d events carried a change, want exactly one per IP (1,000)", changed.Load())
	}
}

// A provider that does not answer does not hold the batch past max_wait;
// its late answer reaches the cache and the next event's row.
func TestSlowProviderIsDeferredAndFillsTheCacheLater(t *testing.T) {
	ps := newProviderServer(t)
	ps.hold = make(chan struct{})
	e := New(Config{Providers: allProviders(ps), MaxWait: 100 * time.Millisecond})
	ip := []Request{{IP: ipN(1), Carrier: Carrier{Topic: "t", Partition: 0, Offset: 1}}}

	start := time.Now()
	a := e.Enrich(context.Background(), ip, nil)[0]
	if waited := time.Since(start); waited > 5*time.Second {
		t.Fatalf("the batch waited %v for a held provider", waited)
	}
	if a.Outcome != OutcomePartial || a.Row().Status.Of(providers.NameGreyNoise) != aggregate.StatusDeferred || !a.Changed {
		t.Fatalf("first answer: %s, greynoise %q, changed %v", a.Outcome, a.Row().Status.Of(providers.NameGreyNoise), a.Changed)
	}
	if a.Row().Status.Of(providers.NameAbuseIPDB) != aggregate.StatusOK {
		t.Fatalf("abuseipdb answered at once but is %q", a.Row().Status.Of(providers.NameAbuseIPDB))
	}
	// The partial row is stamped: its version must order before the
	// complete row's, or ClickHouse keeps the partial one.
	if a.Row().CachedAt.IsZero() || a.Row().ExpiresAt.IsZero() {
		t.Fatalf("the deferred row is unstamped: cached_at %v, expires_at %v", a.Row().CachedAt, a.Row().ExpiresAt)
	}

	close(ps.hold) // the late answer arrives
	if err := e.Settle(context.Background()); err != nil {
		t.Fatal(err)
	}
	b := e.Enrich(context.Background(), []Request{{IP: ipN(1), Carrier: Carrier{Topic: "t", Partition: 0, Offset: 2}}}, nil)[0]
	if b.Outcome != OutcomeHit || !b.Changed || b.Row().Status.Of(providers.NameGreyNoise) != aggregate.StatusOK || b.Row().GreyNoiseClassification == nil {
		t.Fatalf("next sighting: %s changed=%v greynoise=%q", b.Outcome, b.Changed, b.Row().Status.Of(providers.NameGreyNoise))
	}
	if !b.Row().CachedAt.After(a.Row().CachedAt) {
		t.Fatalf("the complete row (cached %v) does not order after the deferred one (%v)", b.Row().CachedAt, a.Row().CachedAt)
	}
	if c := e.Enrich(context.Background(), []Request{{IP: ipN(1), Carrier: Carrier{Topic: "t", Partition: 0, Offset: 3}}}, nil)[0]; c.Changed {
		t.Fatal("a third sighting carried the same change again")
	}
	if ps.total(providers.NameGreyNoise) != 1 {
		t.Fatalf("greynoise asked %d times", ps.total(providers.NameGreyNoise))
	}
}

// A failed provider is asked again after negative_ttl, and its answer is
// merged without losing the other providers' fields.
func TestFailedProviderRetriedAfterNegativeTTL(t *testing.T) {
	ps := newProviderServer(t)
	clock := &fakeClock{now: time.Date(2025, 6, 15, 8, 0, 0, 0, time.UTC)}
	e := New(Config{Providers: allProviders(ps), Now: clock.Now, TTL: 24 * time.Hour, NegativeTTL: 10 * time.Minute, MaxWait: 10 * time.Second})
	ps.setFailing(providers.NameAbuseIPDB, true)
	a := e.Enrich(context.Background(), reqs(1, "c"), nil)[0]
	if a.Row().Status.Of(providers.NameAbuseIPDB) != string(providers.ErrHTTPStatus) || a.Row().Complete() {
		t.Fatalf("first: %v", a.Row().Status)
	}
	if e.Enrich(context.Background(), reqs(1, "d"), nil)[0].Changed {
		t.Fatal("a cache hit within negative_ttl carried a change")
	}
	ps.setFailing(providers.NameAbuseIPDB, false)
	clock.Add(12 * time.Minute)
	b := e.Enrich(context.Background(), reqs(1, "e"), nil)[0]
	if !b.Changed || b.Row().AbuseIPDBScore == nil || *b.Row().AbuseIPDBScore != 37 || b.Row().GreyNoiseClassification == nil || !b.Row().Complete() {
		t.Fatalf("after negative_ttl: changed=%v status=%v", b.Changed, b.Row().Status)
	}
	if ps.total(providers.NameAbuseIPDB) != 2 || ps.total(providers.NameGreyNoise) != 1 {
		t.Fatalf("abuseipdb asked %d times (want 2), greynoise %d (want 1: only the failed one is asked again)",
			ps.total(providers.NameAbuseIPDB), ps.total(providers.NameGreyNoise))
	}
}

// A hot IP is looked up again once its TTL passed: expiry is fixed from the
// fetch, not slid by every hit.
func TestExpiredHotIPIsLookedUpAgain(t *testing.T) {
	ps := newProviderServer(t)
	clock := &fakeClock{now: time.Date(2025, 6, 15, 8, 0, 0, 0, time.UTC)}
	e := New(Config{Providers: allProviders(ps), Now: clock.Now, TTL: time.Hour, MaxWait: 10 * time.Second})
	for i := 0; i < 70; i++ { // a hit every minute for 70 minutes
		e.Enrich(context.Background(), reqs(1, ""), nil)
		clock.Add(time.Minute)
	}
	if n := ps.total(providers.NameGreyNoise); n != 2 {
		t.Fatalf("greynoise asked %d times in 70 minutes of hits with a 1h TTL (±5%%), want 2", n)
	}
}

func TestMaxEntriesBoundsTheCache(t *testing.T) {
	ps := newProviderServer(t)
	var evicted atomic.Int32
	e := New(Config{Providers: allProviders(ps)[:1], MaxEntries: 100, MaxWait: 10 * time.Second, Observer: evictCounter{&evicted}})
	e.Enrich(context.Background(), reqs(1000, ""), nil)
	if e.Len() != 100 || evicted.Load() != 900 {
		t.Fatalf("cache holds %d rows after 1,000 IPs with max_entries 100; %d evicted", e.Len(), evicted.Load())
	}
}

type evictCounter struct{ n *atomic.Int32 }

func (evictCounter) ProviderResult(providers.Result) {}
func (evictCounter) Deferred(string)                 {}
func (c evictCounter) Evicted()                      { c.n.Add(1) }

// A redelivered event that carried a change carries it again; repeats in a
// batch and later sightings do not.
func TestChangeCarriersUnderRedelivery(t *testing.T) {
	ps := newProviderServer(t)
	e := New(Config{Providers: allProviders(ps), MaxWait: 10 * time.Second})
	batch := []Request{{IP: ipN(1), Carrier: Carrier{Topic: "t", Partition: 0, Offset: 10}}, {IP: ipN(1), Carrier: Carrier{Topic: "t", Partition: 0, Offset: 11}}, {IP: ipN(2), Carrier: Carrier{Topic: "t", Partition: 1, Offset: 5}}}
	got := e.Enrich(context.Background(), batch, nil)
	if !got[0].Changed || got[1].Changed || !got[2].Changed {
		t.Fatalf("first delivery changed = %v %v %v, want true false true", got[0].Changed, got[1].Changed, got[2].Changed)
	}
	again := e.Enrich(context.Background(), batch, nil) // the batch was nacked downstream
	if !again[0].Changed || again[1].Changed || !again[2].Changed {
		t.Fatalf("redelivery changed = %v %v %v, want true false true", again[0].Changed, again[1].Changed, again[2].Changed)
	}
	if later := e.Enrich(context.Background(), []Request{{IP: ipN(1), Carrier: Carrier{Topic: "t", Partition: 0, Offset: 99}}}, nil); later[0].Changed {
		t.Fatal("a later sighting carried an old change")
	}
}

// Budget-aware priority: below the reserve, low-priority lookups leave the
// provider's last calls to high-priority ones.
func TestBudgetReserveKeepsLastCallsForPriority(t *testing.T) {
	ps := newProviderServer(t)
	gn := providers.NewGreyNoise(providers.GreyNoiseConfig{Common: providers.Common{BaseURL: ps.URL,
		Limits: providers.Limits{DailyBudget: 10, Timeout: 10 * time.Second}}})
	e := New(Config{Providers: []providers.Provider{gn}, BudgetReserve: 0.5, PriorityThreshold: 5, MaxWait: 10 * time.Second})
	for i := 0; i < 10; i++ {
		e.Enrich(context.Background(), []Request{{IP: ipN(i)}}, func(int) float64 { return 1 })
	}
	if n := ps.total(providers.NameGreyNoise); n != 5 {
		t.Fatalf("low-priority lookups spent %d of 10, want 5 (half kept in reserve)", n)
	}
	low := e.Enrich(context.Background(), []Request{{IP: ipN(50)}}, func(int) float64 { return 1 })[0]
	if low.Row().Status.Of(providers.NameGreyNoise) != aggregate.StatusReserved {
		t.Fatalf("low priority got %q", low.Row().Status.Of(providers.NameGreyNoise))
	}
	high := e.Enrich(context.Background(), []Request{{IP: ipN(51)}}, func(int) float64 { return 9 })[0]
	if high.Row().Status.Of(providers.NameGreyNoise) != aggregate.StatusOK {
		t.Fatalf("high priority got %q", high.Row().Status.Of(providers.NameGreyNoise))
	}
}

// A miss asks the shared store first: a complete row there costs no
// provider call and is not published again; a partial one is completed.
func TestSecondLevelIsAskedBeforeProviders(t *testing.T) {
	ps := newProviderServer(t)
	names := []string{providers.NameGreyNoise, providers.NameAbuseIPDB, providers.NameFeodo, providers.NameThreatFox}
	shared := func(ip netip.Addr, complete bool) *aggregate.Row {
		r := aggregate.NewRow(ip.String(), names)
		for _, n := range names {
			if complete || n != providers.NameAbuseIPDB {
				r.Restore(n, aggregate.StatusOK, providers.VerdictBenign)
			}
		}
		r.AggregateVerdict = "benign"
		r.ExpiresAt = time.Now().Add(time.Hour)
		return r
	}
	e := New(Config{Providers: allProviders(ps), MaxWait: 10 * time.Second,
		SecondLevel: func(_ context.Context, ip netip.Addr) (*aggregate.Row, Carrier) {
			return shared(ip, ip == ipN(1)), Carrier{Topic: "t", Offset: 1}
		}})
	got := e.Enrich(context.Background(), []Request{{IP: ipN(1)}, {IP: ipN(2)}}, nil)
	if got[0].Changed || got[0].Verdict() != "benign" {
		t.Fatalf("complete shared row: changed=%v verdict=%s", got[0].Changed, got[0].Verdict())
	}
	if !got[1].Changed || got[1].Row().Status.Of(providers.NameAbuseIPDB) != aggregate.StatusOK {
		t.Fatalf("partial shared row not completed: %v", got[1].Row().Status.Of(providers.NameAbuseIPDB))
	}
	if ps.total(providers.NameGreyNoise) != 0 || ps.total(providers.NameAbuseIPDB) != 1 {
		t.Fatalf("providers asked: greynoise %d (want 0), abuseipdb %d (want 1, for the partial row)",
			ps.total(providers.NameGreyNoise), ps.total(providers.NameAbuseIPDB))
	}
}

// A preloaded row is not published again by a new sighting, but is by a
// redelivery of the record that published it before the restart.
func TestPreloadedRowRepublishesOnlyForItsCarrier(t *testing.T) {
	ps := newProviderServer(t)
	e := New(Config{Providers: allProviders(ps), MaxWait: 10 * time.Second})
	row := aggregate.NewRow(ipN(1).String(), e.Names())
	for _, n := range e.Names() {
		row.Restore(n, aggregate.StatusOK, providers.VerdictMalicious)
	}
	row.ExpiresAt = time.Now().Add(time.Hour)
	carrier := Carrier{Topic: "attacker.observed", Partition: 2, Offset: 41}
	e.Preload(ipN(1), row, carrier)
	if a := e.Enrich(context.Background(), []Request{{IP: ipN(1), Carrier: Carrier{Topic: "attacker.observed", Partition: 2, Offset: 99}}}, nil)[0]; a.Changed {
		t.Fatal("a new sighting republished a preloaded row")
	}
	if a := e.Enrich(context.Background(), []Request{{IP: ipN(1), Carrier: carrier}}, nil)[0]; !a.Changed {
		t.Fatal("the redelivered carrier did not republish")
	}
	if ps.total(providers.NameGreyNoise) != 0 {
		t.Fatal("a preloaded row was looked up")
	}
}

// A repeat sighting costs a cache lookup: its priority (a Bloblang mapping
// over the event, in the processor) is computed only for a lookup that starts.
func TestPriorityIsComputedOnlyForLookups(t *testing.T) {
	ps := newProviderServer(t)
	e := New(Config{Providers: allProviders(ps), MaxWait: 10 * time.Second})
	asked := map[int]int{}
	count := func(k int) float64 { asked[k]++; return 1 }
	e.Enrich(context.Background(), []Request{{IP: ipN(1)}}, count)
	if asked[0] != 1 {
		t.Fatalf("a miss computed its priority %d times, want 1", asked[0])
	}
	clear(asked)
	e.Enrich(context.Background(), []Request{{IP: ipN(1)}, {IP: ipN(1)}, {IP: ipN(2)}}, count)
	if asked[0] != 0 || asked[1] != 0 || asked[2] != 1 {
		t.Fatalf("priorities computed %v, want only the new IP's (index 2)", asked)
	}
}
