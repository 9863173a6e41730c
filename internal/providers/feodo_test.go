package providers

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
)

func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	dir, _ := manifest(t)
	return readFile(t, dir, name)
}

func readFile(t testing.TB, dir, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// feedServer serves a feed with an ETag, answering 304 to a matching
// If-None-Match, and counts requests.
type feedServer struct {
	*httptest.Server
	mu       sync.Mutex
	body     []byte
	status   int
	requests atomic.Int32
}

func newFeedServer(t testing.TB, body []byte) *feedServer {
	fs := &feedServer{body: body, status: 200}
	fs.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fs.requests.Add(1)
		fs.mu.Lock()
		body, status := fs.body, fs.status
		fs.mu.Unlock()
		etag := fmt.Sprintf(`"%d"`, len(body))
		if status == 200 && r.Header.Get("If-None-Match") == etag {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Header().Set("ETag", etag)
		w.WriteHeader(status)
		_, _ = w.Write(body)
	}))
	t.Cleanup(fs.Close)
	return fs
}

func (fs *feedServer) set(status int, body []byte) {
	fs.mu.Lock()
	fs.status, fs.body = status, body
	fs.mu.Unlock()
}

func newTestFeodo(url string) *Feodo {
	return NewFeodo(FeodoConfig{URL: url, Guard: testGuard()})
}

func TestFeodoVerdictsFromTheFixtureFeed(t *testing.T) {
	srv := newFeedServer(t, readFixture(t, "feodo/ipblocklist.json"))
	f := newTestFeodo(srv.URL + "/ipblocklist.json")
	ctx := context.Background()
	res := f.Lookup(ctx, netip.MustParseAddr("203.0.113.45"))
	if res.Verdict != VerdictMalicious || res.Feodo.MalwareFamily != "QakBot" || res.Feodo.Status != "online" || len(res.Feodo.Ports) != 2 {
		t.Errorf("203.0.113.45: %+v %+v", res, res.Feodo)
	}
	// DECNET's rules: listed is malicious whatever its status.
	if res := f.Lookup(ctx, netip.MustParseAddr("203.0.113.99")); res.Verdict != VerdictMalicious || res.Feodo.MalwareFamily != "Emotet" || res.Feodo.Status != "offline" {
		t.Errorf("203.0.113.99 (offline only): %s %+v", res.Verdict, res.Feodo)
	}
	if res := f.Lookup(ctx, netip.MustParseAddr("198.51.100.23")); !res.OK() || res.Verdict != VerdictNone || res.Feodo.Listed {
		t.Errorf("absent IP: %+v", res)
	}
	if n := srv.requests.Load(); n != 1 {
		t.Fatalf("%d feed requests for 3 lookups, want 1", n)
	}
	var raw []map[string]any
	if err := json.Unmarshal(res.Raw, &raw); err != nil || len(raw) != 2 {
		t.Errorf("raw entries %s: %v", res.Raw, err)
	}
}

// A stricter policy than DECNET's: a former C2 (offline only) is suspicious.
func TestFeodoUnderAStricterPolicy(t *testing.T) {
	srv := newFeedServer(t, readFixture(t, "feodo/ipblocklist.json"))
	strict := DECNETPolicy()
	strict.Feodo.Offline = VerdictSuspicious
	f := NewFeodo(FeodoConfig{URL: srv.URL + "/ipblocklist.json", Guard: testGuard(), Policy: &strict})
	if res := f.Lookup(context.Background(), netip.MustParseAddr("203.0.113.99")); res.Verdict != VerdictSuspicious {
		t.Fatalf("offline only under the stricter policy: %s", res.Verdict)
	}
}

func TestFeodoOtherFormatsAndEdgeCases(t *testing.T) {
	ctx := context.Background()
	for file, want := range map[string]Verdict{
		"feodo/ipblocklist.csv":              VerdictMalicious,
		"feodo/ipblocklist.txt":              VerdictMalicious,
		"feodo/ipblocklist_recommended.json": VerdictMalicious,
	} {
		srv := newFeedServer(t, readFixture(t, file))
		f := newTestFeodo(srv.URL + "/" + filepath.Base(file))
		if res := f.Lookup(ctx, netip.MustParseAddr("203.0.113.45")); res.Verdict != want {
			t.Errorf("%s: %s (%s)", file, res.Verdict, res.Err)
		}
	}
	edge := newTestFeodo(newFeedServer(t, readFixture(t, "feodo/ipblocklist_edge_cases.json")).URL + "/x.json")
	if err := edge.Refresh(ctx); err != nil {
		t.Fatalf("edge cases must load, skipping bad rows: %v", err)
	}
	if n, _, _ := edge.FeedStatus(); n == 0 || edge.index.Load().skipped == 0 {
		t.Errorf("edge cases: %d entries, %d skipped", n, edge.index.Load().skipped)
	}
	empty := newTestFeodo(newFeedServer(t, readFixture(t, "feodo/ipblocklist_empty.json")).URL + "/x.json")
	if res := empty.Lookup(ctx, netip.MustParseAddr("203.0.113.45")); !res.OK() || res.Verdict != VerdictNone {
		t.Errorf("an empty feed is valid: %+v", res)
	}
	for _, bad := range []string{"feodo/ipblocklist_not_a_list.json", "feodo/ipblocklist_truncated.json"} {
		f := newTestFeodo(newFeedServer(t, readFixture(t, bad)).URL + "/x.json")
		if res := f.Lookup(ctx, netip.MustParseAddr("203.0.113.45")); res.OK() {
			t.Errorf("%s never loaded but the lookup succeeded", bad)
		}
	}
}

