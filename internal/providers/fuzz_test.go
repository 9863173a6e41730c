package providers

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

var fuzzNow = time.Date(2025, 6, 15, 8, 6, 0, 0, time.UTC)

// checkDecoded: a decoder answers or fails with a known kind, never both,
// and an answer carries its typed data.
func checkDecoded(t *testing.T, res Result, typed bool) {
	if res.OK() {
		if !typed {
			t.Fatalf("answer without typed data: %+v", res)
		}
		switch res.Verdict {
		case VerdictMalicious, VerdictSuspicious, VerdictBenign, VerdictUnknown, VerdictNone:
		default:
			t.Fatalf("unknown verdict %q", res.Verdict)
		}
		return
	}
	switch res.ErrKind {
	case ErrHTTPStatus, ErrParse, ErrAuth, ErrSkipped:
	default:
		t.Fatalf("decoder failed with kind %q", res.ErrKind)
	}
}

func addFixtureSeeds(f *testing.F, provider string) {
	dir, entries := manifest(f)
	for _, e := range entries {
		if e.Provider == provider {
			f.Add(e.Response.Status, readFile(f, dir, e.File))
		}
	}
}

func FuzzDecodeGreyNoise(f *testing.F) {
	addFixtureSeeds(f, NameGreyNoise)
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		res := decodeGreyNoise(status, body, fuzzNow)
		res.Verdict = DECNETPolicy().Verdict(res)
		checkDecoded(t, res, res.GreyNoise != nil)
	})
}

func FuzzDecodeAbuseIPDB(f *testing.F) {
	addFixtureSeeds(f, NameAbuseIPDB)
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		res := decodeAbuseIPDB(status, body, fuzzNow)
		res.Verdict = DECNETPolicy().Verdict(res)
		checkDecoded(t, res, res.AbuseIPDB != nil)
		if res.OK() && (res.AbuseIPDB.Score >= 75) != (res.Verdict == VerdictMalicious) {
			t.Fatalf("score %d gave %s", res.AbuseIPDB.Score, res.Verdict)
		}
	})
}

func FuzzDecodeThreatFox(f *testing.F) {
	addFixtureSeeds(f, NameThreatFox)
	ip := netip.MustParseAddr("203.0.113.45")
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		res := decodeThreatFox(status, body, ip, fuzzNow)
		res.Verdict = DECNETPolicy().Verdict(res)
		checkDecoded(t, res, res.ThreatFox != nil)
		if res.OK() && res.ThreatFox.Listed != (res.Verdict == VerdictMalicious) {
			t.Fatalf("listed %v gave %s", res.ThreatFox.Listed, res.Verdict)
		}
	})
}

func FuzzParseFeodo(f *testing.F) {
	dir, entries := manifest(f)
	for _, e := range entries {
		if e.Provider == NameFeodo {
			f.Add(readFile(f, dir, e.File), feedFormat(e.File))
		}
	}
	f.Fuzz(func(t *testing.T, body []byte, format string) {
		idx, err := parseFeodo(body, format)
		if err != nil {
			return
		}
		for ip, d := range idx.byIP {
			if !ip.IsValid() || ip.Zone() != "" || ip.Is4In6() || !d.Listed {
				t.Fatalf("bad index entry %v %+v", ip, d)
			}
		}
	})
}

// FuzzParseIP: whatever a sensor sends, an accepted address is canonical
// and its string is safe to put in a URL.
func FuzzParseIP(f *testing.F) {
	for _, s := range []string{"203.0.113.45", "::ffff:8.8.8.8", "2001:db8::1", "1.2.3.4/../admin", "1.2.3.4?x=", "fe80::1%eth0", "１.2.3.4", "1.2.3.4\x00"} {
		f.Add(s)
	}
	g, _ := NewGuard(nil)
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseIP(s)
		if err != nil {
			return
		}
		out := a.String()
		if strings.ContainsAny(out, "/?#%&= \t\r\n\x00") || a.Is4In6() || a.Zone() != "" {
			t.Fatalf("ParseIP(%q) = %q", s, out)
		}
		if back, err := ParseIP(out); err != nil || back != a {
			t.Fatalf("%q does not round-trip: %v %v", out, back, err)
		}
		_ = g.Check(a) // must not panic
	})
}

// FuzzParseBulkLists: the three list parsers never panic, and whatever a
// list admits is a valid prefix with a score in range, found by a lookup of
// its own address.
func FuzzParseBulkLists(f *testing.F) {
	f.Add(uint8(0), []byte(blacklistJSON(3)))
	f.Add(uint8(0), []byte("45.1.0.1\n2a0b:4340::1\n"))
	f.Add(uint8(1), []byte(threatFoxExport))
	f.Add(uint8(1), []byte(`{"query_status":"ok","data":[{"ioc_value":"45.2.0.9:1","ioc_type":"ip:port","confidence_level":"90"}]}`))
	f.Add(uint8(2), []byte(dropV4+dropV6))
	f.Add(uint8(2), []byte("; DROP\n45.0.0.0/20 ; SBL1\n"))
	parsers := []func([]byte) ([]listItem, error){parseAbuseIPDBBlacklist, parseThreatFoxExport, parseSpamhausDROP}
	f.Fuzz(func(t *testing.T, which uint8, body []byte) {
		items, err := parsers[int(which)%len(parsers)](body)
		if err != nil {
			return
		}
		l := &BulkList{name: ListNames[int(which)%len(parsers)], parts: []listPart{{items: items, at: fuzzNow, ok: true}}}
		l.rebuildLocked()
		for _, it := range items {
			if !it.prefix.IsValid() || it.score < -1 || it.score > 100 {
				t.Fatalf("admitted %+v", it)
			}
			if idx := l.index.Load(); idx == nil {
				t.Fatal("items but no index")
			} else if _, ok := idx.table.Lookup(it.prefix.Addr()); !ok {
				t.Fatalf("%s admitted but not found", it.prefix)
			}
		}
	})
}
