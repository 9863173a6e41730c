package aggregate

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/decnet/decnet-stream/internal/providers"
)

var all = []string{providers.NameGreyNoise, providers.NameAbuseIPDB, providers.NameFeodo, providers.NameThreatFox}

func TestPrecedence(t *testing.T) {
	M, S, B, U, N := providers.VerdictMalicious, providers.VerdictSuspicious, providers.VerdictBenign, providers.VerdictUnknown, providers.VerdictNone
	for _, tc := range []struct {
		in   []providers.Verdict
		want string
	}{
		{nil, "none"},
		{[]providers.Verdict{N, N}, "none"},
		{[]providers.Verdict{U}, "unknown"},
		{[]providers.Verdict{U, B}, "benign"},
		{[]providers.Verdict{B, S, U}, "suspicious"},
		{[]providers.Verdict{S, M, B}, "malicious"},
		{[]providers.Verdict{N, M}, "malicious"},
		{[]providers.Verdict{B, N}, "benign"},
	} {
		if got := Strongest(tc.in...); got != tc.want {
			t.Errorf("Strongest(%v) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

func ok(p string, v providers.Verdict) providers.Result {
	r := providers.Result{Provider: p, Verdict: v, FetchedAt: time.Date(2025, 6, 15, 8, 6, 0, 0, time.UTC), Raw: []byte(`{}`)}
	switch p {
	case providers.NameGreyNoise:
		r.GreyNoise = &providers.GreyNoiseData{Classification: "malicious", Name: "unknown"}
	case providers.NameAbuseIPDB:
		r.AbuseIPDB = &providers.AbuseIPDBData{Score: 100, Categories: []int{14, 18}}
	case providers.NameFeodo:
		r.Feodo = &providers.FeodoData{Listed: true, MalwareFamily: "QakBot"}
	case providers.NameThreatFox:
		r.ThreatFox = &providers.ThreatFoxData{Listed: true, MalwareFamilies: []string{"QakBot"}}
	}
	return r
}

func fail(p string, k providers.ErrorKind) providers.Result {
	return providers.Result{Provider: p, ErrKind: k, Err: "boom"}
}

// A failure never overwrites an answer: the answer stays, with its verdict,
// marked stale so that it is asked again.
func TestMergeNeverClobbersAGoodAnswer(t *testing.T) {
	r := NewRow("203.0.113.45", all)
	r.Merge(ok(providers.NameAbuseIPDB, providers.VerdictMalicious))
	r.Merge(fail(providers.NameAbuseIPDB, providers.ErrRateLimited))
	if r.Status.Of(providers.NameAbuseIPDB) != StatusStale || r.AbuseIPDBScore == nil || *r.AbuseIPDBScore != 100 || r.AggregateVerdict != "malicious" {
		t.Fatalf("a later error clobbered the answer: %+v", r)
	}
	r.MarkDeferred(providers.NameAbuseIPDB)
	r.MarkReserved(providers.NameAbuseIPDB)
	if r.Status.Of(providers.NameAbuseIPDB) != StatusStale || r.AggregateVerdict != "malicious" {
		t.Fatal("deferred or reserved clobbered an answer")
	}
	if r.Complete() || !slices.Contains(r.Pending(), providers.NameAbuseIPDB) {
		t.Fatal("a stale answer is not asked again")
	}
	r.Merge(ok(providers.NameAbuseIPDB, providers.VerdictSuspicious))
	if r.Status.Of(providers.NameAbuseIPDB) != StatusOK || r.AggregateVerdict != "suspicious" {
		t.Fatal("a new answer did not replace the stale one")
	}
}

func TestPartialRowsAndCompletion(t *testing.T) {
	r := NewRow("203.0.113.99", all)
	r.Merge(ok(providers.NameGreyNoise, providers.VerdictSuspicious))
	r.Merge(fail(providers.NameAbuseIPDB, providers.ErrDisabled))
	r.Merge(fail(providers.NameThreatFox, providers.ErrTimeout))
	r.MarkDeferred(providers.NameFeodo)
	if r.Complete() {
		t.Fatal("a row with a timed-out and a deferred provider is complete")
	}
	if p := r.Pending(); len(p) != 2 || p[0] != providers.NameFeodo || p[1] != providers.NameThreatFox {
		t.Fatalf("pending %v, want feodo and threatfox (disabled is final)", p)
	}
	if r.AbuseIPDBScore != nil || r.ThreatFoxListed != nil || r.FeodoListed != nil {
		t.Fatal("failed providers left columns set")
	}
	r.Merge(ok(providers.NameFeodo, providers.VerdictMalicious))
	r.Merge(ok(providers.NameThreatFox, providers.VerdictNone))
	if !r.Complete() || r.AggregateVerdict != "malicious" || r.GreyNoiseClassification == nil {
		t.Fatalf("after the late answers: complete=%v verdict=%s", r.Complete(), r.AggregateVerdict)
	}
}

func TestUnansweredIsNullNotEmpty(t *testing.T) {
	r := NewRow("192.0.2.77", all)
	noResult := ok(providers.NameThreatFox, providers.VerdictNone)
	noResult.ThreatFox = &providers.ThreatFoxData{}
	r.Merge(noResult)
	b, _ := json.Marshal(r)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	for _, k := range []string{"greynoise_tags", "abuseipdb_score", "abuseipdb_categories", "feodo_listed", "greynoise_queried_at"} {
		if v, present := m[k]; !present || v != nil {
			t.Errorf("%s = %v, want null", k, v)
		}
	}
	// No provider had an opinion: DECNET's aggregate is null then.
	if v, present := m["aggregate_verdict"]; m["threatfox_listed"] != false || !present || v != nil {
		t.Errorf("answered columns: %v %v", m["threatfox_listed"], m["aggregate_verdict"])
	}
}

func BenchmarkAggregateRow(b *testing.B) {
	results := []providers.Result{
		ok(providers.NameGreyNoise, providers.VerdictMalicious), ok(providers.NameAbuseIPDB, providers.VerdictMalicious),
		ok(providers.NameFeodo, providers.VerdictMalicious), fail(providers.NameThreatFox, providers.ErrTimeout),
	}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		r := NewRow("203.0.113.45", all)
		for _, res := range results {
			r.Merge(res)
		}
		if r.AggregateVerdict != "malicious" {
			b.Fatal(r.AggregateVerdict)
		}
	}
}

// A per-IP provider skipped because a bulk list lists the IP is final (the
// row is complete without it), says so, and leaves no verdict of its own;
// the list's columns are in the table row and the enrichment.
func TestCoveredIsFinalAndListsAreColumns(t *testing.T) {
	configured := append(slices.Clone(all), providers.NameAbuseIPDBBlacklist)
	r := NewRow("203.0.113.45", configured)
	for _, p := range []string{providers.NameGreyNoise, providers.NameFeodo, providers.NameThreatFox} {
		r.Merge(ok(p, providers.VerdictNone))
	}
	r.Merge(ok(providers.NameAbuseIPDB, providers.VerdictBenign)) // an older answer
	score := 100
	r.Merge(providers.Result{Provider: providers.NameAbuseIPDBBlacklist, Verdict: providers.VerdictMalicious,
		FetchedAt: time.Date(2025, 6, 15, 6, 0, 0, 0, time.UTC), List: &providers.ListData{Listed: true, Score: &score}})
	r.Merge(providers.Result{Provider: providers.NameAbuseIPDB, ErrKind: providers.ErrCovered, Err: "listed by abuseipdb_blacklist"})
	if !r.Complete() || r.Status.Of(providers.NameAbuseIPDB) != "covered" || r.Verdict(providers.NameAbuseIPDB) != providers.VerdictNone {
		t.Fatalf("complete %v, status %q, verdict %q", r.Complete(), r.Status.Of(providers.NameAbuseIPDB), r.Verdict(providers.NameAbuseIPDB))
	}
	if !r.Listed(providers.NameAbuseIPDBBlacklist) || r.AggregateVerdict != "malicious" {
		t.Fatalf("listed %v, aggregate %s", r.Listed(providers.NameAbuseIPDBBlacklist), r.AggregateVerdict)
	}
	var table map[string]any
	b, _ := json.Marshal(r.Table())
	if err := json.Unmarshal(b, &table); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	for k, want := range map[string]any{
		"abuseipdb_blacklist_listed": true, "abuseipdb_blacklist_score": 100.0, "abuseipdb_blacklist_status": "ok",
		"abuseipdb_blacklist_verdict": "malicious", "abuseipdb_status": "covered", "spamhaus_drop_listed": nil,
		"spamhaus_drop_status": nil, "threatfox_export_tags": []any{},
	} {
		if got, ok := table[k]; !ok || fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("table %s = %v (present %v), want %v", k, got, ok, want)
		}
	}
	var enr map[string]any
	b, _ = json.Marshal(r.Enrichment())
	_ = json.Unmarshal(b, &enr)
	if enr["abuseipdb_blacklist_listed"] != true || enr["abuseipdb_blacklist_score"] != 100.0 {
		t.Errorf("enrichment: %s", b)
	}
	if _, ok := enr["spamhaus_drop_listed"]; ok {
		t.Errorf("enrichment has a list that is not configured: %s", b)
	}
}

// The row's JSON written by hand where it is hot is byte for byte what
// encoding/json writes: scalars, NULLs, and strings needing escapes
// (quotes, HTML characters, control bytes, invalid UTF-8).
func TestTableRowJSONIsEncodingJSONs(t *testing.T) {
	yes, score := true, 87
	raw := `{"ip":"203.0.113.9","note":"<script>&\"\u0001` + "\xff" + `"}`
	at := time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC)
	for _, v := range []any{true, false, 0, -7, int64(1) << 40, &yes, (*bool)(nil), &score, (*int)(nil),
		&raw, (*string)(nil), []string{"a<b", "é"}, []string{}, &at, (*time.Time)(nil), "x"} {
		want, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendJSON(nil, v); string(got) != string(want) {
			t.Errorf("%#v: %s, encoding/json writes %s", v, got, want)
		}
	}
	r := NewRow("203.0.113.9", providers.ListNames)
	r.SetList(0, ListAnswer{Listed: &yes, Score: &score, Tags: []string{"<tag>"}, Raw: &raw, QueriedAt: &at})
	got, err := r.Table().MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	want, err := json.Marshal(r.Table())
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Errorf("MarshalJSON:\n%s\njson.Marshal:\n%s", got, want)
	}
}
