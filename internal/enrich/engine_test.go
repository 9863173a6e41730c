package enrich

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"runtime"
	"strings"
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

func (ps *providerServer) ipCalls(provider, ip string) int {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return ps.calls[provider][ip]
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
// IP to each per-IP provider, one feed fetch, and one emission per IP.
func TestCoalescingOneCallPerIPPerProvider(t *testing.T) {
	ps := newProviderServer(t)
	e := New(Config{Providers: allProviders(ps), MaxWait: 30 * time.Second})
	var wg sync.WaitGroup
	var emitted atomic.Int32
	for b := 0; b < 64; b++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, a := range e.Lookup(reqs(1000, fmt.Sprint("batch", b)), nil) {
				if a.NoRow || a.Row().AggregateVerdict != "malicious" || !a.Row().Complete() {
					t.Errorf("row %+v", a.Row())
					return
				}
				if a.Emit {
					emitted.Add(1)
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
	if emitted.Load() != 1000 {
		t.Errorf("%d requests emitted a row, want exactly one per IP (1,000)", emitted.Load())
	}
}

// Case 4 of the review: a lookup that outlives max_wait used to fill only
// the cache, its answer published only if another event happened to come.
// A lookup request now waits for every provider it asked: the row it emits
// is the whole answer, paid for once, and nothing is left to publish later.
func TestSlowProviderIsWaitedForNotDeferred(t *testing.T) {
	ps := newProviderServer(t)
	ps.hold = make(chan struct{})
	e := New(Config{Providers: allProviders(ps), MaxWait: 50 * time.Millisecond})
	got := make(chan Answer)
	go func() { got <- e.Lookup([]Request{{IP: ipN(1), Carrier: Carrier{Topic: "l", Offset: 1}}}, nil)[0] }()
	for ps.ipCalls(providers.NameGreyNoise, ipN(1).String()) == 0 {
		time.Sleep(time.Millisecond) // polling the server for the held request
	}
	close(ps.hold) // answers well after max_wait
	a := <-got
	if !a.Emit || !a.Row().Complete() || a.Row().Status.Of(providers.NameGreyNoise) != aggregate.StatusOK || a.Row().GreyNoiseClassification == nil {
		t.Fatalf("emit %v, statuses %v", a.Emit, a.Row().Status)
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
	a := e.Lookup(reqs(1, "c"), nil)[0]
	if a.Row().Status.Of(providers.NameAbuseIPDB) != string(providers.ErrHTTPStatus) || a.Row().Complete() || !a.Emit {
		t.Fatalf("first: %v", a.Row().Status)
	}
	if e.Lookup(reqs(1, "d"), nil)[0].Emit {
		t.Fatal("a request within negative_ttl emitted the row again")
	}
	ps.setFailing(providers.NameAbuseIPDB, false)
	clock.Add(12 * time.Minute)
	b := e.Lookup(reqs(1, "e"), nil)[0]
	if !b.Emit || b.Row().AbuseIPDBScore == nil || *b.Row().AbuseIPDBScore != 37 || b.Row().GreyNoiseClassification == nil || !b.Row().Complete() {
		t.Fatalf("after negative_ttl: emit=%v status=%v", b.Emit, b.Row().Status)
	}
	if ps.total(providers.NameAbuseIPDB) != 2 || ps.total(providers.NameGreyNoise) != 1 {
		t.Fatalf("abuseipdb asked %d times (want 2), greynoise %d (want 1: only the failed one is asked again)",
			ps.total(providers.NameAbuseIPDB), ps.total(providers.NameGreyNoise))
	}
}

// Case 3 of the review: when a complete row expired and its refresh failed
// (rate limit, budget, outage: routine on free tiers), the earlier answers
// were dropped and a row with verdict "none" replaced the known one. A
// failure never overwrites an answer: the refreshed row keeps each earlier
// answer, marked stale, and its verdict.
func TestFailedRefreshKeepsTheLastAnswers(t *testing.T) {
	ps := newProviderServer(t)
	clock := &fakeClock{now: time.Date(2025, 6, 15, 8, 0, 0, 0, time.UTC)}
	e := New(Config{Providers: allProviders(ps), Now: clock.Now, TTL: time.Hour, NegativeTTL: 10 * time.Minute, MaxWait: 10 * time.Second})
	first := e.Lookup(reqs(1, "a"), nil)[0].Row()
	if first.AggregateVerdict != "malicious" || !first.Complete() {
		t.Fatalf("first: %s %v", first.AggregateVerdict, first.Status)
	}
	clock.Add(2 * time.Hour) // expired
	for _, p := range []string{providers.NameGreyNoise, providers.NameAbuseIPDB, providers.NameThreatFox} {
		ps.setFailing(p, true)
	}
	a := e.Lookup(reqs(1, "b"), nil)[0]
	r := a.Row()
	if !a.Emit || r.AggregateVerdict != "malicious" || r.GreyNoiseClassification == nil || *r.GreyNoiseClassification != "malicious" ||
		r.AbuseIPDBScore == nil || *r.AbuseIPDBScore != 37 {
		t.Fatalf("after a failed refresh: emit %v, verdict %s, columns %v %v", a.Emit, r.AggregateVerdict, r.GreyNoiseClassification, r.AbuseIPDBScore)
	}
	for _, p := range []string{providers.NameGreyNoise, providers.NameAbuseIPDB, providers.NameThreatFox} {
		if r.Status.Of(p) != aggregate.StatusStale {
			t.Errorf("%s is %q, want stale", p, r.Status.Of(p))
		}
	}
	if !r.CachedAt.After(first.CachedAt) || !r.GreyNoiseQueriedAt.Equal(*first.GreyNoiseQueriedAt) {
		t.Fatalf("the stale answer's age is lost: queried %v, first %v", r.GreyNoiseQueriedAt, first.GreyNoiseQueriedAt)
	}
	// Still failing after negative_ttl: the same row, not a new version.
	clock.Add(11 * time.Minute)
	if b := e.Lookup(reqs(1, "c"), nil)[0]; b.Emit || !b.Row().CachedAt.Equal(r.CachedAt) {
		t.Fatalf("an unchanged retry emitted (%v) a new version (%v, was %v)", b.Emit, b.Row().CachedAt, r.CachedAt)
	}
	if n := ps.total(providers.NameGreyNoise); n != 3 {
		t.Fatalf("greynoise asked %d times, want 3 (first, refresh, retry)", n)
	}
}

// A hot IP is looked up again once its TTL passed: expiry is fixed from the
// fetch, not slid by every hit.
func TestExpiredHotIPIsLookedUpAgain(t *testing.T) {
	ps := newProviderServer(t)
	clock := &fakeClock{now: time.Date(2025, 6, 15, 8, 0, 0, 0, time.UTC)}
	e := New(Config{Providers: allProviders(ps), Now: clock.Now, TTL: time.Hour, MaxWait: 10 * time.Second})
	for i := 0; i < 70; i++ { // a sighting every minute for 70 minutes
		if a := e.Sight(reqs(1, "s"), false)[0]; a.Request {
			e.Lookup(reqs(1, fmt.Sprint("l", i)), nil)
		}
		clock.Add(time.Minute)
	}
	if n := ps.total(providers.NameGreyNoise); n != 2 {
		t.Fatalf("greynoise asked %d times in 70 minutes of sightings with a 1h TTL (±5%%), want 2", n)
	}
}

// Versions (cached_at) of one IP only grow, even when the clock that made
// the last one ran ahead (another replica's, read back by a warm start).
func TestVersionsOfAnIPOnlyGrow(t *testing.T) {
	ps := newProviderServer(t)
	clock := &fakeClock{now: time.Date(2025, 6, 15, 8, 0, 0, 0, time.UTC)}
	e := New(Config{Providers: allProviders(ps), Now: clock.Now, TTL: time.Hour, MaxWait: 10 * time.Second})
	ahead := aggregate.NewRow(ipN(0).String(), e.Names())
	for _, n := range e.Names() {
		ahead.Restore(n, aggregate.StatusOK, providers.VerdictBenign)
	}
	ahead.CachedAt = clock.Now().Add(time.Hour)
	ahead.ExpiresAt = clock.Now().Add(30 * time.Minute)
	e.Preload(ipN(0), ahead, Carrier{Topic: "t", Offset: 1})
	clock.Add(40 * time.Minute) // expired here, though stamped in the future
	v2 := e.Lookup(reqs(1, "b"), nil)[0].Row().CachedAt
	if !v2.After(ahead.CachedAt) {
		t.Fatalf("the new version %v is not after the last one %v: ClickHouse would keep the old row", v2, ahead.CachedAt)
	}
}

func TestMaxEntriesBoundsTheCache(t *testing.T) {
	ps := newProviderServer(t)
	var evicted atomic.Int32
	e := New(Config{Providers: allProviders(ps)[:1], MaxEntries: 100, MaxWait: 10 * time.Second, Observer: evictCounter{&evicted}})
	for _, a := range e.Lookup(reqs(1000, "t"), nil) {
		if !a.Emit {
			t.Fatal("a lookup whose entry was evicted by its own batch did not emit its row")
		}
	}
	if e.Len() != 100 || evicted.Load() != 900 {
		t.Fatalf("cache holds %d rows after 1,000 IPs with max_entries 100; %d evicted", e.Len(), evicted.Load())
	}
}

type evictCounter struct{ n *atomic.Int32 }

func (evictCounter) ProviderResult(providers.Result) {}
func (evictCounter) Deferred(string)                 {}
func (c evictCounter) Evicted()                      { c.n.Add(1) }

// A redelivered request that emitted a row emits it again; repeats in a
// batch and later requests do not.
func TestEmittersUnderRedelivery(t *testing.T) {
	ps := newProviderServer(t)
	e := New(Config{Providers: allProviders(ps), MaxWait: 10 * time.Second})
	batch := []Request{{IP: ipN(1), Carrier: Carrier{Topic: "t", Partition: 0, Offset: 10}}, {IP: ipN(1), Carrier: Carrier{Topic: "t", Partition: 0, Offset: 11}}, {IP: ipN(2), Carrier: Carrier{Topic: "t", Partition: 1, Offset: 5}}}
	got := e.Lookup(batch, nil)
	if !got[0].Emit || got[1].Emit || !got[2].Emit {
		t.Fatalf("first delivery emit = %v %v %v, want true false true", got[0].Emit, got[1].Emit, got[2].Emit)
	}
	again := e.Lookup(batch, nil) // the batch was nacked downstream
	if !again[0].Emit || again[1].Emit || !again[2].Emit {
		t.Fatalf("redelivery emit = %v %v %v, want true false true", again[0].Emit, again[1].Emit, again[2].Emit)
	}
	if later := e.Lookup([]Request{{IP: ipN(1), Carrier: Carrier{Topic: "t", Partition: 0, Offset: 99}}}, nil); later[0].Emit {
		t.Fatal("a later request emitted an old row")
	}
}

// Case 1 of the review: only the first request of each IP in a batch was
// checked against the stored carrier, so a redelivered carrier behind an
// earlier sighting of the same IP (batch [offset 40, offset 41 = carrier])
// was taken for an in-batch repeat: the row was in ClickHouse, its
// enriched event never published. Every request is checked now.
func TestRedeliveredCarrierEmitsWhereverItSitsInItsBatch(t *testing.T) {
	ps := newProviderServer(t)
	e := New(Config{Providers: allProviders(ps), MaxWait: 10 * time.Second})
	row := aggregate.NewRow(ipN(1).String(), e.Names())
	for _, n := range e.Names() {
		row.Restore(n, aggregate.StatusOK, providers.VerdictMalicious)
	}
	row.ExpiresAt = time.Now().Add(time.Hour)
	carrier := Carrier{Topic: "attacker.intel.lookup", Partition: 2, Offset: 41}
	e.Preload(ipN(1), row, carrier) // the restart's warm start
	got := e.Lookup([]Request{{IP: ipN(1), Carrier: Carrier{Topic: "attacker.intel.lookup", Partition: 2, Offset: 40}}, {IP: ipN(1), Carrier: carrier}}, nil)
	if got[0].Emit || !got[1].Emit {
		t.Fatalf("emit = %v %v, want the carrier (offset 41) to emit", got[0].Emit, got[1].Emit)
	}
	if ps.total(providers.NameGreyNoise) != 0 {
		t.Fatal("a preloaded row was looked up")
	}
}

// Sightings never wait. The first that misses sends the IP's lookup request,
// later ones do not while it is on its way; a redelivery of the sighting
// that sent it sends it again (its write may have failed), and so does a
// sighting after request_ttl (the request may have been lost).
func TestSightSendsOneRequestPerIP(t *testing.T) {
	ps := newProviderServer(t)
	clock := &fakeClock{now: time.Date(2025, 6, 15, 8, 0, 0, 0, time.UTC)}
	e := New(Config{Providers: allProviders(ps), Now: clock.Now, RequestTTL: time.Minute, MaxWait: 10 * time.Second})
	at := func(off int64) []Request { return []Request{{IP: ipN(1), Carrier: Carrier{Topic: "s", Offset: off}}} }
	if a := e.Sight(at(1), true)[0]; !a.Request || a.Cached {
		t.Fatalf("first sighting: %+v", a)
	}
	if a := e.Sight(at(2), true)[0]; a.Request || !a.NoRow {
		t.Fatal("a second sighting sent another request")
	}
	if a := e.Sight(at(1), true)[0]; !a.Request {
		t.Fatal("the redelivered requester did not send its request again")
	}
	clock.Add(2 * time.Minute)
	if a := e.Sight(at(3), true)[0]; !a.Request {
		t.Fatal("after request_ttl no request was sent")
	}
	e.Lookup(at(100), nil)
	if a := e.Sight(at(4), true)[0]; a.Request || !a.Cached || a.Outcome != OutcomeHit {
		t.Fatalf("after the lookup: %+v", a)
	}
	if ps.total(providers.NameGreyNoise) != 1 {
		t.Fatal("sightings looked something up")
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
		e.Lookup([]Request{{IP: ipN(i)}}, func(int) float64 { return 1 })
	}
	if n := ps.total(providers.NameGreyNoise); n != 5 {
		t.Fatalf("low-priority lookups spent %d of 10, want 5 (half kept in reserve)", n)
	}
	low := e.Lookup([]Request{{IP: ipN(50)}}, func(int) float64 { return 1 })[0]
	if low.Row().Status.Of(providers.NameGreyNoise) != aggregate.StatusReserved {
		t.Fatalf("low priority got %q", low.Row().Status.Of(providers.NameGreyNoise))
	}
	high := e.Lookup([]Request{{IP: ipN(51)}}, func(int) float64 { return 9 })[0]
	if high.Row().Status.Of(providers.NameGreyNoise) != aggregate.StatusOK {
		t.Fatalf("high priority got %q", high.Row().Status.Of(providers.NameGreyNoise))
	}
}

// The priority is a Bloblang mapping over the event, run when a lookup
// starts: where no provider has a daily budget to keep a reserve of, no
// answer depends on it, and a storm of new attackers should not pay for it.
func TestPriorityIsAskedOnlyWhereABudgetHasAReserve(t *testing.T) {
	ps := newProviderServer(t)
	for _, budget := range []int{0, 10} {
		gn := providers.NewGreyNoise(providers.GreyNoiseConfig{Common: providers.Common{BaseURL: ps.URL,
			Limits: providers.Limits{DailyBudget: budget, Timeout: 10 * time.Second}}})
		e := New(Config{Providers: []providers.Provider{gn}, BudgetReserve: 0.5, PriorityThreshold: 5, MaxWait: 10 * time.Second})
		var asked atomic.Int32
		e.Lookup([]Request{{IP: ipN(budget)}, {IP: ipN(budget + 1)}}, func(int) float64 { asked.Add(1); return 1 })
		if want := map[bool]int32{true: 2, false: 0}[budget > 0]; asked.Load() != want {
			t.Fatalf("daily budget %d: the priority was asked %d times for two lookups, want %d", budget, asked.Load(), want)
		}
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
		r.ExpiresAt = time.Now().Add(time.Hour)
		return r
	}
	e := New(Config{Providers: allProviders(ps), MaxWait: 10 * time.Second,
		SecondLevel: func(_ context.Context, ip netip.Addr) (*aggregate.Row, Carrier) {
			return shared(ip, ip == ipN(1)), Carrier{Topic: "t", Offset: 1}
		}})
	got := e.Lookup([]Request{{IP: ipN(1), Carrier: Carrier{Topic: "t", Offset: 7}}, {IP: ipN(2), Carrier: Carrier{Topic: "t", Offset: 8}}}, nil)
	if got[0].Emit || got[0].Verdict() != "benign" {
		t.Fatalf("complete shared row: emit=%v verdict=%s", got[0].Emit, got[0].Verdict())
	}
	if !got[1].Emit || got[1].Row().Status.Of(providers.NameAbuseIPDB) != aggregate.StatusOK {
		t.Fatalf("partial shared row not completed: %v", got[1].Row().Status.Of(providers.NameAbuseIPDB))
	}
	if ps.total(providers.NameGreyNoise) != 0 || ps.total(providers.NameAbuseIPDB) != 1 {
		t.Fatalf("providers asked: greynoise %d (want 0), abuseipdb %d (want 1, for the partial row)",
			ps.total(providers.NameGreyNoise), ps.total(providers.NameAbuseIPDB))
	}
}

// A repeat sighting costs a cache lookup: its priority (a Bloblang mapping
// over the event, in the processor) is computed only for a lookup that starts
// (here where a daily budget keeps a reserve: see the test above).
func TestPriorityIsComputedOnlyForLookups(t *testing.T) {
	ps := newProviderServer(t)
	gn := providers.NewGreyNoise(providers.GreyNoiseConfig{Common: providers.Common{BaseURL: ps.URL,
		Limits: providers.Limits{DailyBudget: 100, Timeout: 10 * time.Second}}})
	e := New(Config{Providers: []providers.Provider{gn}, BudgetReserve: 0.1, MaxWait: 10 * time.Second})
	asked := map[int]int{}
	count := func(k int) float64 { asked[k]++; return 1 }
	e.Lookup([]Request{{IP: ipN(1)}}, count)
	if asked[0] != 1 {
		t.Fatalf("a miss computed its priority %d times, want 1", asked[0])
	}
	clear(asked)
	e.Lookup([]Request{{IP: ipN(1)}, {IP: ipN(1)}, {IP: ipN(2)}}, count)
	if asked[0] != 0 || asked[1] != 0 || asked[2] != 1 {
		t.Fatalf("priorities computed %v, want only the new IP's (index 2)", asked)
	}
}

// emit: all never holds an event past max_wait: a provider that has not
// answered is deferred in the annotation, and its late answer fills the
// cache for the next event.
func TestAnnotateDefersASlowProviderAndFillsTheCacheLater(t *testing.T) {
	ps := newProviderServer(t)
	ps.hold = make(chan struct{})
	e := New(Config{Providers: allProviders(ps), MaxWait: 100 * time.Millisecond})
	a := e.Annotate(context.Background(), reqs(1, "t"), nil)[0]
	if a.Outcome != OutcomePartial || a.Row().Status.Of(providers.NameGreyNoise) != aggregate.StatusDeferred || !a.Emit {
		t.Fatalf("first: %s, greynoise %q", a.Outcome, a.Row().Status.Of(providers.NameGreyNoise))
	}
	close(ps.hold)
	if err := e.Settle(context.Background()); err != nil {
		t.Fatal(err)
	}
	b := e.Annotate(context.Background(), reqs(1, "t"), nil)[0]
	if b.Outcome != OutcomeHit || b.Row().Status.Of(providers.NameGreyNoise) != aggregate.StatusOK {
		t.Fatalf("next: %s greynoise=%q", b.Outcome, b.Row().Status.Of(providers.NameGreyNoise))
	}
	if ps.total(providers.NameGreyNoise) != 1 {
		t.Fatalf("greynoise asked %d times", ps.total(providers.NameGreyNoise))
	}
}

// skip_when: the bulk lists answer first, and a per-IP provider whose
// skip_when names a list that lists the IP is not asked: covered, the row
// complete without it. An IP no list has is asked as before.
func TestSkipWhenSpendsNoPerIPCallOnAListedIP(t *testing.T) {
	ps := newProviderServer(t)
	var blacklist strings.Builder
	blacklist.WriteString(`{"data":[`)
	for i := 0; i < 500; i++ { // the first 500 of the IPs below
		if i > 0 {
			blacklist.WriteByte(',')
		}
		fmt.Fprintf(&blacklist, `{"ipAddress":%q,"abuseConfidenceScore":100}`, ipN(i))
	}
	blacklist.WriteString(`]}`)
	lists := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, blacklist.String()) }))
	defer lists.Close()
	provs := allProviders(ps)
	provs = append(provs, providers.NewAbuseIPDBBlacklist(providers.BulkListConfig{URLs: []string{lists.URL + "/api/v2/blacklist"}, Key: "k"}))
	e := New(Config{Providers: provs, MaxWait: 30 * time.Second, SkipWhen: map[string][]string{
		providers.NameAbuseIPDB: {providers.NameAbuseIPDBBlacklist, providers.NameFeodo},
		providers.NameGreyNoise: {providers.NameAbuseIPDBBlacklist},
		providers.NameThreatFox: {providers.NameFeodo},
	}})
	for _, a := range e.Lookup(reqs(1000, "t"), nil) {
		r := a.Row()
		listed := r.Listed(providers.NameAbuseIPDBBlacklist)
		if !r.Complete() || r.AggregateVerdict != "malicious" {
			t.Fatalf("%s: complete %v, verdict %s", r.AttackerIP, r.Complete(), r.AggregateVerdict)
		}
		wantAbuse := map[bool]string{true: "covered", false: "ok"}[listed]
		if r.Status.Of(providers.NameAbuseIPDB) != wantAbuse || r.Status.Of(providers.NameGreyNoise) != wantAbuse {
			t.Fatalf("%s listed %v: abuseipdb %s, greynoise %s", r.AttackerIP, listed, r.Status.Of(providers.NameAbuseIPDB), r.Status.Of(providers.NameGreyNoise))
		}
		if n := ps.ipCalls(providers.NameAbuseIPDB, r.AttackerIP); (n == 0) != listed || n > 1 {
			t.Fatalf("%s listed %v: %d /check calls", r.AttackerIP, listed, n)
		}
	}
	if a, g, tf := ps.total(providers.NameAbuseIPDB), ps.total(providers.NameGreyNoise), ps.total(providers.NameThreatFox); a != 500 || g != 500 || tf != 1000 {
		t.Fatalf("calls: abuseipdb %d, greynoise %d (want 500 each: the unlisted IPs), threatfox %d (want 1,000)", a, g, tf)
	}
}

