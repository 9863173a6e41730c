package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/decnet/decnet-stream/internal/chtest"
	"github.com/decnet/decnet-stream/internal/lab"
	"github.com/decnet/decnet-stream/internal/providersim"
)

// The pipeline is killed with SIGKILL at random points and restarted, over
// and over, with one provider in ten slower than max_wait for some IPs;
// then every attacker IP must be in ClickHouse, and its newest row must be
// its last enriched event on Kafka, with no event older than one before
// it: loss = 0, duplicates only as at-least-once allows (ClickHouse
// collapses them).
func TestCrashConsistencyUnderSIGKILL(t *testing.T) {
	// 50,000 events in the short run: by the last restart every IP's row is
	// warm-started, every event a hit, and 10,000 of them were all read and
	// committed within the few tens of milliseconds a kill takes to land.
	events, uniqueIPs, kills := sized(50_000, 200_000), sized(1_000, 10_000), sized(4, 6)
	l := newLab(t)
	l.Sim.SetLatencyFunc(providersim.MixedLatency(time.Second)) // max_wait is 500ms here
	pop := lab.Population{Set: 9, Size: uniqueIPs}
	produce(t, l, pop, lab.HeavyTailed(pop, events, 11), 0)
	table := l.Table()
	// Killed members leave no goodbye: let the group notice them fast. The
	// refresh input polls every 2s, so rows left partial (providers busy)
	// are completed without another sighting.
	opts := pipelineOpts(table, "KAFKA_SESSION_TIMEOUT=6s", "KAFKA_REBALANCE_TIMEOUT=6s", "REFRESH_POLL_INTERVAL=2s")

	rng := rand.New(rand.NewPCG(1, 2))
	for k := range kills {
		// A random point of the run: once this process has received between
		// 5% and 25% of the events not yet committed (a timer would miss a
		// fast run altogether). Of what is left, not of all the events: a
		// restart reads from the committed offsets, and a process waiting
		// for more than was left timed out.
		left := int64(events)
		if k > 0 { // the group exists once a process has joined it
			left -= committedTotal(t, l)
		}
		at := left/20 + rng.Int64N(left/5+1)
		p := start(t, l, opts)
		if _, err := p.WaitSightings(context.Background(), float64(at), 2*time.Minute); err != nil {
			t.Fatal(err)
		}
		p.Kill() // SIGKILL: no drain, no commit
	}
	if done := committedTotal(t, l); done >= int64(events) {
		t.Fatalf("all %d events were committed before the last kill: the kills proved nothing", events)
	}
	last := start(t, l, opts)
	waitCommitted(t, l, 4*time.Minute)

	// Every IP has its attacker_intel row …
	if got := rowsOf(t, l, table, pop, ""); got != uniqueIPs {
		t.Fatalf("attacker_intel holds %d IPs, want %d: rows were lost", got, uniqueIPs)
	}
	raw := chtest.Query(t, l.CH.DSN(), "SELECT count() FROM "+table)[0][0]
	// Rows left partial (every provider busy at its turn) are completed by
	// the refresh, with no sighting to trigger it.
	partial := "greynoise_status != 'ok' OR abuseipdb_status != 'ok' OR threatfox_status != 'ok'"
	for deadline := time.Now().Add(2 * time.Minute); rowsOf(t, l, table, pop, partial) > 0; {
		if time.Now().After(deadline) {
			statuses := chtest.Query(t, l.CH.DSN(), "SELECT greynoise_status, abuseipdb_status, threatfox_status, count() FROM "+table+" FINAL GROUP BY greynoise_status, abuseipdb_status, threatfox_status")
			// What a next look needs (seen once, 2026-11-30: one row
			// rate_limited at all three): the stuck rows with their times,
			// and whether the process was still asking.
			stuck := chtest.Query(t, l.CH.DSN(), "SELECT attacker_ip, toString(cached_at), toString(expires_at) FROM "+table+" FINAL WHERE ("+partial+") LIMIT 5")
			t.Logf("stuck rows (ip, cached_at, expires_at): %v; now %s", stuck, time.Now().UTC().Format(time.RFC3339))
			for _, m := range []string{"intel_lookup_requests", "intel_lookups", "intel_cache_partial", "intel_cache_misses"} {
				t.Logf("%s = %.0f", m, last.Metric(m))
			}
			t.Fatalf("%d rows still partial 2 minutes after the last sighting (statuses %v)", rowsOf(t, l, table, pop, partial), statuses)
		}
		time.Sleep(500 * time.Millisecond) // polling ClickHouse for the refresh's rows
	}
	// Every answer a provider gave is in its row. An answer paid for by a
	// process killed before it wrote the row died with that process; its
	// IP was looked up again after the restart, and if that provider was
	// busy then, the refresh asked it again: so this holds once the refresh
	// is done, not before (the full-size run found it checked too early).
	answers, err := l.VerifyAnswersReachedRows(context.Background(), table)
	if err != nil {
		t.Fatal(err)
	}
	// … and each newest row has its enriched event on Kafka.
	waitCommitted(t, l, time.Minute)
	got, err := l.VerifyNewestRowsHaveTheirEvents(context.Background(), table, lab.EnrichedTopic, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d events over %d IPs, %d SIGKILLs: 0 lost: %d provider answers all in their rows, every newest row is its IP's last enriched event, no older event after a newer one; %s attacker_intel rows before FINAL, %d enriched events (%.2f per IP)",
		events, uniqueIPs, kills, answers, raw, got.Events, float64(got.Events)/float64(uniqueIPs))
}

func mustAtoi(s string) int {
	var n int
	fmt.Sscan(s, &n)
	return n
}
