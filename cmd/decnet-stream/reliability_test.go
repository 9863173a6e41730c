package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/decnet/decnet-stream/internal/chschema"
	"github.com/decnet/decnet-stream/internal/chserver"
	"github.com/decnet/decnet-stream/internal/chtest"
	"github.com/decnet/decnet-stream/internal/fixtures"
	"github.com/decnet/decnet-stream/internal/lab"
	"github.com/decnet/decnet-stream/internal/providersim"
)

// The reliability suite runs short in `go test ./...` and at the issue's
// sizes with -reliability.full (go tool task test:reliability).
var reliabilityFull = flag.Bool("reliability.full", false, "run the reliability tests at full size (200k events, a 30s ClickHouse outage)")

// sized picks the short or the full figure.
func sized[T any](short, full T) T {
	if *reliabilityFull {
		return full
	}
	return short
}

// newLab starts what a pipeline run needs for t: a fresh embedded broker
// (its log under a folder, so it can restart), a local ClickHouse and the
// simulated providers.
func newLab(t *testing.T) *lab.Lab {
	t.Helper()
	root, err := chserver.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	sim, err := providersim.Start(fixtures.FS(), providersim.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Close)
	l := &lab.Lab{Binary: binary, Root: root, Tmp: t.TempDir(), CH: chtest.Start(t).Server, Sim: sim, BrokerDataDir: t.TempDir()}
	if err := l.FreshBroker(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.CloseBroker)
	t.Cleanup(func() {
		if bad := sim.Forbidden(); len(bad) > 0 {
			t.Errorf("providers were asked about non-routable addresses: %v", bad)
		}
	})
	return l
}

// pipelineOpts runs config/pipeline.yaml into table with limits a test can
// meet quickly: no rate limit, short provider timeouts and negative TTL.
func pipelineOpts(table string, extra ...string) lab.RunOpts {
	sets := append(lab.ProviderLimits("max_concurrent=64", "daily_budget=0", "rate_per_second=0", "timeout=2s"),
		"pipeline.processors.1.intel_enrich.cache.negative_ttl=1s")
	return lab.RunOpts{Config: "config/pipeline.yaml", Sets: sets,
		Env: append([]string{"CLICKHOUSE_TABLE=" + table, "INTEL_MAX_WAIT=500ms"}, extra...)}
}

func start(t *testing.T, l *lab.Lab, o lab.RunOpts) *lab.Process {
	t.Helper()
	p, err := l.Start(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		select {
		case <-p.Exited():
		default:
			p.Kill()
		}
		if t.Failed() {
			b, _ := os.ReadFile(p.Log.Name())
			if len(b) > 20000 {
				b = b[len(b)-20000:]
			}
			t.Logf("pipeline log %s ends:\n%s", p.Log.Name(), b)
		}
	})
	return p
}

func produce(t *testing.T, l *lab.Lab, pop lab.Population, idx []int, seq0 int) {
	t.Helper()
	if err := l.Produce(context.Background(), pop, idx, seq0); err != nil {
		t.Fatal(err)
	}
}

func waitCommitted(t *testing.T, l *lab.Lab, within time.Duration) {
	t.Helper()
	if _, err := l.WaitCommitted(context.Background(), "decnet-intel", within); err != nil {
		t.Fatal(err)
	}
}

// rowsOf counts the attacker_intel rows (FINAL) of a population's IPs.
func rowsOf(t *testing.T, l *lab.Lab, table string, pop lab.Population, where string) int {
	t.Helper()
	q := fmt.Sprintf("SELECT count() FROM %s FINAL WHERE attacker_ip LIKE '%d.%%'", table, 11+pop.Set)
	if where != "" {
		q += " AND " + where
	}
	rows := chtest.Query(t, l.CH.DSN(), q)
	return mustAtoi(rows[0][0])
}

// committedTotal is the sum of decnet-intel's committed offsets of the
// input topics (not the lookup topic).
func committedTotal(t *testing.T, l *lab.Lab) int64 {
	t.Helper()
	offs, err := l.Admin.FetchOffsets(context.Background(), "decnet-intel")
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	offs.Each(func(o kadm.OffsetResponse) {
		if slices.Contains(lab.InputTopics, o.Topic) {
			n += o.At
		}
	})
	return n
}

func every(n int) []int {
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	return idx
}