// BenchmarkSightParallel: repeat sightings from 16 goroutines on two cores,
// as the pipeline's threads hand them in, over a cache of 100,000 rows (one
// LRU below shardedFrom entries, sharded from it).
func BenchmarkSightParallel(b *testing.B) {
	for _, maxEntries := range []int{shardedFrom - 1, shardedFrom} {
		b.Run(fmt.Sprintf("shards=%d", len(newLRUShards(maxEntries, nil).s)), func(b *testing.B) {
			e := New(Config{MaxEntries: maxEntries})
			for i := range maxEntries {
				row := aggregate.NewRow(ipN(i).String(), nil)
				row.ExpiresAt = time.Now().Add(time.Hour)
				e.Preload(ipN(i), row, Carrier{})
			}
			b.SetParallelism(8)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				reqs := make([]Request, 500)
				k := 0
				for pb.Next() {
					for i := range reqs {
						reqs[i] = Request{IP: ipN(k % (maxEntries - 1))}
						k += 7919
					}
					if a := e.Sight(reqs, true); !a[0].Cached {
						b.Fatal("not a hit")
					}
				}
			})
			b.ReportMetric(float64(b.N*500)/b.Elapsed().Seconds(), "sightings/s")
		})
	}
}

// A row holding no raw response is cached packed even when raw responses
// are kept: a storm of rate-limited lookups fills the cache with such
// rows, which whole cost about a kilobyte each. Read back, and emitted
// again for the sighting that carried it, it is the row first emitted.
func TestRowWithoutRawIsCachedPackedWhenRawIsKept(t *testing.T) {
	ps := newProviderServer(t)
	for _, name := range []string{providers.NameGreyNoise, providers.NameAbuseIPDB, providers.NameThreatFox} {
		ps.setFailing(name, true)
	}
	e := New(Config{Providers: allProviders(ps), KeepRaw: true, MaxWait: 10 * time.Second})
	first := e.Lookup(reqs(1, "c"), nil)[0]
	if !first.Emit || first.Row().Complete() {
		t.Fatalf("emit %v, complete %v", first.Emit, first.Row().Complete())
	}
	want, _ := json.Marshal(first.Row().Table())
	ent, ok := e.cache.Peek(ipN(0))
	if !ok || ent.row != nil {
		t.Fatalf("cached: %v, whole: %v", ok, ok && ent.row != nil)
	}
	if got, _ := json.Marshal(e.rowOf(ipN(0), ent).Table()); string(got) != string(want) {
		t.Fatalf("read back:\n got %s\nwant %s", got, want)
	}
	again := e.Lookup(reqs(1, "c"), nil)[0]
	if got, _ := json.Marshal(again.Row().Table()); !again.Emit || string(got) != string(want) {
		t.Fatalf("redelivered carrier: emit %v\n got %s\nwant %s", again.Emit, got, want)
	}

	// A row with a raw response stays whole: its raw is what is kept.
	ps.setFailing(providers.NameGreyNoise, false)
	answered := e.Lookup([]Request{{IP: ipN(1), Carrier: Carrier{Topic: "c", Offset: 1}}}, nil)[0]
	if answered.Row().GreyNoiseRaw == nil {
		t.Fatal("greynoise answered without its raw response")
	}
	if ent, ok := e.cache.Peek(ipN(1)); !ok || ent.row == nil {
		t.Fatalf("a row with raw responses was packed (cached: %v)", ok)
	}
}

