package providers

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// blacklistJSON is an AbuseIPDB blacklist of n addresses 45.1.x.y, scores
// 100 down to 75, generated as /api/v2/blacklist answers.
func blacklistJSON(n int) []byte {
	var b strings.Builder
	b.WriteString(`{"meta":{"generatedAt":"2026-11-30T00:00:00+00:00"},"data":[`)
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"ipAddress":"45.1.%d.%d","countryCode":"NL","abuseConfidenceScore":%d,"lastReportedAt":"2026-11-29T23:00:00+00:00"}`,
			i/250, i%250+1, 100-i%26)
	}
	b.WriteString(`]}`)
	return []byte(b.String())
}

func TestAbuseIPDBBlacklistAnswersWithoutACheckCall(t *testing.T) {
	var got atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.Store(r.Method + " " + r.URL.Path + "?" + r.URL.RawQuery + " key=" + r.Header.Get("Key") + " accept=" + r.Header.Get("Accept"))
		_, _ = w.Write(blacklistJSON(10000))
	}))
	defer srv.Close()
	l := NewAbuseIPDBBlacklist(BulkListConfig{URLs: []string{AbuseIPDBBlacklistURL(srv.URL, 75, 10000)}, Key: "k3y", Guard: testGuard()})
	ctx := context.Background()

	res := l.Lookup(ctx, netip.MustParseAddr("45.1.0.1"))
	if want := "GET /api/v2/blacklist?confidenceMinimum=75&limit=10000 key=k3y accept=application/json"; got.Load() != want {
		t.Fatalf("request %q, want %q", got.Load(), want)
	}
	if !res.OK() || !res.List.Listed || *res.List.Score != 100 || res.Verdict != VerdictMalicious || res.Requests != 0 {
		t.Fatalf("listed: %+v %+v", res, res.List)
	}
	if !strings.Contains(string(res.Raw), `"countryCode":"NL"`) {
		t.Fatalf("raw: %s", res.Raw)
	}
	res = l.Lookup(ctx, netip.MustParseAddr("45.1.3.1")) // i=750: score 100-750%26 = 78
	if *res.List.Score != 78 || res.Verdict != VerdictMalicious {
		t.Fatalf("score %d", *res.List.Score)
	}
	res = l.Lookup(ctx, netip.MustParseAddr("8.8.8.8"))
	if !res.OK() || res.List.Listed || res.Verdict != VerdictNone {
		t.Fatalf("not listed: %+v %+v", res, res.List)
	}
	if entries, _, err := l.FeedStatus(); entries != 10000 || err != nil {
		t.Fatalf("status %d %v", entries, err)
	}
	// Never an address that is not public.
	if res := l.Lookup(ctx, netip.MustParseAddr("10.0.0.1")); res.ErrKind != ErrSkipped {
		t.Fatalf("private: %+v", res)
	}
}

func TestAbuseIPDBBlacklistWithoutAKeySendsNothing(t *testing.T) {
	var requests atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { requests.Add(1) }))
	defer srv.Close()
	l := NewAbuseIPDBBlacklist(BulkListConfig{URLs: []string{AbuseIPDBBlacklistURL(srv.URL, 90, 100)}, Guard: testGuard()})
	l.Start()
	defer l.Stop()
	if res := l.Lookup(context.Background(), netip.MustParseAddr("45.1.0.1")); res.ErrKind != ErrDisabled {
		t.Fatalf("%+v", res)
	}
	if requests.Load() != 0 {
		t.Fatalf("%d requests without a key", requests.Load())
	}
	if _, _, err := l.FeedStatus(); err == nil || !strings.Contains(err.Error(), "no key") {
		t.Fatalf("status of a keyless list: %v", err)
	}
}

func TestAbuseIPDBBlacklistPlaintextAndErrors(t *testing.T) {
	items, err := parseAbuseIPDBBlacklist([]byte("45.1.0.1\n2a0b:4340::1\nnot-an-ip\n"))
	if err != nil || len(items) != 2 || items[1].prefix.Bits() != 128 {
		t.Fatalf("%v %+v", err, items)
	}
	if _, err := parseAbuseIPDBBlacklist([]byte(`{"errors":[{"detail":"Daily rate limit of 5 requests exceeded for this endpoint."}]}`)); err == nil || !strings.Contains(err.Error(), "Daily rate limit") {
		t.Fatalf("an error body: %v", err)
	}
	if _, err := parseAbuseIPDBBlacklist([]byte(`{"data":[{"ipAddress":`)); err == nil {
		t.Fatal("a truncated body was accepted")
	}
}

const dropV4 = `{"cidr":"45.0.0.0/20","sblid":"SBL100001","rir":"ripencc"}
{"cidr":"45.9.8.0/24","sblid":"SBL100002","rir":"arin"}
{"cidr":"not a network","sblid":"SBL1"}
{"type":"metadata","timestamp":1764460800,"size":171,"records":2,"copyright":"(c) 2026 The Spamhaus Project SLU","terms":"https://www.spamhaus.org/drop/terms/"}
`

const dropV6 = `{"cidr":"2a0b:4340::/32","sblid":"SBL200001","rir":"ripencc"}
{"type":"metadata","timestamp":1764460800,"size":63,"records":1}
`

func TestSpamhausDROPMatchesNetworksOfBothFamilies(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/drop/drop_v4.json", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte(dropV4)) })
	mux.HandleFunc("/drop/drop_v6.json", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte(dropV6)) })
	srv := httptest.NewServer(mux)
	defer srv.Close()
	l := NewSpamhausDROP(BulkListConfig{URLs: []string{srv.URL + "/drop/drop_v4.json", srv.URL + "/drop/drop_v6.json"}, Guard: testGuard()})
	ctx := context.Background()
	for ip, sbl := range map[string]string{"45.0.15.200": "SBL100001", "45.9.8.1": "SBL100002", "2a0b:4340:1::7": "SBL200001", "::ffff:45.0.0.1": "SBL100001"} {
		res := l.Lookup(ctx, netip.MustParseAddr(ip))
		if !res.OK() || !res.List.Listed || strings.Join(res.List.Tags, ",") != sbl || res.Verdict != VerdictMalicious || res.List.Score != nil {
			t.Errorf("%s: %+v %+v", ip, res, res.List)
		}
	}
	if res := l.Lookup(ctx, netip.MustParseAddr("45.0.16.1")); res.List.Listed || res.Verdict != VerdictNone {
		t.Errorf("outside the /20: %+v", res.List)
	}
	if entries, _, _ := l.FeedStatus(); entries != 3 {
		t.Errorf("%d networks, want 3", entries)
	}
	// Spamhaus firewalls hosts that download more often than hourly.
	if l := NewSpamhausDROP(BulkListConfig{RefreshInterval: time.Minute}); l.RefreshInterval() != time.Hour {
		t.Errorf("refresh %s", l.RefreshInterval())
	}
	// A network wider than any allocation (a damaged or tampered list) is
	// dropped, not applied to half the Internet.
	items, err := parseSpamhausDROP([]byte("0.0.0.0/0 ; SBL1\n::/0 ; SBL2\n45.0.0.0/7 ; SBL3\n45.0.0.0/8 ; SBL4\n2a0b::/15 ; SBL5\n"))
	if err != nil || len(items) != 1 || items[0].tags[0] != "SBL4" {
		t.Fatalf("wide networks: %v %+v", err, items)
	}
	// The older text format reads the same.
	items, err = parseSpamhausDROP([]byte("; Spamhaus DROP List\n45.0.0.0/20 ; SBL100001\n"))
	if err != nil || len(items) != 1 || items[0].tags[0] != "SBL100001" {
		t.Fatalf("%v %+v", err, items)
	}
}

const threatFoxExport = `{
 "1500001": [{"ioc_value":"45.2.0.1:443","ioc_type":"ip:port","threat_type":"botnet_cc","malware":"win.cobalt_strike","malware_printable":"Cobalt Strike","first_seen_utc":"2026-11-29 10:00:00","confidence_level":100}],
 "1500002": [{"ioc_value":"45.2.0.1:8080","ioc_type":"ip:port","threat_type":"botnet_cc","malware":"elf.mirai","malware_printable":"Mirai","first_seen_utc":"2026-11-29 11:00:00","confidence_level":50}],
 "1500003": [{"ioc_value":"[2a0b:4340::9]:80","ioc_type":"ip:port","threat_type":"payload_delivery","malware_printable":"Unknown malware","confidence_level":"75"}],
 "1500004": [{"ioc_value":"evil.example","ioc_type":"domain","threat_type":"botnet_cc","malware_printable":"Mirai","confidence_level":100}]
}`

func TestThreatFoxExportMergesAnIPsIOCs(t *testing.T) {
	srv := newFeedServer(t, []byte(threatFoxExport))
	l := NewThreatFoxExport(BulkListConfig{URLs: []string{srv.URL + "/export/json/ip-port/recent/"}, Key: "k", Guard: testGuard()})
	ctx := context.Background()
	res := l.Lookup(ctx, netip.MustParseAddr("45.2.0.1"))
	if !res.List.Listed || *res.List.Score != 100 || strings.Join(res.List.Tags, ",") != "Cobalt Strike,Mirai" || res.Verdict != VerdictMalicious {
		t.Fatalf("%+v %+v", res, res.List)
	}
	if res := l.Lookup(ctx, netip.MustParseAddr("2a0b:4340::9")); !res.List.Listed || *res.List.Score != 75 {
		t.Fatalf("IPv6 ip:port: %+v", res.List)
	}
	if entries, _, _ := l.FeedStatus(); entries != 2 {
		t.Fatalf("%d entries: a domain IOC is not an address", entries)
	}
	items, err := parseThreatFoxExport([]byte(`{"query_status":"ok","data":[{"ioc_value":"45.2.0.9:1","ioc_type":"ip:port","confidence_level":90}]}`))
	if err != nil || len(items) != 1 {
		t.Fatalf("an API answer: %v %+v", err, items)
	}
	if _, err := parseThreatFoxExport([]byte(`{"query_status":"illegal_search_term"}`)); err == nil {
		t.Fatal("an error answer was accepted")
	}
}

// A restart while the provider is down serves the copy saved on disk, and
// says how old it is; a failed refresh keeps the last good copy; a 304
// makes the copy current again.
func TestBulkListServesItsSavedCopyThroughAnOutage(t *testing.T) {
	dir := t.TempDir()
	srv := newFeedServer(t, []byte(dropV4))
	now := time.Date(2026, 11, 30, 6, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	conf := BulkListConfig{URLs: []string{srv.URL + "/drop_v4.json"}, CacheDir: dir, Guard: testGuard(), Now: clock}
	ctx := context.Background()
	first := NewSpamhausDROP(conf)
	if err := first.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "spamhaus_drop.feed")); err != nil {
		t.Fatal(err)
	}

	srv.set(503, []byte("down"))
	now = now.Add(5 * time.Hour)
	second := NewSpamhausDROP(conf)
	second.Start() // the copy is not older than the refresh interval: no download
	defer second.Stop()
	res := second.Lookup(ctx, netip.MustParseAddr("45.0.0.9"))
	if !res.OK() || !res.List.Listed || res.List.FeedAge != 5*time.Hour || !res.FetchedAt.Equal(now.Add(-5*time.Hour)) {
		t.Fatalf("from the saved copy: %+v %+v", res, res.List)
	}
	if srv.requests.Load() != 1 {
		t.Fatalf("%d downloads: a current saved copy needs none", srv.requests.Load())
	}
	if err := second.Refresh(ctx); err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("refresh during the outage: %v", err)
	}
	if _, age, lastErr := second.FeedStatus(); age != 5*time.Hour || lastErr == nil {
		t.Fatalf("status: age %s, err %v", age, lastErr)
	}
	if res := second.Lookup(ctx, netip.MustParseAddr("45.0.0.9")); !res.List.Listed {
		t.Fatal("the outage emptied the list")
	}

	srv.set(200, []byte(dropV4))
	if err := second.Refresh(ctx); err != nil { // a 304: same ETag
		t.Fatal(err)
	}
	if _, age, _ := second.FeedStatus(); age != 0 {
		t.Fatalf("after a 304, age %s", age)
	}
	if st, _ := os.Stat(filepath.Join(dir, "spamhaus_drop.feed")); !st.ModTime().Equal(now) {
		t.Fatalf("saved copy dated %s, want %s", st.ModTime(), now)
	}

	// Never loaded and nothing saved: an error status, not a verdict.
	srv.set(503, []byte("down"))
	cold := NewSpamhausDROP(BulkListConfig{URLs: []string{srv.URL + "/drop_v4.json"}, Guard: testGuard()})
	if res := cold.Lookup(ctx, netip.MustParseAddr("45.0.0.9")); res.ErrKind != ErrNetwork || res.Verdict != VerdictNone {
		t.Fatalf("cold: %+v", res)
	}
}

// A key in a download URL's query never reaches an error message.
func TestBulkListErrorsDoNotEchoTheQuery(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(500) }))
	defer srv.Close()
	l := NewThreatFoxExport(BulkListConfig{URLs: []string{srv.URL + "/export?auth=s3cret"}, Key: "k", Guard: testGuard()})
	if err := l.Refresh(context.Background()); err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("%v", err)
	}
}

// A list that cannot be downloaded and has no saved copy answers lookups
// at once with the failure (a status, retried later), instead of making
// each new attacker wait on a download of its own; a minute on, a lookup
// tries again.
func TestAColdListThatFailedDoesNotHoldLookups(t *testing.T) {
	srv := newFeedServer(t, []byte("down"))
	srv.set(503, []byte("down"))
	now := time.Date(2026, 11, 30, 6, 0, 0, 0, time.UTC)
	l := NewSpamhausDROP(BulkListConfig{URLs: []string{srv.URL + "/drop_v4.json"}, Guard: testGuard(), Now: func() time.Time { return now }})
	ctx := context.Background()
	for range 50 {
		if res := l.Lookup(ctx, netip.MustParseAddr("45.0.0.9")); res.ErrKind != ErrNetwork {
			t.Fatalf("%+v", res)
		}
	}
	if n := srv.requests.Load(); n != 1 {
		t.Fatalf("%d downloads for 50 lookups within a minute of the failure", n)
	}
	srv.set(200, []byte(dropV4))
	now = now.Add(coldRetry)
	if res := l.Lookup(ctx, netip.MustParseAddr("45.0.0.9")); !res.OK() || !res.List.Listed {
		t.Fatalf("a minute on: %+v", res)
	}
}

// A download that lists nothing, where the copy in service listed
// something, is a glitch: the copy stays.
func TestAnEmptiedListKeepsTheCopyInService(t *testing.T) {
	srv := newFeedServer(t, []byte(dropV4))
	l := NewSpamhausDROP(BulkListConfig{URLs: []string{srv.URL + "/drop_v4.json"}, Guard: testGuard()})
	ctx := context.Background()
	if err := l.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	srv.set(200, []byte(`{"type":"metadata","timestamp":1764460800,"records":0}`+"\n"))
	if err := l.Refresh(ctx); err == nil || !strings.Contains(err.Error(), "lists nothing") {
		t.Fatalf("an emptied list: %v", err)
	}
	if res := l.Lookup(ctx, netip.MustParseAddr("45.0.0.9")); !res.List.Listed {
		t.Fatal("the emptied download replaced the list")
	}
}

// AbuseIPDB's plaintext blacklist has no scores: an entry scores the
// confidenceMinimum it was downloaded with, and its verdict follows.
func TestPlaintextBlacklistScoresItsFloor(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("45.1.0.1\n"))
	}))
	defer srv.Close()
	for floor, want := range map[int]Verdict{30: VerdictSuspicious, 90: VerdictMalicious} {
		l := NewAbuseIPDBBlacklist(BulkListConfig{URLs: []string{AbuseIPDBBlacklistURL(srv.URL, floor, 100)}, Key: "k", MinScore: floor, Guard: testGuard()})
		res := l.Lookup(context.Background(), netip.MustParseAddr("45.1.0.1"))
		if !res.List.Listed || res.List.Score == nil || *res.List.Score != floor || res.Verdict != want {
			t.Errorf("floor %d: %+v %v", floor, res.List, res.Verdict)
		}
	}
}