func TestFeodoFileURL(t *testing.T) {
	dir, _ := manifest(t)
	f := newTestFeodo("file://" + filepath.Join(dir, "feodo", "ipblocklist.json"))
	if res := f.Lookup(context.Background(), netip.MustParseAddr("203.0.113.45")); res.Verdict != VerdictMalicious {
		t.Fatalf("file feed: %s (%s)", res.Verdict, res.Err)
	}
}

func bigFeed(n int) []byte {
	entries := make([]map[string]any, n)
	for i := range entries {
		entries[i] = map[string]any{"ip_address": fmt.Sprintf("45.%d.%d.%d", i>>16&255, i>>8&255, i&255), "port": 443,
			"status": "online", "hostname": nil, "as_number": 64496, "as_name": "EX", "country": "FR",
			"first_seen": "2025-06-01 00:00:00", "last_online": "2025-06-15", "malware": "QakBot"}
	}
	b, _ := json.Marshal(entries)
	return b
}

func TestFeodoTenThousandEntriesNoRequestPerIPAnd304KeepsIndex(t *testing.T) {
	srv := newFeedServer(t, bigFeed(10000))
	f := newTestFeodo(srv.URL + "/ipblocklist.json")
	ctx := context.Background()
	for i := 0; i < 10000; i += 7 {
		ip := netip.AddrFrom4([4]byte{45, byte(i >> 16), byte(i >> 8), byte(i)})
		if res := f.Lookup(ctx, ip); res.Verdict != VerdictMalicious {
			t.Fatalf("%s: %s", ip, res.Verdict)
		}
	}
	if srv.requests.Load() != 1 {
		t.Fatalf("%d feed requests for ~1,400 lookups", srv.requests.Load())
	}
	before := f.index.Load()
	if err := f.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if srv.requests.Load() != 2 || f.index.Load().byIP == nil || len(f.index.Load().byIP) != len(before.byIP) {
		t.Fatal("a 304 must keep the index")
	}
	// A failed refresh keeps the old feed in service, and says so.
	srv.set(500, []byte("oops"))
	if err := f.Refresh(ctx); err == nil {
		t.Fatal("a 500 refresh reported success")
	}
	if res := f.Lookup(ctx, netip.MustParseAddr("45.0.0.7")); res.Verdict != VerdictMalicious {
		t.Fatalf("after a failed refresh: %s", res.Verdict)
	}
	if _, _, lastErr := f.FeedStatus(); lastErr == nil {
		t.Fatal("the failed refresh is not reported")
	}
	srv.set(200, []byte(`{"not":"a list"}`))
	_ = f.Refresh(ctx)
	if res := f.Lookup(ctx, netip.MustParseAddr("45.0.0.7")); res.Verdict != VerdictMalicious {
		t.Fatalf("a malformed refresh replaced the feed")
	}
}

func TestFeodoConcurrentFirstLookupsShareOneFetch(t *testing.T) {
	srv := newFeedServer(t, readFixture(t, "feodo/ipblocklist.json"))
	f := newTestFeodo(srv.URL + "/ipblocklist.json")
	var wg sync.WaitGroup
	for i := 0; i < 32; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); f.Lookup(context.Background(), netip.MustParseAddr("203.0.113.45")) }()
	}
	wg.Wait()
	if n := srv.requests.Load(); n > 2 {
		t.Fatalf("%d fetches for 32 concurrent first lookups", n)
	}
}

func BenchmarkFeodoLookup10k(b *testing.B) {
	srv := newFeedServer(b, bigFeed(10000))
	f := newTestFeodo(srv.URL + "/ipblocklist.json")
	ctx := context.Background()
	if err := f.Refresh(ctx); err != nil {
		b.Fatal(err)
	}
	ips := []netip.Addr{netip.MustParseAddr("45.0.3.7"), netip.MustParseAddr("8.8.8.8")}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		f.Lookup(ctx, ips[i&1])
	}
}

// Feodo keeps its last good feed on disk too: a restart during an outage
// of abuse.ch serves it, dated when it was downloaded.
func TestFeodoServesItsSavedCopyAfterARestart(t *testing.T) {
	dir := t.TempDir()
	srv := newFeedServer(t, bigFeed(10))
	ctx := context.Background()
	first := NewFeodo(FeodoConfig{URL: srv.URL + "/ipblocklist.json", Guard: testGuard(), CacheDir: dir})
	if err := first.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	srv.set(503, []byte("down"))
	second := NewFeodo(FeodoConfig{URL: srv.URL + "/ipblocklist.json", Guard: testGuard(), CacheDir: dir})
	second.Start()
	defer second.Stop()
	if res := second.Lookup(ctx, netip.MustParseAddr("45.0.0.7")); res.Verdict != VerdictMalicious {
		t.Fatalf("after a restart during an outage: %+v", res)
	}
	if srv.requests.Load() != 1 {
		t.Fatalf("%d downloads: the saved copy is current", srv.requests.Load())
	}
}

// Feodo down at start with no saved copy: lookups answer at once with the
// failure for a minute, not each after a download of its own.
func TestFeodoColdAndDownDoesNotHoldLookups(t *testing.T) {
	srv := newFeedServer(t, nil)
	srv.set(503, []byte("down"))
	f := NewFeodo(FeodoConfig{URL: srv.URL + "/ipblocklist.json", Guard: testGuard()})
	for range 20 {
		if res := f.Lookup(context.Background(), netip.MustParseAddr("45.0.0.7")); res.ErrKind != ErrNetwork {
			t.Fatalf("%+v", res)
		}
	}
	if n := srv.requests.Load(); n != 1 {
		t.Fatalf("%d downloads for 20 lookups", n)
	}
}
