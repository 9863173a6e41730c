package clickhouse

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/redpanda-data/benthos/v4/public/service"

	"github.com/decnet/decnet-stream/internal/chtest"
)

func newTestOutput(t testing.TB, dsn, extra string) *output {
	t.Helper()
	conf, err := spec().ParseYAML(fmt.Sprintf("dsn: %s\ntable: attacker_intel\nauto_create: true\nargs_mapping: root = this\n%s", dsn, extra), nil)
	if err != nil {
		t.Fatal(err)
	}
	o, err := newOutput(conf, service.MockResources())
	if err != nil {
		t.Fatal(err)
	}
	if err := o.Connect(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = o.Close(context.Background()) })
	return o
}

// row is an attacker_intel row as intel_enrich writes it (include_raw).
func row(ip string, verdict string, version int64) *service.Message {
	at := time.Date(2025, 6, 15, 8, 6, 0, 0, time.UTC).Add(time.Duration(version) * time.Second)
	return service.NewMessage([]byte(fmt.Sprintf(`{
 "attacker_ip": %q, "schema_version": 1,
 "greynoise_classification": "malicious", "greynoise_name": "unknown", "greynoise_tags": [], "greynoise_raw": "{\"ip\":\"x\"}",
 "greynoise_queried_at": %q,
 "abuseipdb_score": 100, "abuseipdb_categories": [14, 18], "abuseipdb_raw": null, "abuseipdb_queried_at": %q,
 "feodo_listed": null, "feodo_malware_family": null, "feodo_raw": null, "feodo_queried_at": null,
 "threatfox_listed": false, "threatfox_threat_types": [], "threatfox_ioc_types": [], "threatfox_malware_families": [],
 "threatfox_raw": null, "threatfox_queried_at": %q,
 "aggregate_verdict": %q, "greynoise_status": "ok", "abuseipdb_status": "ok", "feodo_status": "deferred", "threatfox_status": "ok",
 "cached_at": %q, "expires_at": %q, "version": %d,
 "carrier_topic": "attacker.observed", "carrier_partition": 0, "carrier_offset": 7}`,
		ip, at.Format(time.RFC3339), at.Format(time.RFC3339), at.Format(time.RFC3339), verdict,
		at.Format(time.RFC3339), at.Add(24*time.Hour).Format(time.RFC3339), at.UnixNano())))
}

func ipN(i int) string { return fmt.Sprintf("45.%d.%d.%d", i>>16&255, i>>8&255, i&255) }

// query returns q's result as "a,b,…" over all rows and columns.
func query(t testing.TB, dsn, q string) string {
	t.Helper()
	var out []string
	for _, row := range chtest.Query(t, dsn, q) {
		out = append(out, row...)
	}
	return strings.Join(out, ",")
}

func TestAttackerIntelRowsLandOnceAndCollapse(t *testing.T) {
	srv := chtest.Start(t)
	o := newTestOutput(t, srv.DSN(), "")
	ctx := context.Background()

	if ddl := query(t, srv.DSN(), "SELECT create_table_query FROM system.tables WHERE name = 'attacker_intel'"); strings.Contains(ddl, "LowCardinality") || !strings.Contains(ddl, "ReplacingMergeTree(version)") {
		t.Fatalf("18.16 got the wrong DDL: %s", ddl)
	}

	const n = 100_000
	for start := 0; start < n; start += 10_000 {
		batch := make(service.MessageBatch, 0, 10_000)
		for i := start; i < start+10_000; i++ {
			batch = append(batch, row(ipN(i), "malicious", 1))
		}
		if err := o.WriteBatch(ctx, batch); err != nil {
			t.Fatal(err)
		}
	}
	if got := query(t, srv.DSN(), "SELECT count() FROM attacker_intel"); got != fmt.Sprint(n) {
		t.Fatalf("count %s, want %d", got, n)
	}
	// Delivered twice (at-least-once): one row per IP with FINAL.
	batch := make(service.MessageBatch, 0, 1000)
	for i := 0; i < 1000; i++ {
		batch = append(batch, row(ipN(i), "malicious", 1))
	}
	if err := o.WriteBatch(ctx, batch); err != nil {
		t.Fatal(err)
	}
	if got := query(t, srv.DSN(), "SELECT count() FROM attacker_intel FINAL"); got != fmt.Sprint(n) {
		t.Fatalf("count FINAL after a replay %s, want %d", got, n)
	}
	// Re-enriched: the newest answer wins.
	if err := o.WriteBatch(ctx, service.MessageBatch{row(ipN(7), "benign", 60)}); err != nil {
		t.Fatal(err)
	}
	if got := query(t, srv.DSN(), "SELECT aggregate_verdict FROM attacker_intel FINAL WHERE attacker_ip = '"+ipN(7)+"'"); got != "benign" {
		t.Fatalf("re-enriched IP reads %q", got)
	}
	if got := query(t, srv.DSN(), "SELECT feodo_listed, feodo_status, toString(length(threatfox_threat_types)) FROM attacker_intel FINAL WHERE attacker_ip = '"+ipN(7)+"'"); got != "NULL,deferred,0" {
		t.Fatalf("unanswered columns: %q", got)
	}
}

