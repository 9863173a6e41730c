package providers

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// testClock is a clock a test moves by hand.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *testClock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// After UTC midnight a spent budget is whole again for readers too:
// Remaining decides the reserve for low-priority lookups, and must not keep
// a provider reserved until some request happens to roll the day over.
func TestRemainingRollsOverAtMidnight(t *testing.T) {
	clock := &testClock{now: time.Date(2025, 6, 15, 23, 0, 0, 0, time.UTC)}
	srv := newFixtureServer(t, 200, nil, okGreyNoise)
	c := testCommon(srv.URL)
	c.Now, c.Limits.DailyBudget = clock.Now, 3
	p := NewGreyNoise(GreyNoiseConfig{Common: c})
	for range 3 {
		p.Lookup(context.Background(), netip.MustParseAddr("203.0.113.45"))
	}
	if p.Remaining() != 0 {
		t.Fatalf("remaining %d after spending the budget", p.Remaining())
	}
	clock.Add(2 * time.Hour)
	if got := p.Remaining(); got != 3 {
		t.Fatalf("remaining %d after UTC midnight, want the whole budget (3)", got)
	}
}

// greyNoise429 is a GreyNoise client whose server answers every request 429
// with headers and body, on a test clock at 2025-06-15 08:06 UTC.
func greyNoise429(t *testing.T, headers map[string]string, body []byte) (*GreyNoise, *fixtureServer, *testClock) {
	t.Helper()
	clock := &testClock{now: time.Date(2025, 6, 15, 8, 6, 0, 0, time.UTC)}
	srv := newFixtureServer(t, 429, headers, body)
	c := testCommon(srv.URL)
	c.Now = clock.Now
	return NewGreyNoise(GreyNoiseConfig{Common: c}), srv, clock
}

