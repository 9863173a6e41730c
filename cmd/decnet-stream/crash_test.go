package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/decnet/decnet-stream/internal/chtest"
	"github.com/decnet/decnet-stream/internal/lab"
)

// The pipeline is killed with SIGKILL at random points and restarted, over
// and over; then every attacker IP must be in ClickHouse and have an
// enriched event on Kafka: loss = 0, duplicates only as at-least-once
// allows (ClickHouse collapses them).
func TestCrashConsistencyUnderSIGKILL(t *testing.T) {
	events, uniqueIPs, kills := sized(10_000, 200_000), sized(1_000, 10_000), sized(4, 6)
	l := newLab(t)
	pop := lab.Population{Set: 9, Size: uniqueIPs}
	produce(t, l, pop, lab.HeavyTailed(pop, events, 11), 0)
	table := l.Table()
	// Killed members leave no goodbye: let the group notice them fast.
	opts := pipelineOpts(table, "KAFKA_SESSION_TIMEOUT=6s", "KAFKA_REBALANCE_TIMEOUT=6s")

	rng := rand.New(rand.NewPCG(1, 2))
	for range kills {
		p := start(t, l, opts)
		// A random point of the run: once it has received between 5% and 25%
		// of the events (a timer would miss a fast run altogether).
		at := events/20 + rng.IntN(events/5)
		if _, err := p.WaitMetric(context.Background(), "input_received", float64(at), 2*time.Minute); err != nil {
			t.Fatal(err)
		}
		p.Kill() // SIGKILL: no drain, no commit
	}
	if done := committedTotal(t, l); done >= int64(events) {
		t.Fatalf("all %d events were committed before the last kill: the kills proved nothing", events)
	}
	start(t, l, opts)
	waitCommitted(t, l, 4*time.Minute)

	// Every IP has its attacker_intel row …
	if got := rowsOf(t, l, table, pop, ""); got != uniqueIPs {
		t.Fatalf("attacker_intel holds %d IPs, want %d: rows were lost", got, uniqueIPs)
	}
	raw := chtest.Query(t, l.CH.DSN(), "SELECT count() FROM "+table)[0][0]
	// … and an enriched event on Kafka.
	perIP, total, _, err := l.EnrichedByIP(context.Background(), lab.EnrichedTopic)
	if err != nil {
		t.Fatal(err)
	}
	if len(perIP) != uniqueIPs {
		t.Fatalf("enriched events cover %d IPs, want %d: enrichments were lost", len(perIP), uniqueIPs)
	}
	t.Logf("%d events over %d IPs, %d SIGKILLs: 0 lost; %s attacker_intel rows before FINAL, %d enriched events (%.2f per IP)",
		events, uniqueIPs, kills, raw, total, float64(total)/float64(uniqueIPs))
}

func mustAtoi(s string) int {
	var n int
	fmt.Sscan(s, &n)
	return n
}
