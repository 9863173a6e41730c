package clickhouse

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/redpanda-data/benthos/v4/public/service"

	"github.com/decnet/decnet-stream/internal/aggregate"
	"github.com/decnet/decnet-stream/internal/chstore"
	"github.com/decnet/decnet-stream/internal/chtest"
	"github.com/decnet/decnet-stream/internal/providers"
)

// A row read back by the warm start (or a shared lookup) reads exactly as it
// was decoded, whatever verdict policy decoded it: here a stricter one,
// under which GreyNoise's "unknown" is suspicious and an AbuseIPDB score of
// 37 is benign. Derived again from the stored columns with the default
// rules, the first read unknown and the second suspicious: restarts flipped
// verdicts.
func TestARestoredRowReadsAsItWasDecoded(t *testing.T) {
	srv := chtest.Start(t)
	at := time.Now().UTC().Truncate(time.Second)
	all := []string{providers.NameGreyNoise, providers.NameAbuseIPDB, providers.NameFeodo, providers.NameThreatFox,
		providers.NameAbuseIPDBBlacklist, providers.NameSpamhausDROP}
	r := aggregate.NewRow("203.0.113.99", all)
	r.Merge(providers.Result{Provider: providers.NameGreyNoise, Verdict: providers.VerdictSuspicious, FetchedAt: at,
		GreyNoise: &providers.GreyNoiseData{Classification: "unknown", Name: "unknown"}})
	r.Merge(providers.Result{Provider: providers.NameAbuseIPDB, Verdict: providers.VerdictBenign, FetchedAt: at,
		AbuseIPDB: &providers.AbuseIPDBData{Score: 37, Categories: []int{14}}})
	r.Merge(providers.Result{Provider: providers.NameFeodo, Verdict: providers.VerdictNone, FetchedAt: at, Feodo: &providers.FeodoData{}})
	r.Merge(providers.Result{Provider: providers.NameThreatFox, ErrKind: providers.ErrTimeout, FetchedAt: at})
	// The bulk lists (one listing the IP, one not) and the ASN of schema 2.
	score := 92
	r.Merge(providers.Result{Provider: providers.NameAbuseIPDBBlacklist, Verdict: providers.VerdictMalicious, FetchedAt: at.Add(-time.Hour),
		List: &providers.ListData{Listed: true, Score: &score}, Raw: []byte(`{"ipAddress":"203.0.113.99"}`)})
	r.Merge(providers.Result{Provider: providers.NameSpamhausDROP, FetchedAt: at, List: &providers.ListData{}})
	asn, org, country := uint32(64500), "Example Hosting", "NL"
	r.SetOrigin(&asn, &org, &country)
	r.CachedAt, r.ExpiresAt = at, at.Add(time.Hour)
	// As intel_enrich writes it: the table's shape and the carrier record.
	var doc map[string]any
	raw, _ := json.Marshal(r.Table())
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	doc["carrier_topic"], doc["carrier_partition"], doc["carrier_offset"] = "attacker.intel.lookup", 0, 7
	body, _ := json.Marshal(doc)
	o := newTestOutput(t, srv.DSN(), "")
	if err := o.WriteBatch(context.Background(), service.MessageBatch{service.NewMessage(body)}); err != nil {
		t.Fatalf("%v\n%s", err, body)
	}
	back, err := chstore.Load(context.Background(), srv.DSN(), "attacker_intel", 10, all)
	if err != nil || len(back) != 1 {
		t.Fatalf("read back %d rows: %v", len(back), err)
	}
	got := back[0].Row
	for _, p := range all {
		if got.Verdict(p) != r.Verdict(p) || got.Status.Of(p) != r.Status.Of(p) {
			t.Errorf("%s: read back %s/%s, written %s/%s", p, got.Verdict(p), got.Status.Of(p), r.Verdict(p), r.Status.Of(p))
		}
	}
	if got.AggregateVerdict != r.AggregateVerdict || r.AggregateVerdict != "malicious" {
		t.Errorf("aggregate read back %q, written %q", got.AggregateVerdict, r.AggregateVerdict)
	}
	if g, w := got.Enrichment(), r.Enrichment(); !jsonEqual(t, g, w) {
		t.Errorf("read back\n%+v\nwritten\n%+v", g, w)
	}
}

func jsonEqual(t *testing.T, a, b any) bool {
	t.Helper()
	x, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	y, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return string(x) == string(y)
}
