package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/decnet/decnet-stream/internal/chserver"
	"github.com/decnet/decnet-stream/internal/chtest"
	"github.com/decnet/decnet-stream/internal/fixtures"
	"github.com/decnet/decnet-stream/plugins/intel_processor"
)

// kcat runs the kcat client (librdkafka), a Kafka client nobody here wrote.
func kcat(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	path, err := exec.LookPath("kcat")
	if err != nil {
		t.Fatal("kcat is required (apt-get install kcat; .ci/run installs it)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kcat %v: %v", args, err)
	}
	return string(out)
}

// pipelineEnv runs config/pipeline.yaml against the embedded broker and a
// local server answering from the recorded provider fixtures.
func pipelineEnv(t *testing.T, addr string) (map[string]string, *fixtures.ProviderServer) {
	ps := fixtures.NewProviderServer(fixtures.FS())
	srv := httptest.NewServer(ps.Handler())
	t.Cleanup(srv.Close)
	return map[string]string{
		"KAFKA_SEED_BROKERS": addr, "GREYNOISE_BASE_URL": srv.URL, "ABUSEIPDB_BASE_URL": srv.URL,
		"THREATFOX_BASE_URL": srv.URL, "DECNET_ABUSEIPDB_API_KEY": "k", "DECNET_THREATFOX_API_KEY": "k",
		"FEODO_URL": srv.URL + "/ipblocklist.json", "INTEL_ALLOW_DOCUMENTATION_RANGES": "true",
		"THREATFOX_EXPORT_URL": srv.URL + "/export/json/ip-port/recent/",
		"SPAMHAUS_DROP_V4_URL": srv.URL + "/drop/drop_v4.json", "SPAMHAUS_DROP_V6_URL": srv.URL + "/drop/drop_v6.json",
		"INTEL_FEED_DIR": t.TempDir(),
		// A budget file of the test's own: an empty value means the shipped
		// default (./var/intel/budget.json), and runs of the same day then
		// shared one day's budget until GreyNoise's was spent.
		"INTEL_STATE_FILE": filepath.Join(t.TempDir(), "budget.json"),
	}, ps
}

