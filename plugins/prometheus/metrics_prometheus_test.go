package prometheus

import (
	"context"
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/redpanda-data/benthos/v4/public/service"
)

func newTestExporter(t *testing.T, yaml string) *exporter {
	t.Helper()
	conf, err := spec().ParseYAML(yaml, nil)
	if err != nil {
		t.Fatal(err)
	}
	e, err := newExporter(conf, service.MockResources().Logger())
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func scrape(t *testing.T, e *exporter) string {
	t.Helper()
	rec := httptest.NewRecorder()
	e.HandlerFunc()(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("/metrics answered %d", rec.Code)
	}
	return rec.Body.String()
}

func wantLines(t *testing.T, text string, lines ...string) {
	t.Helper()
	for _, l := range lines {
		if !strings.Contains(text, l+"\n") {
			t.Errorf("no line %q in:\n%s", l, text)
		}
	}
}

// Benthos asks for one name once per component: the values of all of them
// are one metric with their labels, as Prometheus wants.
func TestCountersGaugesAndSummariesInTextFormat(t *testing.T) {
	e := newTestExporter(t, `{}`)
	e.NewCounterCtor("input_received", "label", "path")("a", "root.input").Incr(3)
	e.NewCounterCtor("input_received", "label", "path")("b", "root.input.broker.inputs.1").Incr(2)
	e.NewCounterCtor("topic_router_refused", "reason")("bad_envelope").Incr(1)
	e.NewGaugeCtor("kafka_consumer_lag", "topic", "partition")("attacker.observed", "3").Set(42)
	timer := e.NewTimerCtor("output_latency_ns", "label", "path")("", "root.output")
	timer.Timing(2_000_000)
	timer.Timing(4_000_000)
	wantLines(t, scrape(t, e),
		"# TYPE input_received counter",
		`input_received{label="a",path="root.input"} 3`,
		`input_received{label="b",path="root.input.broker.inputs.1"} 2`,
		`topic_router_refused{reason="bad_envelope"} 1`,
		"# TYPE kafka_consumer_lag gauge",
		`kafka_consumer_lag{partition="3",topic="attacker.observed"} 42`,
		"# TYPE output_latency_ns summary",
		`output_latency_ns_sum{label="",path="root.output"} 6e+06`,
		`output_latency_ns_count{label="",path="root.output"} 2`,
	)
}

func TestHistogramTimingsAreInSeconds(t *testing.T) {
	for _, field := range []string{"use_histogram_timing", "use_histogram_timings"} {
		e := newTestExporter(t, field+": true\nhistogram_buckets: [ 0.001, 0.01, 1 ]")
		e.NewTimerCtor("output_latency_ns")().Timing(5_000_000) // 5ms
		wantLines(t, scrape(t, e),
			"# TYPE output_latency_ns histogram",
			`output_latency_ns_bucket{le="0.001"} 0`,
			`output_latency_ns_bucket{le="0.01"} 1`,
			"output_latency_ns_sum 0.005",
		)
	}
}

// A name asked for again with other label keys, and names Prometheus
// would refuse, never break the service: the first wins, the rest is
// made legal.
func TestConflictingLabelsAndIllegalNames(t *testing.T) {
	e := newTestExporter(t, `{}`)
	e.NewCounterCtor("x_total", "a")("1").Incr(1)
	e.NewCounterCtor("x_total", "b")("2").Incr(5) // dropped, logged
	e.NewGaugeCtor("x_total")().Set(9)            // another kind: dropped too
	e.NewCounterCtor("9weird.name-x", "la.bel")("v").Incr(1)
	text := scrape(t, e)
	wantLines(t, text, `x_total{a="1"} 1`, `_weird_name_x{la_bel="v"} 1`)
	if strings.Contains(text, `b="2"`) {
		t.Errorf("conflicting series exported:\n%s", text)
	}
}

func TestProcessAndGoMetricsOnRequest(t *testing.T) {
	text := scrape(t, newTestExporter(t, `{ add_process_metrics: true, add_go_metrics: true }`))
	for _, name := range []string{"process_resident_memory_bytes", "go_goroutines"} {
		if !strings.Contains(text, "# TYPE "+name) {
			t.Errorf("no %s", name)
		}
	}
	if text := scrape(t, newTestExporter(t, `{}`)); strings.Contains(text, "go_goroutines") {
		t.Error("Go metrics exported without add_go_metrics")
	}
}

// At shutdown the metrics are pushed to the gateway, with basic auth, and
// written to the file.
func TestShutdownPushesAndWritesTheFile(t *testing.T) {
	var mu sync.Mutex
	var got struct{ method, path, auth, body string }
	gw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		got.method, got.path, got.auth, got.body = r.Method, r.URL.Path, r.Header.Get("Authorization"), string(b)
		mu.Unlock()
		w.WriteHeader(http.StatusOK)
	}))
	defer gw.Close()
	file := filepath.Join(t.TempDir(), "metrics.prom")
	e := newTestExporter(t, `
push_url: `+gw.URL+`
push_job_name: decnet_stream
push_basic_auth: { username: ops, password: s3cret }
file_output_path: `+file)
	e.NewCounterCtor("input_received")().Incr(7)
	if err := e.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if got.method != http.MethodPut || got.path != "/metrics/job/decnet_stream" {
		t.Errorf("pushed %s %s", got.method, got.path)
	}
	if got.auth != "Basic "+base64.StdEncoding.EncodeToString([]byte("ops:s3cret")) {
		t.Errorf("push auth %q", got.auth)
	}
	if got.body == "" {
		t.Error("nothing pushed")
	}
	b, err := os.ReadFile(file)
	if err != nil || !strings.Contains(string(b), "input_received 7\n") {
		t.Fatalf("file: %v\n%s", err, b)
	}
}

func TestBadSettingsAreRefused(t *testing.T) {
	for _, yaml := range []string{
		`summary_quantiles_objectives: [ { quantile: 1.5, error: 0.1 } ]`,
		`{ push_url: "http://127.0.0.1:1", push_interval: "soon" }`,
	} {
		conf, err := spec().ParseYAML(yaml, nil)
		if err != nil {
			continue
		}
		if _, err := newExporter(conf, service.MockResources().Logger()); err == nil {
			t.Errorf("accepted %s", yaml)
		}
	}
}
