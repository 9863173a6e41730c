package providers

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var okGreyNoise = []byte(`{"ip":"203.0.113.45","noise":true,"riot":false,"classification":"malicious","name":"unknown","last_seen":"2025-06-15","message":"Success"}`)

func TestSlowResponsePastTheTimeoutIsATimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	c := testCommon(srv.URL)
	c.Limits.Timeout = 50 * time.Millisecond
	res := NewGreyNoise(GreyNoiseConfig{Common: c}).Lookup(context.Background(), netip.MustParseAddr("203.0.113.45"))
	if res.ErrKind != ErrTimeout {
		t.Fatalf("got %s (%s), want timeout", res.ErrKind, res.Err)
	}
}

func TestOversizedBodyIsRefused(t *testing.T) {
	big := append([]byte(`{"ip":"203.0.113.45","noise":true,"riot":false,"classification":"malicious","name":"`), make([]byte, 2<<20)...)
	srv := newFixtureServer(t, 200, nil, big)
	c := testCommon(srv.URL)
	c.Limits.MaxBodyBytes = 1 << 20
	res := NewGreyNoise(GreyNoiseConfig{Common: c}).Lookup(context.Background(), netip.MustParseAddr("203.0.113.45"))
	if res.ErrKind != ErrParse || !strings.Contains(res.Err, "over") || len(res.Raw) > MaxRawBytes {
		t.Fatalf("got %s (%s), raw %d bytes", res.ErrKind, res.Err, len(res.Raw))
	}
}

func TestConnectionResetIsANetworkErrorAndRetried(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			if tc, ok := conn.(*net.TCPConn); ok {
				_ = tc.SetLinger(0) // RST, not FIN
			}
			conn.Close()
		}
	}))
	defer srv.Close()
	c := testCommon(srv.URL)
	c.Limits.Retries = 2
	res := NewGreyNoise(GreyNoiseConfig{Common: c}).Lookup(context.Background(), netip.MustParseAddr("203.0.113.45"))
	if res.ErrKind != ErrNetwork {
		t.Fatalf("got %s (%s), want network", res.ErrKind, res.Err)
	}
	if calls.Load() != 3 {
		t.Fatalf("%d attempts, want 1 + 2 retries", calls.Load())
	}
}

func TestRetryAfterBlocksFurtherRequests(t *testing.T) {
	now := time.Date(2025, 6, 15, 8, 6, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	srv := newFixtureServer(t, 429, map[string]string{"Retry-After": "120", "X-RateLimit-Remaining": "3"}, []byte(`{"errors":[{"detail":"slow down","status":429}]}`))
	c := testCommon(srv.URL)
	c.Now = clock
	p := NewAbuseIPDB(AbuseIPDBConfig{Common: c, APIKey: "k"})
	ip := netip.MustParseAddr("203.0.113.45")
	if res := p.Lookup(context.Background(), ip); res.ErrKind != ErrRateLimited {
		t.Fatalf("first: %s", res.ErrKind)
	}
	if res := p.Lookup(context.Background(), ip); res.ErrKind != ErrRateLimited || srv.count() != 1 {
		t.Fatalf("during Retry-After: %s with %d requests sent", res.ErrKind, srv.count())
	}
	now = now.Add(121 * time.Second)
	_ = p.Lookup(context.Background(), ip)
	if srv.count() != 2 {
		t.Fatalf("after Retry-After: %d requests, want 2", srv.count())
	}
}

func TestDailyBudgetRunsOutMidBurstAndSurvivesRestart(t *testing.T) {
	srv := newFixtureServer(t, 200, nil, okGreyNoise)
	now := time.Date(2025, 6, 15, 23, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	store, err := OpenBudgetStore(filepath.Join(t.TempDir(), "budget.json"))
	if err != nil {
		t.Fatal(err)
	}
	build := func(s *BudgetStore) *GreyNoise {
		c := testCommon(srv.URL)
		c.Now, c.Budget = clock, s
		c.Limits.DailyBudget = 5
		return NewGreyNoise(GreyNoiseConfig{Common: c})
	}
	p := build(store)
	ip := netip.MustParseAddr("203.0.113.45")
	var wg sync.WaitGroup
	var exhausted atomic.Int32
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if p.Lookup(context.Background(), ip).ErrKind == ErrQuotaExhausted {
				exhausted.Add(1)
			}
		}()
	}
	wg.Wait()
	if srv.count() != 5 || exhausted.Load() != 15 {
		t.Fatalf("%d requests sent and %d quota_exhausted; want 5 and 15", srv.count(), exhausted.Load())
	}
	if p.Remaining() != 0 {
		t.Fatalf("remaining %d", p.Remaining())
	}

	// The count reaches the file within saveEvery, without a clean stop:
	// a crash forgets at most that much.
	for deadline := time.Now().Add(3 * saveEvery); ; {
		b, _ := os.ReadFile(store.path)
		if strings.Contains(string(b), `"used":5`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the budget file never showed 5 used: %s", b)
		}
		time.Sleep(10 * time.Millisecond) // polling a file for a timer's write
	}

	reopened, err := OpenBudgetStore(store.path)
	if err != nil {
		t.Fatal(err)
	}
	again := build(reopened) // a restart the same day
	if res := again.Lookup(context.Background(), ip); res.ErrKind != ErrQuotaExhausted || srv.count() != 5 {
		t.Fatalf("after restart: %s, %d requests", res.ErrKind, srv.count())
	}
	mu.Lock()
	now = now.Add(2 * time.Hour) // past UTC midnight
	mu.Unlock()
	if res := again.Lookup(context.Background(), ip); !res.OK() || srv.count() != 6 {
		t.Fatalf("next day: %s (%s), %d requests", res.ErrKind, res.Err, srv.count())
	}
}