// Every event is accounted for: one enriched event per unique IP, every
// refused event on the dead-letter topic, non-routable ones skipped.
func TestPipelineEnrichesOncePerIPAndDeadLettersTheRest(t *testing.T) {
	addr := startBroker(t)
	ips := []string{"203.0.113.45", "203.0.113.99", "198.51.100.23", "198.51.100.200", "192.0.2.77"}
	// The mixed stream a sensor fleet sends, produced by kcat (librdkafka):
	// repeat sightings, bad IPs, non-routable IPs, garbage, spoofed topics.
	lines := map[string]*strings.Builder{"attacker.observed": {}, "attacker.scored": {}}
	bad, skipped, total := 0, 0, 0
	wantReason := map[string]int{}
	for i := 0; i < 500; i++ {
		ip := ips[i%len(ips)]
		subject := "attacker.observed"
		if i%4 == 0 {
			subject = "attacker.scored"
		}
		body := ""
		switch {
		case i%50 == 7:
			ip, bad = "not-an-ip", bad+1
			wantReason["bad_key"]++
		case i%50 == 9:
			ip, skipped = "10.0.0.5", skipped+1
		case i%50 == 11:
			body, bad = "not json at all", bad+1
			wantReason["invalid_json"]++
		case i%50 == 13:
			body, bad = fmt.Sprintf(`{"v":1,"id":"s%d","topic":"attacker.session.ended","type":"x","ts":1,"payload":{"attacker_ip":"203.0.113.45"}}`, i), bad+1
			wantReason["spoofed_topic"]++
		}
		if body == "" {
			body = fmt.Sprintf(`{"v":1,"id":"e%d","topic":%q,"type":"x","ts":1750000000,"payload":{"attacker_ip":%q}}`, i, subject, ip)
		}
		fmt.Fprintf(lines[subject], "%s|%s\n", ip, body)
		total++
	}
	for topic, b := range lines {
		kcat(t, b.String(), "-P", "-b", addr, "-t", topic, "-K", "|")
	}
	statsBefore := intel_processor.Stats()
	env, ps := pipelineEnv(t, addr)
	chSrv := chtest.Start(t)
	env["CLICKHOUSE_DSN"] = chSrv.DSN()
	base := runConfigServing(t, "config/pipeline.yaml", env)

	out := client(t, kgo.SeedBrokers(addr), kgo.ConsumeTopics("attacker.intel.enriched", "decnet.dlq"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.AllowAutoTopicCreation())
	got := consume(t, out, len(ips)+bad, 60*time.Second)
	enriched, dead := map[string]string{}, 0
	gotReason := map[string]int{}
	for _, r := range got {
		if r.Topic == "decnet.dlq" {
			dead++
			gotReason[header(r, "decnet_error")]++
			continue
		}
		var ev struct {
			V       int    `json:"v"`
			Topic   string `json:"topic"`
			Payload struct {
				IP      string            `json:"attacker_ip"`
				Verdict string            `json:"aggregate_verdict"`
				Status  map[string]string `json:"provider_status"`
				Raw     *string           `json:"greynoise_raw"`
			} `json:"payload"`
		}
		if err := json.Unmarshal(r.Value, &ev); err != nil || ev.V != 1 || ev.Topic != "attacker.intel.enriched" || string(r.Key) != ev.Payload.IP {
			t.Fatalf("enriched record %s (key %s): %v", r.Value, r.Key, err)
		}
		if ev.Payload.Raw != nil || ev.Payload.Status["greynoise"] != "ok" {
			t.Errorf("enriched payload carries raw answers or lacks statuses: %s", r.Value)
		}
		if _, dup := enriched[ev.Payload.IP]; dup {
			t.Errorf("%s enriched twice", ev.Payload.IP)
		}
		enriched[ev.Payload.IP] = ev.Payload.Verdict
	}
	// DECNET's verdict rules (the shipped policy): a Feodo listing is
	// malicious whatever its status (203.0.113.99's offline Emotet entry),
	// and an AbuseIPDB score under 25 is benign even with no reports
	// (192.0.2.77).
	want := map[string]string{"203.0.113.45": "malicious", "203.0.113.99": "malicious", "198.51.100.23": "benign",
		"198.51.100.200": "malicious", "192.0.2.77": "benign"}
	for ip, v := range want {
		if enriched[ip] != v {
			t.Errorf("%s: verdict %q, want %q", ip, enriched[ip], v)
		}
	}
	if dead != bad || fmt.Sprint(gotReason) != fmt.Sprint(wantReason) {
		t.Errorf("dead letters %v, want %v", gotReason, wantReason)
	}
	// Reconcile: every event is a change, a repeat, a dead letter or skipped.
	st := intel_processor.Stats()
	delta := func(k string) int64 { return st[k].(int64) - statsBefore[k].(int64) }
	if got := delta("events") + delta("skipped") + int64(dead); got != int64(total) {
		t.Errorf("accounted for %d events (%d enriched or repeats, %d skipped, %d dead), want %d",
			got, delta("events"), delta("skipped"), dead, total)
	}
	if delta("changes") != int64(len(want)) || delta("skipped") != int64(skipped) {
		t.Errorf("%d changes (want %d), %d skipped (want %d)", delta("changes"), len(want), delta("skipped"), skipped)
	}
	// kcat reads the enriched events back.
	back := kcat(t, "", "-C", "-b", addr, "-t", "attacker.intel.enriched", "-o", "beginning", "-c", fmt.Sprint(len(want)), "-f", "%k\n")
	if keys := strings.Fields(back); len(keys) != len(want) {
		t.Errorf("kcat read %d enriched events back: %q", len(keys), back)
	}
	if ps.Calls("greynoise") != len(ips) || ps.Calls("feodo") != 1 {
		t.Errorf("greynoise asked %d times for %d IPs; feodo fetched %d times", ps.Calls("greynoise"), len(ips), ps.Calls("feodo"))
	}
	// The rows are batched (ClickHouse wants few, large inserts) and written
	// beside the enriched events, and the table is created when the output
	// first connects: wait for them, bounded.
	var rows [][]string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		var err error
		rows, err = chserver.Query(context.Background(), chSrv.DSN(), "SELECT attacker_ip, aggregate_verdict FROM attacker_intel FINAL ORDER BY attacker_ip")
		if err == nil && len(rows) >= len(want) {
			break
		}
	}
	if len(rows) != len(want) {
		t.Fatalf("attacker_intel holds %d rows, want %d: %v", len(rows), len(want), rows)
	}
	for _, r := range rows {
		if want[r[0]] != r[1] {
			t.Errorf("attacker_intel %s: %s, want %s", r[0], r[1], want[r[0]])
		}
	}
	t.Logf("in=%d enriched=%d dead=%d skipped=%d (the rest are repeat sightings); %d attacker_intel rows", total, len(enriched), dead, skipped, len(rows))

	// The shipped pipeline serves Prometheus' format at /metrics, with the
	// lag of what it consumes.
	checkMetrics(t, base)

	// Warm start: a second pipeline (a restart, or a new replica) reading
	// the same events starts with the rows from ClickHouse and asks no
	// provider anything. Re-reading the very records that published the
	// rows is what a crash between the row and the enriched event looks
	// like, so those (and only those: one per IP) publish again.
	calls := ps.Calls("greynoise") + ps.Calls("abuseipdb") + ps.Calls("threatfox") + ps.Calls("feodo")
	env["KAFKA_CONSUMER_GROUP"], env["OUTPUT_TOPIC"] = "decnet-intel-replica", "replica.enriched"
	runConfig(t, "config/pipeline.yaml", env)
	waitConsumed(t, addr, "decnet-intel-replica", "attacker.observed", "attacker.scored")
	if now := ps.Calls("greynoise") + ps.Calls("abuseipdb") + ps.Calls("threatfox") + ps.Calls("feodo"); now != calls {
		t.Fatalf("the warm-started pipeline made %d provider calls, want 0", now-calls)
	}
	adm := kadm.NewClient(out)
	ends, err := adm.ListEndOffsets(context.Background(), "replica.enriched")
	if err != nil {
		t.Fatal(err)
	}
	republished := int64(0)
	ends.Each(func(o kadm.ListedOffset) { republished += max(o.Offset, 0) })
	if republished > int64(len(want)) {
		t.Fatalf("the warm-started pipeline republished %d enrichments for %d IPs", republished, len(want))
	}
}

// waitConsumed waits until group has committed every record of topics.
func waitConsumed(t *testing.T, addr, group string, topics ...string) {
	t.Helper()
	adm := kadm.NewClient(client(t, kgo.SeedBrokers(addr)))
	deadline := time.Now().Add(60 * time.Second)
	for ; time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		lags, err := adm.Lag(context.Background(), group)
		if err != nil {
			continue
		}
		l, ok := lags[group]
		if !ok || l.FetchErr != nil || l.DescribeErr != nil {
			continue
		}
		total, seen := int64(0), 0
		for _, tp := range topics {
			for _, pl := range l.Lag[tp] {
				total += pl.Lag
				seen++
			}
		}
		if seen > 0 && total == 0 {
			return
		}
	}
	t.Fatalf("group %s never caught up", group)
}