// A storm of new attackers fills the pending requests (one per IP until
// its row comes back). Go's maps keep their peak size when emptied, so
// without care a process that met one storm keeps its bookkeeping for
// good: the invariant is that the memory is given back once the rows are.
// Two storms, the second measured: by then what earlier tests left behind
// is collected, and a map kept from the first would take the second's
// requests without growing (and would not give them back either).
func TestAStormsPendingRequestsAreGivenBack(t *testing.T) {
	// No providers: rows come back at once. A small cache, so the storm's
	// rows do not stay either and what is left is the bookkeeping.
	e := New(Config{MaxEntries: 1_000, RequestTTL: time.Hour, MaxWait: time.Second})
	const storm = 200_000
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	batch := func(from int, carrier bool) []Request {
		reqs := make([]Request, 1_000)
		for k := range reqs {
			n := from + k
			reqs[k].IP = netip.AddrFrom4([4]byte{11, byte(n >> 16), byte(n >> 8), byte(n)}) // n < 2^24
			if carrier {
				reqs[k].Carrier = Carrier{Topic: "attacker.observed", Offset: int64(n)}
			}
		}
		return reqs
	}
	var pending, after uint64
	for _, first := range []int{0, storm} { // new IPs each time
		for i := first; i < first+storm; i += 1_000 {
			for _, a := range e.Sight(batch(i, true), true) {
				if !a.Request {
					t.Fatal("a new IP sent no lookup request")
				}
			}
		}
		pending = heap()
		for i := first; i < first+storm; i += 1_000 {
			e.Lookup(batch(i, false), nil)
		}
		after = heap()
	}
	// 24 bytes an IP: less than a request's address alone.
	if pending < after+storm*24 {
		t.Fatalf("the second storm's %d pending requests gave back %d KiB once their rows came back: they were kept",
			storm, (int64(pending)-int64(after))>>10)
	}
	t.Logf("the second storm's pending requests gave back %d KiB", (pending-after)>>10)
}

