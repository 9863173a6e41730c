package aggregate

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/decnet/decnet-stream/internal/providers"
)

// Packing and unpacking loses nothing but the raw responses.
func TestCompactRoundTrip(t *testing.T) {
	r := NewRow("203.0.113.45", all)
	r.Merge(ok(providers.NameGreyNoise, providers.VerdictMalicious))
	r.Merge(ok(providers.NameAbuseIPDB, providers.VerdictMalicious))
	noResult := ok(providers.NameThreatFox, providers.VerdictNone)
	noResult.ThreatFox = &providers.ThreatFoxData{}
	r.Merge(noResult)
	r.MarkDeferred(providers.NameFeodo)
	score := 87
	r.Merge(providers.Result{Provider: providers.NameAbuseIPDBBlacklist, Verdict: providers.VerdictMalicious, FetchedAt: time.Date(2025, 6, 15, 6, 0, 0, 0, time.UTC),
		List: &providers.ListData{Listed: true, Score: &score}})
	r.Merge(providers.Result{Provider: providers.NameSpamhausDROP, FetchedAt: time.Date(2025, 6, 15, 2, 0, 0, 0, time.UTC), List: &providers.ListData{}})
	asn, org, country := uint32(64500), "Example Hosting", "NL"
	r.SetOrigin(&asn, &org, &country)
	r.CachedAt = time.Date(2025, 6, 15, 8, 6, 0, 0, time.UTC)
	r.ExpiresAt = r.CachedAt.Add(24 * time.Hour)
	r.StripRaw()

	c, ok := r.Pack()
	if !ok {
		t.Fatal("row not packable")
	}
	back := c.Unpack(r.AttackerIP, r.Providers)
	want, _ := json.Marshal(r.Table())
	got, _ := json.Marshal(back.Table())
	if string(got) != string(want) {
		t.Fatalf("round trip changed the row:\n got %s\nwant %s", got, want)
	}
	if c.Verdict() != string(r.AggregateVerdict) || back.Complete() != r.Complete() {
		t.Fatalf("verdict %s / %s, complete %v / %v", c.Verdict(), r.AggregateVerdict, back.Complete(), r.Complete())
	}
}

// The aggregate verdict of a packed row counts the bulk lists' verdicts,
// without unpacking and without allocating.
func TestCompactVerdictCountsTheListsWithoutAllocating(t *testing.T) {
	r := NewRow("203.0.113.45", append(all[:len(all):len(all)], providers.NameSpamhausDROP))
	r.Merge(ok(providers.NameGreyNoise, providers.VerdictBenign))
	r.Merge(providers.Result{Provider: providers.NameSpamhausDROP, Verdict: providers.VerdictMalicious,
		FetchedAt: time.Date(2025, 6, 15, 2, 0, 0, 0, time.UTC), List: &providers.ListData{Listed: true}})
	r.CachedAt = time.Date(2025, 6, 15, 8, 6, 0, 0, time.UTC)
	r.StripRaw()
	c, ok := r.Pack()
	if !ok || c.Verdict() != "malicious" {
		t.Fatalf("packed %v, verdict %s", ok, c.Verdict())
	}
	if n := testing.AllocsPerRun(100, func() { _ = c.Verdict() }); n != 0 {
		t.Fatalf("%v allocations per Verdict", n)
	}
}