func TestMalformedRowFailsAloneWhileItsBatchLands(t *testing.T) {
	srv := chtest.Start(t)
	o := newTestOutput(t, srv.DSN(), "")
	bad := service.NewMessage([]byte(`{"attacker_ip":"45.9.9.9","abuseipdb_score":"lots","cached_at":"2025-06-15T08:06:00Z","expires_at":"2025-06-16T08:06:00Z","version":1}`))
	batch := service.MessageBatch{row("45.1.1.1", "malicious", 1), bad, row("45.1.1.2", "malicious", 1)}
	err := o.WriteBatch(context.Background(), batch)
	var be *service.BatchError
	if !errors.As(err, &be) || be.IndexedErrors() != 1 {
		t.Fatalf("got %v, want one failed row", err)
	}
	be.WalkMessagesIndexedBy(batch.Index(), func(i int, _ *service.Message, err error) bool {
		if (err != nil) != (i == 1) || (i == 1 && !strings.Contains(err.Error(), "abuseipdb_score")) {
			t.Errorf("message %d: %v", i, err)
		}
		return true
	})
	if got := query(t, srv.DSN(), "SELECT count() FROM attacker_intel"); got != "2" {
		t.Fatalf("%s rows landed, want the 2 good ones", got)
	}
}

// A server stopped mid-stream: the write reports the output not connected
// (so Benthos reconnects and writes it again, and a fallback output never
// takes an outage for bad rows), and the write after the restart lands every
// row.
func TestServerRestartLosesNoRow(t *testing.T) {
	srv := chtest.Start(t)
	o := newTestOutput(t, srv.DSN(), "dial_timeout: 1s")
	ctx := context.Background()
	written := 0
	write := func(from, to int) error {
		batch := make(service.MessageBatch, 0, to-from)
		for i := from; i < to; i++ {
			batch = append(batch, row(ipN(i), "malicious", 1))
		}
		return o.WriteBatch(ctx, batch)
	}
	if err := write(0, 5000); err != nil {
		t.Fatal(err)
	}
	written = 5000
	srv.Stop()
	if err := write(5000, 10000); !errors.Is(err, service.ErrNotConnected) {
		t.Fatalf("a write to a stopped server: %v, want not connected", err)
	}
	srv.Start()
	deadline := time.Now().Add(30 * time.Second)
	for {
		// What Benthos does after ErrNotConnected: connect, write again.
		err := o.Connect(ctx)
		if err == nil {
			err = write(5000, 10000)
		}
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no recovery after the restart: %v", err)
		}
	}
	written = 10000
	if got := query(t, srv.DSN(), "SELECT count() FROM attacker_intel FINAL"); got != fmt.Sprint(written) {
		t.Fatalf("%s rows after the restart, want %d", got, written)
	}
}

// clickhouse_select emits what is due, as JSON objects, poll after poll.
func TestSelectInputPollsRows(t *testing.T) {
	srv := chtest.Start(t)
	o := newTestOutput(t, srv.DSN(), "")
	if err := o.WriteBatch(context.Background(), service.MessageBatch{row("45.0.0.1", "malicious", 1), row("45.0.0.2", "benign", 1)}); err != nil {
		t.Fatal(err)
	}
	conf, err := selectSpec().ParseYAML(fmt.Sprintf("dsn: %s\npoll_interval: 10ms\nquery: SELECT attacker_ip, aggregate_verdict, feodo_listed, cached_at FROM attacker_intel FINAL ORDER BY attacker_ip", srv.DSN()), nil)
	if err != nil {
		t.Fatal(err)
	}
	in, err := newSelectInput(conf)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := in.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	defer in.Close(ctx)
	for poll := 0; poll < 2; poll++ {
		batch, ack, err := in.ReadBatch(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(batch) != 2 {
			t.Fatalf("poll %d: %d rows", poll, len(batch))
		}
		first, _ := batch[0].AsStructured()
		m := first.(map[string]any)
		if m["attacker_ip"] != "45.0.0.1" || m["aggregate_verdict"] != "malicious" || m["feodo_listed"] != nil || m["cached_at"] != "2025-06-15T08:06:01Z" {
			t.Fatalf("poll %d: row %v", poll, m)
		}
		_ = ack(ctx, nil)
	}
}

// TLS to ClickHouse is verified unless a config says otherwise: a server
// whose certificate no CA vouches for is refused at the handshake.
func TestTLSIsVerifiedByDefault(t *testing.T) {
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	defer srv.Close()
	conf, err := spec().ParseYAML(fmt.Sprintf(`
dsn: clickhouse://%s/default
table: attacker_intel
args_mapping: root = this
auto_create: true
tls: { enabled: true }
`, strings.TrimPrefix(srv.URL, "https://")), nil)
	if err != nil {
		t.Fatal(err)
	}
	o, err := newOutput(conf, service.MockResources())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := o.Connect(ctx); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("connect over unverifiable TLS: %v, want a certificate error", err)
	}
}