// GreyNoise's Community quota is daily: its 429 blocks until the next UTC
// midnight, not for a minute (which would send ~1,440 wasted requests a day).
func TestGreyNoise429BlocksUntilMidnight(t *testing.T) {
	p, srv, clock := greyNoise429(t, nil, []byte(`{"plan":"unauthenticated","rate-limit":"100-lookups/day","message":"You have hit your daily rate limit"}`))
	ip := netip.MustParseAddr("203.0.113.45")
	if res := p.Lookup(context.Background(), ip); res.ErrKind != ErrRateLimited {
		t.Fatalf("first: %s", res.ErrKind)
	}
	clock.Add(2 * time.Hour)
	res := p.Lookup(context.Background(), ip)
	if srv.count() != 1 || res.ErrKind != ErrQuotaExhausted || !strings.Contains(res.Err, "2025-06-16T00:00:00Z") {
		t.Fatalf("two hours later: %s (%s) with %d requests sent; want quota_exhausted until 2025-06-16T00:00:00Z and no request", res.ErrKind, res.Err, srv.count())
	}
	if q := p.Quota(); q.BlockKind != ErrQuotaExhausted || !q.BlockedUntil.Equal(time.Date(2025, 6, 16, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("Quota() = %+v", q)
	}
}

// A GreyNoise 429 that says when to retry (a paid plan's per-second limit,
// or a proxy in front of the API) is believed: blocking it until midnight
// would lose a day of lookups to a one-second limit.
func TestGreyNoise429WithRetryAfterBlocksForIt(t *testing.T) {
	p, srv, clock := greyNoise429(t, map[string]string{"Retry-After": "1"}, []byte(`{"message":"rate limit"}`))
	ip := netip.MustParseAddr("203.0.113.45")
	if res := p.Lookup(context.Background(), ip); res.ErrKind != ErrRateLimited {
		t.Fatalf("first: %s", res.ErrKind)
	}
	if q := p.Quota(); q.BlockKind != ErrRateLimited || !q.BlockedUntil.Equal(clock.Now().Add(time.Second)) {
		t.Fatalf("Quota() = %+v, want rate_limited for the second Retry-After gives", q)
	}
	if res := p.Lookup(context.Background(), ip); res.ErrKind != ErrRateLimited || srv.count() != 1 {
		t.Fatalf("during Retry-After: %s with %d requests sent", res.ErrKind, srv.count())
	}
	clock.Add(2 * time.Second)
	p.Lookup(context.Background(), ip)
	if srv.count() != 2 {
		t.Fatalf("after Retry-After: %d requests, want 2", srv.count())
	}
}

// Retry-After may be an HTTP-date (RFC 9110), not only seconds.
func TestRetryAfterAsAnHTTPDate(t *testing.T) {
	clock := &testClock{now: time.Date(2025, 6, 15, 8, 6, 0, 0, time.UTC)}
	srv := newFixtureServer(t, 429, map[string]string{"Retry-After": "Sun, 15 Jun 2025 09:00:00 GMT"}, []byte(`{"errors":[{"detail":"slow down","status":429}]}`))
	c := testCommon(srv.URL)
	c.Now = clock.Now
	p := NewAbuseIPDB(AbuseIPDBConfig{Common: c, APIKey: "k"})
	ip := netip.MustParseAddr("203.0.113.45")
	p.Lookup(context.Background(), ip)
	clock.Add(30 * time.Minute) // 08:36: still before the date
	p.Lookup(context.Background(), ip)
	if srv.count() != 1 {
		t.Fatalf("%d requests before the Retry-After date, want 1", srv.count())
	}
	clock.Add(30 * time.Minute) // 09:06
	p.Lookup(context.Background(), ip)
	if srv.count() != 2 {
		t.Fatalf("%d requests after the Retry-After date, want 2", srv.count())
	}
}

// A corrupt budget file must not hand out a whole budget again: it is
// treated as spent for the day, kept aside for the operator, and said so.
func TestCorruptBudgetFileCountsAsSpent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "budget.json")
	if err := os.WriteFile(path, []byte(`{"greynoise":{"day":"2025-06-15","us`), 0o600); err != nil {
		t.Fatal(err)
	}
	store, err := OpenBudgetStore(path)
	if err != nil {
		t.Fatal(err)
	}
	if w := store.Warning(); !strings.Contains(w, "unreadable") || !strings.Contains(w, "spent") {
		t.Fatalf("warning %q", w)
	}
	if kept, _ := filepath.Glob(path + ".corrupt-*"); len(kept) != 1 {
		t.Fatalf("the corrupt file was not kept aside: %v", kept)
	}
	clock := &testClock{now: time.Date(2025, 6, 15, 8, 6, 0, 0, time.UTC)}
	srv := newFixtureServer(t, 200, nil, okGreyNoise)
	c := testCommon(srv.URL)
	c.Now, c.Budget, c.Limits.DailyBudget = clock.Now, store, 100
	p := NewGreyNoise(GreyNoiseConfig{Common: c})
	if res := p.Lookup(context.Background(), netip.MustParseAddr("203.0.113.45")); res.ErrKind != ErrQuotaExhausted || srv.count() != 0 {
		t.Fatalf("with a corrupt budget file: %s, %d requests", res.ErrKind, srv.count())
	}
	clock.Add(24 * time.Hour) // the next day is a new budget
	if res := p.Lookup(context.Background(), netip.MustParseAddr("203.0.113.45")); !res.OK() {
		t.Fatalf("the next day: %s (%s)", res.ErrKind, res.Err)
	}
}

// The state file is replaced atomically through a temporary file of its
// own (two stores on one folder never share a temp name) and synced.
func TestBudgetFileIsWrittenAtomically(t *testing.T) {
	dir := t.TempDir()
	a, _ := OpenBudgetStore(filepath.Join(dir, "a.json"))
	a.save("greynoise", budgetState{Day: "2025-06-15", Used: 7}, true)
	b, err := os.ReadFile(filepath.Join(dir, "a.json"))
	if err != nil || !strings.Contains(string(b), `"used":7`) {
		t.Fatalf("%s %v", b, err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "*.tmp*")); len(left) != 0 {
		t.Fatalf("temporary files left behind: %v", left)
	}
}