// SIGTERM drains: the process exits 0, every event its outputs acknowledged
// is committed, and a restart in the same group processes exactly the rest.
func TestReliabilityGracefulStopResumesExactly(t *testing.T) {
	l := newLab(t)
	l.Sim.SetLatency(100 * time.Millisecond) // slow enough to stop it mid-stream
	n, ips := sized(50_000, 200_000), sized(5_000, 20_000)
	pop := lab.Population{Set: 1, Size: ips}
	produce(t, l, pop, lab.HeavyTailed(pop, n, 7), 0)
	table := l.Table()
	// A small in-flight window, so the input cannot hand the pipeline every
	// event before the stop: the stop must come mid-stream to prove anything.
	p := start(t, l, pipelineOpts(table, "KAFKA_CHECKPOINT_LIMIT=500"))
	if _, err := p.WaitSightings(context.Background(), float64(n/4), time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := p.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.ExitErr(); err != nil {
		t.Fatalf("SIGTERM: %v, want a clean exit within shutdown_timeout", err)
	}
	committed := committedTotal(t, l)
	if committed <= 0 || committed >= int64(n) {
		t.Fatalf("the first run committed %d of %d events: the stop came too late to prove anything", committed, n)
	}

	// The restart processes exactly what the first run did not commit: one
	// more would be work done twice (the stop committed less than it
	// finished), one fewer a skipped event.
	second := start(t, l, pipelineOpts(table, "KAFKA_CHECKPOINT_LIMIT=500"))
	waitCommitted(t, l, 2*time.Minute)
	rest := second.SightingsAcked()
	if int64(rest) != int64(n)-committed {
		t.Fatalf("the first run committed %d of %d events and the restart processed %.0f, want exactly the other %d",
			committed, n, rest, int64(n)-committed)
	}
	if got := rowsOf(t, l, table, pop, ""); got != ips {
		t.Fatalf("%d of %d IPs have a row", got, ips)
	}
	t.Logf("SIGTERM after %d of %d events committed: exit 0; the restart processed exactly the other %.0f; every IP has its row", committed, n, rest)
}

// ClickHouse stops while events keep coming: the pipeline stays up, holds
// those events unacknowledged, and writes every row once the server is back.
func TestReliabilityClickHouseOutage(t *testing.T) {
	l := newLab(t)
	outage := sized(5*time.Second, 30*time.Second)
	before, during := lab.Population{Set: 2, Size: 500}, lab.Population{Set: 3, Size: 500}
	table := l.Table()
	p := start(t, l, pipelineOpts(table))
	produce(t, l, before, every(before.Size), 0)
	waitCommitted(t, l, time.Minute)

	if err := l.CH.Stop(); err != nil {
		t.Fatal(err)
	}
	produce(t, l, during, every(during.Size), 10_000)
	time.Sleep(outage) // the fault's duration, not a synchronisation
	select {
	case <-p.Exited():
		t.Fatalf("the pipeline exited during the outage: %v", p.ExitErr())
	default:
	}
	if lags, err := l.Admin.Lag(context.Background(), "decnet-intel"); err != nil || lags["decnet-intel"].Lag.Total() == 0 {
		t.Fatalf("every event was committed while ClickHouse was down (%v): rows were acknowledged unwritten", err)
	}
	if err := l.CH.Start(); err != nil {
		t.Fatal(err)
	}
	waitCommitted(t, l, 2*time.Minute)
	for _, pop := range []lab.Population{before, during} {
		if got := rowsOf(t, l, table, pop, ""); got != pop.Size {
			t.Fatalf("population %d: %d of %d rows", pop.Set, got, pop.Size)
		}
	}
	if dead, _ := l.Total(context.Background(), lab.DLQTopic); dead != 0 {
		t.Fatalf("%d events dead-lettered: an outage is not a bad row", dead)
	}
	t.Logf("ClickHouse down %s with %d events waiting: pipeline up, none committed early, every row written after", outage, during.Size)
}

// The broker stops and comes back on the same address with its log: the
// pipeline reconnects by itself and loses nothing.
func TestReliabilityBrokerRestart(t *testing.T) {
	l := newLab(t)
	before, after := lab.Population{Set: 4, Size: 500}, lab.Population{Set: 5, Size: 500}
	table := l.Table()
	p := start(t, l, pipelineOpts(table))
	produce(t, l, before, every(before.Size), 0)
	waitCommitted(t, l, time.Minute)

	l.StopBroker()
	time.Sleep(3 * time.Second) // the outage
	if err := l.StartBroker(); err != nil {
		t.Fatal(err)
	}
	produce(t, l, after, every(after.Size), 10_000)
	waitCommitted(t, l, 2*time.Minute)
	select {
	case <-p.Exited():
		t.Fatalf("the pipeline exited: %v", p.ExitErr())
	default:
	}
	for _, pop := range []lab.Population{before, after} {
		if got := rowsOf(t, l, table, pop, ""); got != pop.Size {
			t.Fatalf("population %d: %d of %d rows", pop.Set, got, pop.Size)
		}
	}
	perIP, _, _, err := l.EnrichedByIP(context.Background(), lab.EnrichedTopic)
	if err != nil {
		t.Fatal(err)
	}
	if len(perIP) != before.Size+after.Size {
		t.Fatalf("enriched events cover %d IPs, want %d", len(perIP), before.Size+after.Size)
	}
}

// Providers fail every way free tiers do: each failure is a recorded status
// on the row, the pipeline stays up with bounded memory, and once they heal
// the rows complete on the next sightings, by themselves.
func TestReliabilityProviderFaults(t *testing.T) {
	l := newLab(t)
	table := l.Table()
	p := start(t, l, pipelineOpts(table))
	rounds := []map[string]providersim.Fault{
		{providersim.GreyNoise: providersim.Fault500, providersim.AbuseIPDB: providersim.Fault429, providersim.ThreatFox: providersim.FaultGarbage},
		{providersim.GreyNoise: providersim.FaultHang, providersim.AbuseIPDB: providersim.FaultHuge, providersim.ThreatFox: providersim.FaultDrip},
	}
	var peak int64
	for r, faults := range rounds {
		pop := lab.Population{Set: 6 + r, Size: 200}
		for name, f := range faults {
			l.Sim.SetFault(name, f)
		}
		produce(t, l, pop, every(pop.Size), r*10_000)
		waitCommitted(t, l, 2*time.Minute)
		for name, f := range faults {
			if got := rowsOf(t, l, table, pop, name+"_status NOT IN ('ok', '')"); got != pop.Size {
				t.Fatalf("%s answering %q: %d of %d rows record the failure", name, f, got, pop.Size)
			}
		}
		peak = max(peak, p.RSS())

		// Healed: sightings after negative_ttl (1s) ask the failed
		// providers again, once their last attempt (up to its 2s timeout)
		// is over. The attackers keep coming back, once a second.
		for name := range faults {
			l.Sim.SetFault(name, providersim.FaultNone)
		}
		complete := "greynoise_status = 'ok' AND abuseipdb_status = 'ok' AND threatfox_status = 'ok'"
		got := 0
		for again := 1; again <= 15 && got != pop.Size; again++ {
			time.Sleep(time.Second) // the attackers' next visit
			produce(t, l, pop, every(pop.Size), r*10_000+again*1_000)
			waitCommitted(t, l, 2*time.Minute)
			got = rowsOf(t, l, table, pop, complete)
		}
		if got != pop.Size {
			statuses := chtest.Query(t, l.CH.DSN(), fmt.Sprintf("SELECT greynoise_status, abuseipdb_status, threatfox_status, count() FROM %s FINAL WHERE attacker_ip LIKE '%d.%%' GROUP BY greynoise_status, abuseipdb_status, threatfox_status", table, 11+pop.Set))
			t.Fatalf("after healing round %d: %d of %d rows complete; statuses %v", r, got, pop.Size, statuses)
		}
	}
	select {
	case <-p.Exited():
		t.Fatalf("the pipeline exited: %v", p.ExitErr())
	default:
	}
	// 100 MB bodies were refused at max_body_bytes, not read.
	if peak > 400<<20 {
		t.Fatalf("RSS reached %d MiB with faulty providers: memory is not bounded", peak>>20)
	}
	t.Logf("6 fault kinds over 2 rounds: every failure recorded, every row completed after healing, RSS %d MiB", peak>>20)
}

// Secrets stay secret: provider keys and the ClickHouse password appear in
// no log line (at debug level), metric, dead letter or `echo` output.
func TestReliabilitySecretsNeverLeak(t *testing.T) {
	l := newLab(t)
	secrets := []string{"sekrit-gn-5c1f", "sekrit-ab-77e0", "sekrit-tf-9a3d"}
	table := l.Table()
	o := pipelineOpts(table, "DECNET_GREYNOISE_API_KEY="+secrets[0], "DECNET_ABUSEIPDB_API_KEY="+secrets[1], "DECNET_THREATFOX_API_KEY="+secrets[2])
	o.LogLevel = "debug"
	p := start(t, l, o)
	l.Sim.SetFault(providersim.GreyNoise, providersim.Fault500) // errors get logged: they must not carry the key
	pop := lab.Population{Set: 8, Size: 100}
	produce(t, l, pop, every(pop.Size), 0)
	// and a dead letter, with its headers
	if err := l.Kafka.ProduceSync(context.Background(), &kgo.Record{Topic: lab.InputTopics[0], Value: []byte(`{"v":1,"id":"x","topic":"attacker.observed","type":"t","ts":1,"payload":{"attacker_ip":"not-an-ip"}}`)}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	waitCommitted(t, l, time.Minute)

	var leaks []string
	check := func(where, text string) {
		for _, s := range secrets {
			if strings.Contains(text, s) {
				leaks = append(leaks, where)
			}
		}
	}
	metrics, err := p.Metrics()
	if err != nil {
		t.Fatal(err)
	}
	check("metrics", metrics)
	dead := 0
	if _, err := l.ReadAll(context.Background(), lab.DLQTopic, func(r *kgo.Record) {
		dead++
		check("dead letter", string(r.Value))
		for _, h := range r.Headers {
			check("dead letter header "+h.Key, string(h.Value))
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p.Log.Name())
	if err != nil {
		t.Fatal(err)
	}
	logs := string(b)
	check("log", logs)
	echo := exec.Command(binary, "echo", "../../config/pipeline.yaml")
	echo.Env = append(os.Environ(), o.Env...)
	out, err := echo.CombinedOutput()
	if err != nil {
		t.Fatal(err)
	}
	check("echo", string(out))
	if len(leaks) > 0 {
		t.Fatalf("secrets leaked into: %v", leaks)
	}
	if dead == 0 || !strings.Contains(logs, "level=debug") || !strings.Contains(metrics, "intel_provider_errors") {
		t.Fatal("the test saw no dead letter, debug log or provider error metric: it proves nothing")
	}
}

// hostileEvent is one entry of testdata/hostile.jsonl: an event body and
// what must become of it.
type hostileEvent struct {
	Name   string `json:"name"`
	Value  string `json:"value"`
	Expect string `json:"expect"` // dlq:<decnet_error>, skipped, or enriched
}

func hostileCorpus(t *testing.T) []hostileEvent {
	t.Helper()
	b, err := os.ReadFile("testdata/hostile.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	var corpus []hostileEvent
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var h hostileEvent
		if err := json.Unmarshal([]byte(line), &h); err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		corpus = append(corpus, h)
	}
	deep := strings.Repeat("[", 100_000) + strings.Repeat("]", 100_000)
	pad := strings.Repeat("A", 900_000)
	return append(corpus,
		hostileEvent{"100,000 nested arrays as the body", deep, "dlq:bad_envelope"},
		hostileEvent{"100,000 nested arrays beside a good IP", `{"v":1,"id":"d","topic":"attacker.observed","type":"t","ts":1,"payload":{"attacker_ip":"45.9.0.3","x":` + deep + `}}`, "enriched"},
		hostileEvent{"a 900 KB event (within the 1 MiB envelope limit), private IP", `{"v":1,"id":"p","topic":"attacker.observed","type":"t","ts":1,"payload":{"attacker_ip":"10.9.9.9","pad":"` + pad + `"}}`, "skipped"},
		hostileEvent{"invalid UTF-8 in the IP", "{\"v\":1,\"id\":\"u\",\"topic\":\"attacker.observed\",\"type\":\"t\",\"ts\":1,\"payload\":{\"attacker_ip\":\"45.9.0.\xff\"}}", "dlq:bad_key"},
		hostileEvent{"a good event after all of them", `{"v":1,"id":"g","topic":"attacker.observed","type":"t","ts":1,"payload":{"attacker_ip":"45.9.0.4"}}`, "enriched"},
	)
}

// A corpus of malformed and adversarial events: each reaches the dead-letter
// topic with its reason, or is skipped, or (where it is a valid event in
// disguise) enriched; none stops the pipeline or reaches a provider.
func TestReliabilityHostileCorpus(t *testing.T) {
	l := newLab(t)
	corpus := hostileCorpus(t)
	p := start(t, l, pipelineOpts(l.Table()))
	for i, h := range corpus {
		rec := &kgo.Record{Topic: lab.InputTopics[0], Key: []byte(fmt.Sprint(i)), Value: []byte(h.Value)}
		if err := l.Kafka.ProduceSync(context.Background(), rec).FirstErr(); err != nil {
			t.Fatalf("%s: %v", h.Name, err)
		}
	}
	waitCommitted(t, l, time.Minute)
	select {
	case <-p.Exited():
		t.Fatalf("the pipeline exited: %v", p.ExitErr())
	default:
	}

	byValue := map[string]string{} // body → the dead letter's reason
	if _, err := l.ReadAll(context.Background(), lab.DLQTopic, func(r *kgo.Record) {
		for _, h := range r.Headers {
			if h.Key == "decnet_error" {
				byValue[string(r.Value)] = string(h.Value)
			}
		}
	}); err != nil {
		t.Fatal(err)
	}
	perIP, _, _, err := l.EnrichedByIP(context.Background(), lab.EnrichedTopic)
	if err != nil {
		t.Fatal(err)
	}
	skipped, enriched := 0, 0
	for _, h := range corpus {
		switch {
		case strings.HasPrefix(h.Expect, "dlq:"):
			if got := byValue[h.Value]; got != strings.TrimPrefix(h.Expect, "dlq:") {
				t.Errorf("%s: dead letter reason %q, want %s", h.Name, got, h.Expect)
			}
		case h.Expect == "skipped":
			skipped++
			if _, dead := byValue[h.Value]; dead {
				t.Errorf("%s: dead-lettered, want skipped", h.Name)
			}
		case h.Expect == "enriched":
			enriched++
		}
	}
	if got := p.Metric("intel_skipped"); int(got) != skipped {
		t.Errorf("intel_skipped counted %.0f, want %d", got, skipped)
	}
	if len(perIP) != enriched || perIP["45.9.0.2"] == 0 || perIP["45.9.0.3"] == 0 || perIP["45.9.0.4"] == 0 {
		t.Errorf("enriched %v, want 45.9.0.2 (canonicalised), 45.9.0.3 and 45.9.0.4", perIP)
	}
	if requests, ips := l.Sim.PerIPCalls(); ips != enriched || requests != enriched*len(providersim.PerIP) {
		t.Errorf("providers got %d requests about %d IPs, want %d about %d: a hostile event reached a provider",
			requests, ips, enriched*len(providersim.PerIP), enriched)
	}
	t.Logf("%d hostile events: %d dead-lettered with their reasons, %d skipped, %d enriched; the pipeline kept running",
		len(corpus), len(byValue), skipped, enriched)
}

// An event near or over 1 MiB, refused, must reach the dead letters: a dead
// letter that cannot be written is retried for ever, its partition never
// commits again, and every event behind it stalls. Sensors forward
// attacker-controlled bytes, so one event must never halt enrichment.
func TestReliabilityOversizedEventsNeverStallAPartition(t *testing.T) {
	l := newLab(t)
	ctx := context.Background()
	// The sensors' cluster takes large records (as some are configured to).
	if _, err := l.Admin.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Name: "max.message.bytes", Value: kadm.StringPtr("8388608")}}, lab.InputTopics[0]); err != nil {
		t.Fatal(err)
	}
	big, err := kgo.NewClient(kgo.SeedBrokers(l.Broker.Addr()), kgo.ProducerBatchMaxBytes(8<<20))
	if err != nil {
		t.Fatal(err)
	}
	defer big.Close()
	event := func(size int, ip string) []byte {
		head := `{"v":1,"id":"o","topic":"attacker.observed","type":"t","ts":1,"payload":{"attacker_ip":"` + ip + `","pad":"`
		return []byte(head + strings.Repeat("x", size-len(head)-3) + `"}}`)
	}
	sizes := []int{1<<20 - 1024, 1<<20 - 100, 1<<20 + 1024, 5_000_000}
	key := []byte("one-partition")
	for _, n := range sizes {
		if err := big.ProduceSync(ctx, &kgo.Record{Topic: lab.InputTopics[0], Key: key, Value: event(n, "not-an-ip")}).FirstErr(); err != nil {
			t.Fatalf("producing %d bytes: %v", n, err)
		}
	}
	// Behind them, on the same partition: an ordinary attacker.
	if err := big.ProduceSync(ctx, &kgo.Record{Topic: lab.InputTopics[0], Key: key, Value: lab.Event(1, lab.InputTopics[0], "45.77.0.1")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	p := start(t, l, pipelineOpts(l.Table()))
	waitCommitted(t, l, time.Minute)

	seen := map[string]string{} // original size → reason
	if _, err := l.ReadAll(ctx, lab.DLQTopic, func(r *kgo.Record) {
		size, reason := fmt.Sprint(len(r.Value)), ""
		for _, h := range r.Headers {
			switch h.Key {
			case "decnet_dlq_original_bytes":
				size = string(h.Value)
			case "decnet_error":
				reason = string(h.Value)
			}
		}
		seen[size] = reason
	}); err != nil {
		t.Fatal(err)
	}
	for _, n := range sizes {
		if seen[fmt.Sprint(n)] == "" {
			t.Errorf("the %d-byte event is not in the dead letters (saw %v)", n, seen)
		}
	}
	perIP, _, _, err := l.EnrichedByIP(ctx, lab.EnrichedTopic)
	if err != nil {
		t.Fatal(err)
	}
	if perIP["45.77.0.1"] == 0 {
		t.Fatal("the attacker behind the oversized events was never enriched")
	}
	select {
	case <-p.Exited():
		t.Fatalf("the pipeline exited: %v", p.ExitErr())
	default:
	}
	t.Logf("refused events of %v bytes all dead-lettered (cut where they did not fit); the partition went on", sizes)
}

// ClickHouse refuses inserts for its own state (TOO_MANY_PARTS: merges
// stopped on a table that throws at a few parts) while events keep coming:
// the rows are written again with backoff, never sent to the dead letters,
// and once the server takes inserts again every IP's newest row has its
// event.
func TestReliabilityClickHouseBusy(t *testing.T) {
	l := newLab(t)
	ctx := context.Background()
	table := l.Table()
	stmts, err := chschema.CreateStatements(chschema.Options{Table: table}, chschema.Version{Major: 18, Minor: 16})
	if err != nil {
		t.Fatal(err)
	}
	exec := func(q string) {
		t.Helper()
		if err := chserver.Exec(ctx, l.CH.DSN(), q); err != nil {
			t.Fatal(err)
		}
	}
	exec(stmts[0] + "\nSETTINGS parts_to_delay_insert = 2, parts_to_throw_insert = 3")
	p := start(t, l, pipelineOpts(table))
	warm := lab.Population{Set: 12, Size: 200}
	produce(t, l, warm, every(warm.Size), 0)
	waitCommitted(t, l, time.Minute)

	exec("SYSTEM STOP MERGES")
	for i := 0; ; i++ { // parts pile up until the server refuses inserts
		err := chserver.Exec(ctx, l.CH.DSN(), fmt.Sprintf("INSERT INTO %s (attacker_ip, cached_at, expires_at, version) SELECT '45.200.0.%d', now(), now(), 1", table, i))
		if err != nil && strings.Contains(err.Error(), "252") {
			break
		}
		if err != nil || i > 10 {
			t.Fatalf("inserting a part: %v", err)
		}
	}
	busy := lab.Population{Set: 13, Size: sized(2_000, 10_000)}
	produce(t, l, busy, lab.HeavyTailed(busy, busy.Size*5, 3), 10_000)
	if _, err := p.WaitMetric(ctx, "clickhouse_insert_retries", 3, time.Minute); err != nil {
		t.Fatal(err)
	}
	// Healed: merges run again. The table throws at three parts and the
	// output writes from several batches at once, so it is kept merged
	// while the backlog drains, as an operator would.
	exec("SYSTEM START MERGES")
	healed := make(chan struct{})
	go func() {
		for {
			_ = chserver.Exec(ctx, l.CH.DSN(), "OPTIMIZE TABLE "+table+" FINAL")
			select {
			case <-healed:
				return
			case <-time.After(time.Second):
			}
		}
	}()
	waitCommitted(t, l, 3*time.Minute)
	close(healed)

	if dead, _ := l.Total(ctx, lab.DLQTopic); dead != 0 {
		t.Fatalf("%d events dead-lettered: a busy server is not a bad row", dead)
	}
	for _, pop := range []lab.Population{warm, busy} {
		if got := rowsOf(t, l, table, pop, ""); got != pop.Size {
			t.Fatalf("population %d: %d of %d rows", pop.Set, got, pop.Size)
		}
	}
	// The rows inserted by hand to fill the parts have no events: left out.
	got, err := l.VerifyNewestRowsHaveTheirEvents(ctx, table, lab.EnrichedTopic, "attacker_ip NOT LIKE '45.200.%'")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("TOO_MANY_PARTS while %d events came in: retried %.0f times, 0 dead letters, %d IPs' newest rows all have their events",
		busy.Size*5, p.Metric("clickhouse_insert_retries"), got.IPs)
}
