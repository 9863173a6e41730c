package kafka

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redpanda-data/benthos/v4/public/service"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

func inputYAML(addr, topic, group string, extra string) string {
	return fmt.Sprintf(`
kafka_franz:
  seed_brokers: [ %q ]
  topics: [ %s ]
  consumer_group: %s
  commit_period: 100ms
%s`, addr, topic, group, extra)
}

// kafka_franz → kafka_franz moves every record, keeping per-partition order.
func TestFranzToFranzMovesEveryRecordInOrder(t *testing.T) {
	const n = 100_000
	addr := startBroker(t, "in", "out")
	produce(t, addr, "in", 0, n)

	sb := service.NewStreamBuilder()
	must(t, sb.SetLoggerYAML("level: warn"))
	must(t, sb.AddInputYAML(inputYAML(addr, "in", "mover", "")))
	must(t, sb.AddOutputYAML(fmt.Sprintf(`
kafka_franz:
  seed_brokers: [ %q ]
  topic: out
  key: ${! @kafka_key }
  max_in_flight: 1
  metadata:
    include_patterns: [ "^kafka_partition$" ]
`, addr)))
	sb.SetThreads(1)
	s, err := sb.Build()
	must(t, err)
	go func() { _ = s.Run(context.Background()) }()
	defer func() { _ = s.StopWithin(20 * time.Second) }()

	recs := consumeN(t, addr, "out", n, 90*time.Second)
	if len(recs) != n {
		t.Fatalf("got %d records on out, want %d", len(recs), n)
	}
	seen := make(map[int]bool, n)
	lastKeySeq := map[string]int{}
	for _, r := range recs {
		e := decode(t, r.Value)
		if seen[e.Seq] {
			t.Fatalf("seq %d delivered twice", e.Seq)
		}
		seen[e.Seq] = true
		if string(r.Key) != e.Key {
			t.Fatalf("record key %q, want %q", r.Key, e.Key)
		}
		if prev, ok := lastKeySeq[e.Key]; ok && e.KeySeq <= prev {
			t.Fatalf("key %s: key_seq %d after %d: order lost", e.Key, e.KeySeq, prev)
		}
		lastKeySeq[e.Key] = e.KeySeq
		if len(r.Headers) != 1 || r.Headers[0].Key != "kafka_partition" {
			t.Fatalf("headers %v, want only kafka_partition", r.Headers)
		}
	}
}

// A consumer stopped mid-stream, having acknowledged only part of what it
// read, loses nothing: a new member of the same group reads the rest.
func TestRestartInSameGroupLosesNothing(t *testing.T) {
	const n = 20_000
	addr := startBroker(t, "in")
	produce(t, addr, "in", 0, n)

	first := newCollector()
	var batches atomic.Int64
	rs := startStream(t, inputYAML(addr, "in", "restart", "  checkpoint_limit: 500\n  batching: { count: 100 }"), 1,
		func(_ context.Context, b service.MessageBatch) error {
			if batches.Add(1) > 10 {
				first.poke()
				return errors.New("output down") // never acknowledged
			}
			first.add(t, b)
			return nil
		})
	first.waitFor(t, 30*time.Second, "ten acknowledged batches", func() bool { return batches.Load() > 12 })
	rs.stop(t)

	second := newCollector()
	startStream(t, inputYAML(addr, "in", "restart", ""), 1,
		func(_ context.Context, b service.MessageBatch) error { second.add(t, b); return nil })
	second.waitFor(t, 60*time.Second, "every record acknowledged once across both runs", func() bool {
		for seq := 0; seq < n; seq++ {
			if !first.has(seq) && !second.has(seq) {
				return false
			}
		}
		return true
	})
	if first.distinct() == 0 {
		t.Fatal("the first run acknowledged nothing: the test proves nothing")
	}
	if second.distinct() >= n {
		t.Fatalf("the second run re-read all %d records: nothing acknowledged was committed", n)
	}
}