// BenchmarkLookupOfNewAttackersUnderRateLimits: a storm's lookup stage,
// where most new attackers find no token before max_wait: batches of 1,000
// never-seen IPs against three per-IP providers allowed one request an hour
// (so every lookup is rate_limited at once, after the first) and a Feodo
// feed loaded in memory. What each new attacker costs beyond the network.
func BenchmarkLookupOfNewAttackersUnderRateLimits(b *testing.B) {
	ps := newProviderServer(b)
	limited := providers.Common{BaseURL: ps.URL, Limits: providers.Limits{Timeout: 10 * time.Second, RatePerSecond: 1.0 / 3600, Burst: 1}}
	feodo := providers.NewFeodo(providers.FeodoConfig{URL: ps.URL + "/feodo.json"})
	e := New(Config{MaxEntries: 10_000, MaxWait: time.Millisecond, Providers: []providers.Provider{
		providers.NewGreyNoise(providers.GreyNoiseConfig{Common: limited}),
		providers.NewAbuseIPDB(providers.AbuseIPDBConfig{Common: limited, APIKey: "k"}),
		feodo,
		providers.NewThreatFox(providers.ThreatFoxConfig{Common: limited, AuthKey: "k"}),
	}})
	perIP := []string{providers.NameGreyNoise, providers.NameAbuseIPDB, providers.NameThreatFox}
	// Loads the feed and spends each provider's one token: until each has
	// answered once (a lookup may find its deadline gone before a provider
	// had its token, which then stays unspent).
	answered := map[string]bool{}
	for i := 0; len(answered) < len(perIP); i++ {
		if i == 1_000 {
			b.Fatalf("only %v answered in 1,000 lookups", answered)
		}
		row := e.Lookup([]Request{{IP: ipN(i)}}, nil)[0].Row()
		for _, n := range perIP {
			if row.Status.Of(n) == aggregate.StatusOK {
				answered[n] = true
			}
		}
	}
	allLimited := func(a Answer) bool {
		for _, n := range perIP {
			if a.Row().Status.Of(n) != string(providers.ErrRateLimited) {
				return false
			}
		}
		return true
	}
	reqs := make([]Request, 1_000)
	n := 1
	b.ReportAllocs()
	for b.Loop() {
		for k := range reqs {
			reqs[k] = Request{IP: netip.AddrFrom4([4]byte{11, byte(n >> 16), byte(n >> 8), byte(n)})}
			n++
		}
		for _, a := range e.Lookup(reqs, nil) {
			if !allLimited(a) {
				b.Fatalf("%s: a provider was asked: %v", a.Row().AttackerIP, a.Row().Status)
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(reqs)), "ns/IP")
}
