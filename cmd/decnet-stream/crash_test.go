package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/decnet/decnet-stream/internal/chtest"
	"github.com/decnet/decnet-stream/internal/fixtures"
)

// The pipeline is killed with SIGKILL at random points and restarted, over
// and over; then every attacker IP must be in ClickHouse and have an
// enriched event on Kafka: loss = 0, duplicates only as at-least-once
// allows (ClickHouse collapses them).
func TestCrashConsistencyUnderSIGKILL(t *testing.T) {
	events, uniqueIPs, kills := sized(10_000, 200_000), sized(1_000, 10_000), sized(4, 6)
	addr := startBroker(t, "attacker.observed", "attacker.scored", "attacker.intel.enriched", "decnet.dlq")
	ch := chtest.Start(t)
	dir, err := fixtures.Path("providers")
	if err != nil {
		t.Fatal(err)
	}
	providers := httptest.NewServer(fixtures.NewProviderServer(dir).Handler())
	defer providers.Close()

	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.MaxBufferedRecords(50_000))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	recs := make([]*kgo.Record, events)
	for i := range recs {
		ip := fmt.Sprintf("45.7.%d.%d", (i%uniqueIPs)/250, (i%uniqueIPs)%250+1)
		topic := "attacker.observed"
		if i%3 == 0 {
			topic = "attacker.scored"
		}
		recs[i] = &kgo.Record{Topic: topic, Key: []byte(ip), Value: []byte(fmt.Sprintf(
			`{"v":1,"id":"c%d","topic":%q,"type":"x","ts":1750000000,"payload":{"attacker_ip":%q}}`, i, topic, ip))}
	}
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}

	state := t.TempDir()
	env := append(os.Environ(), "KAFKA_SEED_BROKERS="+addr, "CLICKHOUSE_DSN="+ch.DSN(),
		"GREYNOISE_BASE_URL="+providers.URL, "ABUSEIPDB_BASE_URL="+providers.URL, "THREATFOX_BASE_URL="+providers.URL,
		"ABUSEIPDB_API_KEY=k", "THREATFOX_API_KEY=k", "FEODO_URL="+providers.URL+"/ipblocklist.json",
		"INTEL_STATE_FILE="+filepath.Join(state, "budget.json"), "INTEL_MAX_WAIT=200ms",
		// Killed members leave no goodbye: let the group notice them fast.
		"KAFKA_SESSION_TIMEOUT=6s", "KAFKA_REBALANCE_TIMEOUT=6s")
	run := func() *exec.Cmd {
		cmd := exec.Command(binary, "run", "--log.level", "error", "../../config/pipeline.yaml")
		cmd.Env = env
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for k := 0; k < kills; k++ {
		cmd := run()
		time.Sleep(time.Duration(300+rng.IntN(1200)) * time.Millisecond) // a random point of the run
		_ = cmd.Process.Kill()                                           // SIGKILL: no drain, no commit
		_ = cmd.Wait()
	}
	final := run()
	defer func() { _ = final.Process.Kill(); _ = final.Wait() }()

	// Wait until the group has committed every input record.
	adm := kadm.NewClient(cl)
	deadline := time.Now().Add(240 * time.Second)
	for ; ; time.Sleep(250 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the restarted pipeline never caught up")
		}
		lags, err := adm.Lag(context.Background(), "decnet-intel")
		if err != nil || lags["decnet-intel"].Lag.Total() != 0 || len(lags["decnet-intel"].Lag) == 0 {
			continue
		}
		break
	}

	// Every IP has its attacker_intel row …
	var rows [][]string
	for ; time.Now().Before(deadline); time.Sleep(250 * time.Millisecond) {
		if rows = chtest.Query(t, ch.DSN(), "SELECT count() FROM attacker_intel FINAL"); rows[0][0] == fmt.Sprint(uniqueIPs) {
			break
		}
	}
	if rows[0][0] != fmt.Sprint(uniqueIPs) {
		t.Fatalf("attacker_intel holds %s IPs, want %d: rows were lost", rows[0][0], uniqueIPs)
	}
	raw := chtest.Query(t, ch.DSN(), "SELECT count() FROM attacker_intel")[0][0]

	// … and an enriched event on Kafka.
	ends, err := adm.ListEndOffsets(context.Background(), "attacker.intel.enriched")
	if err != nil {
		t.Fatal(err)
	}
	total := int64(0)
	ends.Each(func(o kadm.ListedOffset) { total += o.Offset })
	rd, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumeTopics("attacker.intel.enriched"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	seen := map[string]int{}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for read := int64(0); read < total; {
		fs := rd.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %d of %d enriched events", read, total)
		}
		fs.EachRecord(func(r *kgo.Record) {
			read++
			var ev struct {
				Payload struct {
					IP string `json:"attacker_ip"`
				} `json:"payload"`
			}
			if json.Unmarshal(r.Value, &ev) == nil {
				seen[ev.Payload.IP]++
			}
		})
	}
	if len(seen) != uniqueIPs {
		t.Fatalf("enriched events cover %d IPs, want %d: enrichments were lost", len(seen), uniqueIPs)
	}
	t.Logf("%d events over %d IPs, %d SIGKILLs: 0 lost; %d attacker_intel rows before FINAL, %d enriched events (%.2f per IP)",
		events, uniqueIPs, kills, mustAtoi(raw), total, float64(total)/float64(uniqueIPs))
}

func mustAtoi(s string) int {
	var n int
	fmt.Sscan(s, &n)
	return n
}
