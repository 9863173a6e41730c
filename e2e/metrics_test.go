package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/decnet/decnet-stream/internal/chtest"
	"github.com/decnet/decnet-stream/internal/fixtures"
)

// scrape reads base/metrics and returns its metric families (the names of
// its "# TYPE" lines) and the whole text.
func scrape(t *testing.T, base string) (map[string]string, string) {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("/metrics is %q, not Prometheus' text format", ct)
	}
	families := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			families[f[2]] = f[3]
		}
	}
	return families, string(b)
}

// checkMetrics: the shipped pipeline serves our counters and its consumer
// lag in Prometheus' format.
func checkMetrics(t *testing.T, base string) {
	t.Helper()
	families, text := scrape(t, base)
	for name, kind := range map[string]string{
		"kafka_records_received": "counter", "kafka_consumer_lag": "gauge", "topic_router_routed": "counter",
		"intel_enriched": "counter", "intel_verdicts": "counter", "intel_provider_requests": "counter",
		"clickhouse_insert_latency_ns": "summary", "dead_letters": "counter",
	} {
		if families[name] != kind {
			t.Errorf("/metrics: %s is %q, want a %s", name, families[name], kind)
		}
	}
	if !regexp.MustCompile(`(?m)^kafka_consumer_lag\{[^}]*topic="attacker\.observed"[^}]*\} \d+$`).MatchString(text) {
		t.Errorf("no consumer lag for attacker.observed in /metrics")
	}
}

// metricRef is a metric name in a PromQL expression: followed by a label
// selector or a range (every query of the dashboard writes one).
var metricRef = regexp.MustCompile(`([a-zA-Z_:][a-zA-Z0-9_:]*)\s*[{\[]`)

// dashboardMetrics is every metric the shipped dashboard queries.
func dashboardMetrics(t *testing.T) map[string][]string {
	t.Helper()
	raw, err := os.ReadFile("../deploy/grafana/decnet-stream.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
		Templating struct{ List []struct{ Query any } }
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("dashboard: %v", err)
	}
	refs := map[string][]string{}
	for _, p := range d.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q queries nothing", p.Title)
		}
		for _, tg := range p.Targets {
			names := metricRef.FindAllStringSubmatch(tg.Expr, -1)
			if len(names) == 0 {
				t.Errorf("panel %q: %q names no metric with a selector", p.Title, tg.Expr)
			}
			for _, m := range names {
				refs[m[1]] = append(refs[m[1]], p.Title)
			}
		}
	}
	for _, v := range d.Templating.List {
		if q, ok := v.Query.(string); ok {
			if m := regexp.MustCompile(`label_values\((\w+)`).FindStringSubmatch(q); m != nil {
				refs[m[1]] = append(refs[m[1]], "variable")
			}
		}
	}
	return refs
}

// Every metric the Grafana dashboard queries exists in /metrics of the
// shipped pipeline, run through what each panel shows: new attackers and
// repeat sightings, a provider that fails, dead letters, inserts.
func TestDashboardQueriesResolve(t *testing.T) {
	refs := dashboardMetrics(t)
	addr := startBroker(t)
	env, _ := pipelineEnv(t, addr)
	// GreyNoise fails for one attacker (a provider error, a partial row);
	// the others get complete rows (cache hits when seen again).
	ps := fixtures.NewProviderServer(fixtures.FS())
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/192.0.2.77") {
			http.Error(w, "unavailable", http.StatusServiceUnavailable)
			return
		}
		ps.Handler().ServeHTTP(w, r)
	}))
	t.Cleanup(failing.Close)
	env["GREYNOISE_BASE_URL"] = failing.URL
	const key = "sekrit-abuseipdb-key-123"
	env["DECNET_ABUSEIPDB_API_KEY"] = key
	env["CLICKHOUSE_DSN"] = chtest.Start(t).DSN()
	base := runConfigServing(t, "config/pipeline.yaml", env)

	ips := []string{"203.0.113.45", "198.51.100.23", "192.0.2.77"}
	produceEvents := func(first int) {
		var b strings.Builder
		for i, ip := range ips {
			fmt.Fprintf(&b, `%s|{"v":1,"id":"m%d","topic":"attacker.observed","type":"x","ts":1750000000,"payload":{"attacker_ip":%q}}`+"\n", ip, first+i, ip)
		}
		b.WriteString("x|not json\n")
		kcat(t, b.String(), "-P", "-b", addr, "-t", "attacker.observed", "-K", "|")
	}
	produceEvents(0)
	out := client(t, kgo.SeedBrokers(addr), kgo.ConsumeTopics("attacker.intel.enriched"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.AllowAutoTopicCreation())
	consume(t, out, len(ips), 60*time.Second)
	produceEvents(len(ips)) // repeat sightings: cache hits
	waitConsumed(t, addr, "decnet-intel", "attacker.observed")

	families, text := scrape(t, base)
	if strings.Contains(text, key) {
		t.Error("/metrics shows an API key")
	}
	for name, panels := range refs {
		base := name
		for _, suffix := range []string{"_sum", "_count", "_bucket"} {
			if b, ok := strings.CutSuffix(name, suffix); ok && (families[b] == "summary" || families[b] == "histogram") {
				base = b
			}
		}
		if families[base] == "" {
			t.Errorf("the dashboard queries %s (%s), which /metrics of the running pipeline does not have", name, strings.Join(panels, ", "))
		}
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", text)
	}
}