// A key is named in metrics by a fingerprint that does not reveal it.
func TestKeyIDNamesAKeyWithoutRevealingIt(t *testing.T) {
	id := KeyID("sekrit-abuseipdb-key-123")
	if len(id) != 8 || strings.Contains("sekrit-abuseipdb-key-123", id) || id != KeyID("sekrit-abuseipdb-key-123") {
		t.Fatalf("KeyID = %q", id)
	}
	if KeyID("") != "none" || KeyID("a") == KeyID("b") {
		t.Fatal("keyless or distinct keys not told apart")
	}
}

// A request that reserved its token before the provider said "Retry-After"
// is not sent during the block: it waited for its token, then finds the
// provider blocked, and is recorded rate_limited. Sent anyway, it earned
// another 429 and another block (the storm benchmark: 56% of the allowed
// rate used, all of the loss in such blocks).
func TestAWaitingRequestIsNotSentIntoABlock(t *testing.T) {
	g := newGate("p", Limits{RatePerSecond: 20, Burst: 1}, nil, nil, time.Now)
	release, kind, _ := g.acquire(context.Background())
	if kind != ErrNone {
		t.Fatal("first request refused")
	}
	release()
	done := make(chan ErrorKind)
	go func() {
		release, kind, _ := g.acquire(context.Background()) // waits ~50ms for its token
		if release != nil {
			release()
		}
		done <- kind
	}()
	for g.bucket.Tokens() >= 0 { // until the waiting request holds its reservation
		runtime.Gosched()
	}
	g.block(time.Now().Add(time.Minute), ErrRateLimited) // the provider answered 429, Retry-After 60
	if kind := <-done; kind != ErrRateLimited {
		t.Fatalf("the waiting request went out during the block (%q)", kind)
	}
}

// Sends are metered as they actually leave: after any pause, at most the
// burst goes back to back, and a send that would have to wait past the
// request's deadline is refused rather than sent late in a bunch.
func TestSendsLeaveNoMoreThanTheBurstBackToBack(t *testing.T) {
	g := newGate("p", Limits{RatePerSecond: 1, Burst: 3}, nil, nil, nil) // idle: a full burst
	past := WithAcquireDeadline(context.Background(), time.Now().Add(-time.Second))
	for i := range 3 {
		if !g.meter(past) {
			t.Fatalf("send %d of the burst refused", i+1)
		}
	}
	if g.meter(past) {
		t.Fatal("a fourth send left back to back (burst 3 at 1/s)")
	}
}

// A 429 inside our own rate means the provider meters a smaller burst than
// ours, or our spaced sends reached it bunched (a stalled network or
// process delivers them together): after one, at most half the burst goes
// back to back, until a minute passes without another.
func TestA429HalvesTheBurstSentBackToBackForAMinute(t *testing.T) {
	clock := &testClock{now: time.Date(2025, 6, 15, 8, 0, 0, 0, time.UTC)}
	g := newGate("p", Limits{RatePerSecond: 1, Burst: 4}, nil, nil, clock.Now) // idle: a full burst
	past := WithAcquireDeadline(context.Background(), time.Now().Add(-time.Second))
	backToBack := func() (n int) {
		for g.meter(past) {
			n++
		}
		return n
	}
	g.throttled()
	if n := backToBack(); n != 2 {
		t.Fatalf("after a 429, %d sends left back to back, want 2 (half of the burst of 4)", n)
	}
	clock.Add(59 * time.Second)
	backToBack()
	if b := g.sends.Burst(); b != 2 {
		t.Fatalf("within the minute after a 429 the burst is %d again, want 2", b)
	}
	clock.Add(time.Second)
	backToBack()
	if b := g.sends.Burst(); b != 4 {
		t.Fatalf("a minute after the last 429 the burst is %d, want 4 again", b)
	}
	one := newGate("p", Limits{RatePerSecond: 1, Burst: 1}, nil, nil, clock.Now)
	one.throttled()
	if b := one.sends.Burst(); b != 1 {
		t.Fatalf("a burst of 1 was halved to %d", b)
	}
}