// A nacked batch is delivered again and its records are not skipped.
func TestNackIsRedelivered(t *testing.T) {
	const n = 5_000
	addr := startBroker(t, "in")
	produce(t, addr, "in", 0, n)

	var mu sync.Mutex
	failed := map[string]bool{} // first record of each batch failed once
	redelivered := 0
	acked := newCollector()
	type lagAt struct{ offset, lag int64 }
	again := map[int][]lagAt{} // redelivered messages by partition
	end := map[int]int64{}     // records per partition
	startStream(t, inputYAML(addr, "in", "nack", ""), 1,
		func(_ context.Context, b service.MessageBatch) error {
			p, _ := b[0].MetaGetMut(metaPartition)
			o, _ := b[0].MetaGetMut(metaOffset)
			id := fmt.Sprint(p, "/", o)
			mu.Lock()
			defer mu.Unlock()
			if !failed[id] {
				failed[id] = true
				return errors.New("transient failure")
			}
			redelivered++
			for _, m := range b {
				p, _ := m.MetaGetMut(metaPartition)
				o, _ := m.MetaGetMut(metaOffset)
				l, _ := m.MetaGetMut(metaLag)
				again[p.(int)] = append(again[p.(int)], lagAt{int64(o.(int)), l.(int64)})
				end[p.(int)] = max(end[p.(int)], int64(o.(int))+1)
			}
			acked.add(t, b)
			return nil
		})
	acked.waitFor(t, 60*time.Second, "every record acknowledged", func() bool { return acked.distinct() == n })
	mu.Lock()
	defer mu.Unlock()
	if redelivered == 0 || redelivered < len(failed)-1 {
		t.Fatalf("%d batches nacked but only %d redelivered", len(failed), redelivered)
	}
	// Everything was produced first, so a redelivery lags by what follows
	// it in its partition, whichever fetch it came from.
	for p, lags := range again {
		for _, l := range lags {
			if l.lag != end[p]-l.offset-1 {
				t.Fatalf("partition %d offset %d redelivered with kafka_lag %d, want %d", p, l.offset, l.lag, end[p]-l.offset-1)
			}
		}
	}
}

// Two members share the partitions of a group, and when one leaves the
// other takes over its partitions without losing a record.
func TestGroupOfTwoSurvivesOneLeaving(t *testing.T) {
	const half = 10_000
	addr := startBroker(t, "in")
	const group = "pair"

	all := newCollector()
	var fromA, fromB atomic.Int64
	member := func(counter *atomic.Int64) service.MessageBatchHandlerFunc {
		return func(_ context.Context, b service.MessageBatch) error {
			counter.Add(int64(len(b)))
			all.add(t, b)
			return nil
		}
	}
	a := startStream(t, inputYAML(addr, "in", group, ""), 1, member(&fromA))
	startStream(t, inputYAML(addr, "in", group, ""), 1, member(&fromB))
	waitForMembers(t, addr, group, 2)

	produce(t, addr, "in", 0, half)
	all.waitFor(t, 60*time.Second, "the first half", func() bool { return all.distinct() == half })
	if fromA.Load() == 0 || fromB.Load() == 0 {
		t.Fatalf("partitions not shared: member A got %d, member B %d", fromA.Load(), fromB.Load())
	}

	a.stop(t)
	waitForMembers(t, addr, group, 1)
	bBefore := fromB.Load()
	produce(t, addr, "in", half, half)
	all.waitFor(t, 60*time.Second, "the second half", func() bool { return all.distinct() == 2*half })
	if fromB.Load()-bBefore < half {
		t.Fatalf("member B took %d of the second half, want all %d", fromB.Load()-bBefore, half)
	}
}

// waitForMembers polls the group until it is stable with n members that
// each hold partitions.
func waitForMembers(t *testing.T, addr, group string, n int) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	must(t, err)
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		groups, err := adm.DescribeGroups(ctx, group)
		if err == nil {
			g := groups[group]
			assigned := 0
			for _, m := range g.Members {
				if c, ok := m.Assigned.AsConsumer(); ok && len(c.Topics) > 0 {
					assigned++
				}
			}
			if g.State == "Stable" && len(g.Members) == n && assigned == n {
				return
			}
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			t.Fatalf("group %s never reached %d stable members", group, n)
		}
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// Input batching with a period, over several partitions, never stalls:
// every record reaches the pipeline in batches no larger than count.
func TestBatchingByCountAndPeriodDeliversEverything(t *testing.T) {
	const n = 20_000
	addr := startBroker(t, "in")
	produce(t, addr, "in", 0, n)
	c := newCollector()
	var largest atomic.Int64
	rs := startStream(t, inputYAML(addr, "in", "batched", "  batching: { count: 256, period: 2ms }"), 8,
		func(_ context.Context, b service.MessageBatch) error {
			if int64(len(b)) > largest.Load() {
				largest.Store(int64(len(b)))
			}
			c.add(t, b)
			return nil
		})
	defer rs.stop(t)
	c.waitFor(t, 60*time.Second, "every record", func() bool { return c.distinct() == n })
	if largest.Load() > 256 {
		t.Fatalf("a batch of %d, want at most 256", largest.Load())
	}
}
