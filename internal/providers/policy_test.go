package providers

import (
	"context"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
)

// For every scenario IP of the recorded fixtures, each provider's verdict
// under the default policy is the one DECNET's own rules give (the wire
// facts): GreyNoise's classification passes through and 404 is unknown,
// AbuseIPDB ≥75 / ≥25 / else benign even with no reports, Feodo listed is
// malicious whatever its status, ThreatFox any IOC is malicious.
func TestDefaultVerdictsAreDECNETs(t *testing.T) {
	type want struct{ greynoise, abuseipdb, feodo, threatfox Verdict }
	M, S, B, U, N := VerdictMalicious, VerdictSuspicious, VerdictBenign, VerdictUnknown, VerdictNone
	for ip, w := range map[string]want{
		"203.0.113.45":  {M, M, M, M}, // bad everywhere
		"203.0.113.99":  {U, S, M, N}, // GreyNoise unknown, AbuseIPDB 37, Feodo offline, no IOC
		"198.51.100.23": {B, B, N, N}, // benign scanner, whitelisted score 0 with 342 reports
		"192.0.2.77":    {U, B, N, N}, // GreyNoise 404, AbuseIPDB 0 with no reports
	} {
		files := map[string]string{
			"203.0.113.45":  "greynoise/200_malicious.json|abuseipdb/200_malicious.json|threatfox/200_ok_hit.json",
			"203.0.113.99":  "greynoise/200_unknown_classification.json|abuseipdb/200_suspicious.json|threatfox/200_no_result.json",
			"198.51.100.23": "greynoise/200_benign_scanner.json|abuseipdb/200_whitelisted_scanner.json|threatfox/200_no_result.json",
			"192.0.2.77":    "greynoise/404_not_found.json|abuseipdb/200_clean.json|threatfox/200_no_result.json",
		}[ip]
		var f [3]string
		copy(f[:], strings.Split(files, "|"))
		addr := netip.MustParseAddr(ip)
		gnStatus := 200
		if ip == "192.0.2.77" {
			gnStatus = 404
		}
		p := DECNETPolicy()
		if got := p.Verdict(decodeGreyNoise(gnStatus, readFixture(t, f[0]), fuzzNow)); got != w.greynoise {
			t.Errorf("%s greynoise: %q, want %q", ip, got, w.greynoise)
		}
		if got := p.Verdict(decodeAbuseIPDB(200, readFixture(t, f[1]), fuzzNow)); got != w.abuseipdb {
			t.Errorf("%s abuseipdb: %q, want %q", ip, got, w.abuseipdb)
		}
		if got := p.Verdict(decodeThreatFox(200, readFixture(t, f[2]), addr, fuzzNow)); got != w.threatfox {
			t.Errorf("%s threatfox: %q, want %q", ip, got, w.threatfox)
		}
		dir, _ := manifest(t)
		feed := newTestFeodo("file://" + filepath.Join(dir, "feodo", "ipblocklist.json"))
		if got := feed.Lookup(context.Background(), addr).Verdict; got != w.feodo {
			t.Errorf("%s feodo: %q, want %q", ip, got, w.feodo)
		}
	}
	// 8.8.8.8: a RIOT IP classed benign is benign (its classification);
	// DECNET does not use RIOT.
	if got := DECNETPolicy().Verdict(decodeGreyNoise(200, readFixture(t, "greynoise/200_riot_benign.json"), fuzzNow)); got != B {
		t.Errorf("8.8.8.8 (RIOT): %q", got)
	}
	// 198.51.100.200: a Tor exit at 100.
	if got := DECNETPolicy().Verdict(decodeAbuseIPDB(200, readFixture(t, "abuseipdb/200_tor_exit.json"), fuzzNow)); got != M {
		t.Errorf("198.51.100.200 (Tor exit): %q", got)
	}
	// ThreatFox's family is the Malpedia id first, as DECNET takes it.
	if r := decodeThreatFox(200, readFixture(t, "threatfox/200_ok_hit.json"), netip.MustParseAddr("203.0.113.45"), fuzzNow); len(r.ThreatFox.MalwareFamilies) == 0 || r.ThreatFox.MalwareFamilies[0] != "win.qakbot" {
		t.Errorf("threatfox family: %v", r.ThreatFox.MalwareFamilies)
	}
}

func TestPolicyChecks(t *testing.T) {
	p := DECNETPolicy()
	p.AbuseIPDB.SuspiciousAt = 80
	if p.Check() == nil {
		t.Error("suspicious_at above malicious_at accepted")
	}
	if _, err := ParseVerdict("evil"); err == nil {
		t.Error("an unknown verdict accepted")
	}
}
