package providers

import (
	"context"
	"encoding/json"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func providerFor(name, base string) Provider {
	c := testCommon(base)
	switch name {
	case NameGreyNoise:
		return NewGreyNoise(GreyNoiseConfig{Common: c, APIKey: "gn-key"})
	case NameAbuseIPDB:
		return NewAbuseIPDB(AbuseIPDBConfig{Common: c, APIKey: "ab-key", MaxAgeInDays: 90, Verbose: true})
	case NameThreatFox:
		return NewThreatFox(ThreatFoxConfig{Common: c, AuthKey: "tf-key"})
	}
	return nil
}

// decnetVerdicts are the fixtures whose verdict under DECNET's rules (the
// default policy) differs from the one the fixtures' README gives: DECNET
// passes GreyNoise's "unknown" through, and calls any AbuseIPDB score under
// 25 benign, reports or not.
var decnetVerdicts = map[string]string{
	"greynoise/200_unknown_classification.json": "unknown",
	"abuseipdb/200_clean.json":                  "benign",
	"abuseipdb/200_ipv6_clean.json":             "benign",
}

// wantOutcome maps the fixtures' verdict vocabulary onto our results.
func checkOutcome(t *testing.T, e manifestEntry, res Result) {
	t.Helper()
	if v, ok := decnetVerdicts[e.File]; ok {
		e.Verdict = v
	}
	switch e.Verdict {
	case "unknown":
		if !res.OK() || res.Verdict != VerdictUnknown {
			t.Errorf("%s: got %q/%s (%s), want verdict unknown", e.File, res.Verdict, res.ErrKind, res.Err)
		}
	case "malicious", "suspicious", "benign":
		if !res.OK() || string(res.Verdict) != e.Verdict {
			t.Errorf("%s: got %q/%s (%s), want verdict %s", e.File, res.Verdict, res.ErrKind, res.Err, e.Verdict)
		}
	case "not_found":
		if !res.OK() || (res.Verdict != VerdictUnknown && res.Verdict != VerdictNone) {
			t.Errorf("%s: got %q/%s, want an answer with no opinion", e.File, res.Verdict, res.ErrKind)
		}
	case "error_auth":
		if res.ErrKind != ErrAuth {
			t.Errorf("%s: got %s (%s), want auth", e.File, res.ErrKind, res.Err)
		}
	case "error_rate_limited":
		if res.ErrKind != ErrRateLimited {
			t.Errorf("%s: got %s (%s), want rate_limited", e.File, res.ErrKind, res.Err)
		}
	case "error_invalid_input":
		if res.ErrKind != ErrHTTPStatus && res.ErrKind != ErrSkipped {
			t.Errorf("%s: got %s (%s), want http_status or skipped", e.File, res.ErrKind, res.Err)
		}
	case "error_transient":
		if res.ErrKind != ErrHTTPStatus {
			t.Errorf("%s: got %s (%s), want http_status", e.File, res.ErrKind, res.Err)
		}
	case "error_malformed":
		if res.ErrKind != ErrParse {
			t.Errorf("%s: got %q/%s (%s), want parse", e.File, res.Verdict, res.ErrKind, res.Err)
		}
	default:
		t.Fatalf("%s: unknown verdict %s", e.File, e.Verdict)
	}
	if res.Provider != e.Provider || res.FetchedAt.IsZero() {
		t.Errorf("%s: result not stamped: %+v", e.File, res)
	}
}

// Every per-IP fixture in the manifest, served with its status and headers,
// reaches the outcome the fixtures' README gives, and the request is the
// documented one.
func TestProvidersOnEveryManifestFixture(t *testing.T) {
	dir, entries := manifest(t)
	checked := 0
	for _, e := range entries {
		if e.Provider == NameFeodo {
			continue
		}
		t.Run(e.File, func(t *testing.T) {
			body, err := os.ReadFile(filepath.Join(dir, e.File))
			if err != nil {
				t.Fatal(err)
			}
			srv := newFixtureServer(t, e.Response.Status, e.Response.Headers, body)
			p := providerFor(e.Provider, srv.URL)
			ip := requestIP(e)
			res := p.Lookup(context.Background(), ip)
			checkOutcome(t, e, res)
			if srv.count() == 0 {
				t.Fatal("no request reached the server")
			}
			checkRequest(t, e, ip, srv.last())
		})
		checked++
	}
	if checked < 30 {
		t.Fatalf("only %d fixtures checked", checked)
	}
}

// requestIP is the fixture's IP when it may be sent, else a routable
// stand-in: the fixture is about the response, and the guard (tested
// separately) never lets a private address out.
func requestIP(e manifestEntry) netip.Addr {
	u, _ := url.Parse(e.Request.URL)
	cand := strings.TrimPrefix(u.Path, "/v3/community/")
	if e.Provider == NameAbuseIPDB {
		cand = u.Query().Get("ipAddress")
	}
	if e.Provider == NameThreatFox {
		cand = e.Request.Body["search_term"]
	}
	if a, err := ParseIP(cand); err == nil && testGuard().Check(a) == "" {
		return a
	}
	return netip.MustParseAddr("8.8.8.8")
}

func checkRequest(t *testing.T, e manifestEntry, ip netip.Addr, r recorded) {
	t.Helper()
	if r.Method != e.Request.Method {
		t.Errorf("method %s, want %s", r.Method, e.Request.Method)
	}
	switch e.Provider {
	case NameGreyNoise:
		if r.Path != "/v3/community/"+ip.String() || r.Header.Get("key") != "gn-key" || r.Header.Get("Accept") != "application/json" {
			t.Errorf("greynoise request %+v", r)
		}
	case NameAbuseIPDB:
		q, _ := url.ParseQuery(r.Query)
		if r.Path != "/api/v2/check" || q.Get("ipAddress") != ip.String() || q.Get("maxAgeInDays") != "90" || !q.Has("verbose") ||
			r.Header.Get("Key") != "ab-key" || r.Header.Get("Accept") != "application/json" {
			t.Errorf("abuseipdb request %+v", r)
		}
	case NameThreatFox:
		var b map[string]string
		_ = json.Unmarshal(r.Body, &b)
		if r.Path != "/api/v1/" || b["query"] != "search_ioc" || b["search_term"] != ip.String() || r.Header.Get("Auth-Key") != "tf-key" {
			t.Errorf("threatfox request %+v body %s", r, r.Body)
		}
	}
}

func TestTypedFieldsFromFixtures(t *testing.T) {
	dir, _ := manifest(t)
	serve := func(file string, headers map[string]string) string {
		b, err := os.ReadFile(filepath.Join(dir, file))
		if err != nil {
			t.Fatal(err)
		}
		return newFixtureServer(t, http.StatusOK, headers, b).URL
	}
	ip := netip.MustParseAddr("203.0.113.45")

	gn := providerFor(NameGreyNoise, serve("greynoise/200_malicious.json", nil)).Lookup(context.Background(), ip)
	if d := gn.GreyNoise; d == nil || d.Classification != "malicious" || d.Name != "unknown" || !d.Noise || d.RIOT || d.LastSeen != "2025-06-15" {
		t.Errorf("greynoise fields %+v", gn.GreyNoise)
	}
	ab := providerFor(NameAbuseIPDB, serve("abuseipdb/200_malicious_verbose.json", map[string]string{"X-RateLimit-Remaining": "957"})).Lookup(context.Background(), ip)
	if d := ab.AbuseIPDB; d == nil || d.Score != 100 || d.CountryCode != "FR" || d.TotalReports != 57 || d.IsTor ||
		fmtInts(d.Categories) != "[14,15,18,20,21,22]" {
		t.Errorf("abuseipdb fields %+v", ab.AbuseIPDB)
	}
	tf := providerFor(NameThreatFox, serve("threatfox/200_ok_multiple.json", nil)).Lookup(context.Background(), ip)
	if d := tf.ThreatFox; d == nil || !d.Listed || len(d.MalwareFamilies) != 2 || d.ThreatTypes[0] != "botnet_cc" || d.IOCTypes[0] != "ip:port" {
		t.Errorf("threatfox fields %+v", tf.ThreatFox)
	}
	nr := providerFor(NameThreatFox, serve("threatfox/200_no_result.json", nil)).Lookup(context.Background(), ip)
	if !nr.OK() || nr.Verdict != VerdictNone || nr.ThreatFox == nil || nr.ThreatFox.Listed {
		t.Errorf("no_result: %+v", nr)
	}
}

func fmtInts(xs []int) string {
	b, _ := json.Marshal(xs)
	return string(b)
}