func TestRateLimitAnswersAtOnceWhenNoTokenBeforeTheDeadline(t *testing.T) {
	srv := newFixtureServer(t, 200, nil, okGreyNoise)
	c := testCommon(srv.URL)
	c.Limits.RatePerSecond, c.Limits.Burst = 0.001, 1 // one token, then one every ~17 minutes
	p := NewGreyNoise(GreyNoiseConfig{Common: c})
	ip := netip.MustParseAddr("203.0.113.45")
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if res := p.Lookup(ctx, ip); !res.OK() {
		t.Fatalf("first: %s", res.Err)
	}
	start := time.Now()
	res := p.Lookup(ctx, ip)
	if res.ErrKind != ErrRateLimited || srv.count() != 1 {
		t.Fatalf("second: %s, %d requests", res.ErrKind, srv.count())
	}
	if ctx.Err() != nil {
		t.Fatalf("the lookup waited until the deadline (%v) instead of answering at once", time.Since(start))
	}
}

func TestNoProviderEverSeesANonRoutableAddress(t *testing.T) {
	srv := newFixtureServer(t, 200, nil, okGreyNoise)
	guard, _ := NewGuard(neverQueryForTests)
	c := testCommon(srv.URL)
	c.Guard = guard // production guard: documentation ranges refused too
	ps := []Provider{
		NewGreyNoise(GreyNoiseConfig{Common: c}),
		NewAbuseIPDB(AbuseIPDBConfig{Common: c, APIKey: "k"}),
		NewThreatFox(ThreatFoxConfig{Common: c, AuthKey: "k"}),
	}
	for _, s := range []string{"10.0.0.5", "127.0.0.1", "169.254.169.254", "100.64.1.1", "192.168.0.1", "::1", "fe80::1",
		"fd00::1", "224.0.0.251", "0.0.0.0", "203.0.113.45", "2001:db8::1", "81.2.69.10", "::ffff:10.0.0.5", "198.18.0.1"} {
		for _, p := range ps {
			res := p.Lookup(context.Background(), netip.MustParseAddr(s))
			if res.ErrKind != ErrSkipped {
				t.Errorf("%s of %s: %s, want skipped", p.Name(), s, res.ErrKind)
			}
		}
	}
	if srv.count() != 0 {
		t.Fatalf("%d requests reached the provider server", srv.count())
	}
}

func TestDisabledProvidersSendNothing(t *testing.T) {
	srv := newFixtureServer(t, 200, nil, okGreyNoise)
	ip := netip.MustParseAddr("203.0.113.45")
	for _, p := range []Provider{
		NewAbuseIPDB(AbuseIPDBConfig{Common: testCommon(srv.URL)}),
		NewThreatFox(ThreatFoxConfig{Common: testCommon(srv.URL)}),
	} {
		if res := p.Lookup(context.Background(), ip); res.ErrKind != ErrDisabled {
			t.Errorf("%s without key: %s", p.Name(), res.ErrKind)
		}
	}
	if srv.count() != 0 {
		t.Fatalf("%d requests sent without keys", srv.count())
	}
}

func TestAuthFailureBacksOff(t *testing.T) {
	srv := newFixtureServer(t, 401, nil, []byte(`{"errors":[{"detail":"Authentication failed.","status":401}]}`))
	p := NewAbuseIPDB(AbuseIPDBConfig{Common: testCommon(srv.URL), APIKey: "wrong"})
	ip := netip.MustParseAddr("203.0.113.45")
	for i := 0; i < 5; i++ {
		if res := p.Lookup(context.Background(), ip); res.ErrKind != ErrAuth {
			t.Fatalf("lookup %d: %s", i, res.ErrKind)
		}
	}
	if srv.count() != 1 {
		t.Fatalf("%d requests with bad credentials, want 1 then back off", srv.count())
	}
}

// max_queue_wait bounds the wait for a token below the caller's deadline:
// past it the lookup is rate_limited at once, without a request.
func TestMaxQueueWaitAnswersRateLimitedAtOnce(t *testing.T) {
	srv := newFixtureServer(t, 200, nil, okGreyNoise)
	c := testCommon(srv.URL)
	c.Limits.RatePerSecond, c.Limits.Burst, c.Limits.MaxQueueWait = 1, 1, 50*time.Millisecond
	p := NewGreyNoise(GreyNoiseConfig{Common: c})
	ip := netip.MustParseAddr("203.0.113.45")
	ctx := WithAcquireDeadline(context.Background(), time.Now().Add(10*time.Second))
	if res := p.Lookup(ctx, ip); res.ErrKind == ErrRateLimited {
		t.Fatal("the first lookup had a token")
	}
	if res := p.Lookup(ctx, ip); res.ErrKind != ErrRateLimited {
		t.Fatalf("second lookup: %s, want rate_limited (the next token is 1s away, past max_queue_wait)", res.ErrKind)
	}
	if srv.count() != 1 {
		t.Fatalf("%d requests, want 1", srv.count())
	}
}

// TLS to providers is verified: a server whose certificate no CA vouches for
// gets no request, and the lookup records a network error.
func TestProviderTLSIsVerified(t *testing.T) {
	var requests atomic.Int32
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { requests.Add(1) }))
	defer srv.Close()
	p := NewGreyNoise(GreyNoiseConfig{Common: testCommon(srv.URL)})
	res := p.Lookup(context.Background(), netip.MustParseAddr("203.0.113.45"))
	if res.ErrKind != ErrNetwork || !strings.Contains(res.Err, "certificate") {
		t.Fatalf("lookup over unverifiable TLS: %s %v, want a network error about the certificate", res.ErrKind, res.Err)
	}
	if requests.Load() != 0 {
		t.Fatalf("the server got %d requests over a TLS connection that should not have been made", requests.Load())
	}
}
