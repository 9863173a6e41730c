package kafka

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/redpanda-data/benthos/v4/public/service"
	"github.com/twmb/franz-go/pkg/kgo"
)

// produceNumbered writes n records to topic, valued 0..n-1, all with one key.
func produceNumbered(t *testing.T, cl *kgo.Client, topic string, n int) {
	t.Helper()
	var recs []*kgo.Record
	for i := range n {
		recs = append(recs, &kgo.Record{Topic: topic, Key: []byte("k"), Value: []byte(fmt.Sprint(i))})
	}
	must(t, cl.ProduceSync(context.Background(), recs...).FirstErr())
}

// connectedReader is a kafka_franz reader of the YAML config (its
// seed_brokers prepended), connected, closed when the test ends.
func connectedReader(t *testing.T, addr, yaml string) *franzReader {
	t.Helper()
	conf, err := inputSpec().ParseYAML(fmt.Sprintf("seed_brokers: [ %q ]\n", addr)+yaml, nil)
	must(t, err)
	rc, err := parseReaderConfig(conf)
	must(t, err)
	in := newFranzReader(rc, service.MockResources())
	must(t, in.Connect(context.Background()))
	t.Cleanup(func() { _ = in.Close(context.Background()) })
	return in
}

// orderedLookups is a reader of an ordered topic "lookups" holding n
// records (valued 0..n-1), read ten to a batch by consumer group group.
func orderedLookups(t *testing.T, group string, n int) *franzReader {
	t.Helper()
	addr := startBroker(t, "lookups")
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	must(t, err)
	defer cl.Close()
	produceNumbered(t, cl, "lookups", n)
	return connectedReader(t, addr, fmt.Sprintf(`topics: [ lookups ]
consumer_group: %s
ordered_topics: [ lookups ]
ordered_batch_size: 10
`, group))
}

// A partition that cannot hand out its next batch (an ordered topic's batch
// still out, waiting on slow work) holds up only itself: another topic of
// the same input keeps flowing. Before, the input's one poll loop waited on
// the full partition, and repeat sightings stood behind lookups of new
// attackers.
func TestAPartitionAtItsLimitHoldsUpOnlyItself(t *testing.T) {
	addr := startBroker(t, "slow", "fast")
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	must(t, err)
	defer cl.Close()
	produceNumbered(t, cl, "slow", 5)
	in := connectedReader(t, addr, `topics: [ slow, fast ]
consumer_group: isolation
ordered_topics: [ slow ]
`)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The first slow batch goes out and is held: its work never finishes
	// in this test. Another slow record arrives behind it and must wait.
	b, _, err := in.ReadBatch(ctx)
	must(t, err)
	if topic, _ := b[0].MetaGet(metaTopic); topic != "slow" {
		t.Fatalf("read %s", topic)
	}
	must(t, cl.ProduceSync(context.Background(), &kgo.Record{Topic: "slow", Key: []byte("k"), Value: []byte("behind")}).FirstErr())
	// Fast records in rounds, each produced once the last was read: by the
	// second round the slow record has surely been fetched.
	slowOut, fastSeen := 1, 0
	for round := range 6 {
		var recs []*kgo.Record
		for i := range 100 {
			recs = append(recs, &kgo.Record{Topic: "fast", Key: []byte(fmt.Sprint(i)), Value: []byte(fmt.Sprint(round*100 + i))})
		}
		must(t, cl.ProduceSync(context.Background(), recs...).FirstErr())
		for fastSeen < (round+1)*100 {
			b, ack, err := in.ReadBatch(ctx)
			if err != nil {
				t.Fatalf("round %d: %d fast records read while a slow batch is out: %v", round+1, fastSeen, err)
			}
			if topic, _ := b[0].MetaGet(metaTopic); topic == "slow" {
				slowOut++
				continue
			}
			fastSeen += len(b)
			must(t, ack(ctx, nil))
		}
	}
	if slowOut != 1 {
		t.Fatalf("%d batches of the ordered partition went out at once, want 1", slowOut)
	}
}

// An ordered partition's batches hold at most ordered_batch_size messages,
// in order and all of them: a lookup batch waits for its slowest lookup
// and then writes every row, so a big one leaves the providers idle while
// its rows are written.
func TestOrderedBatchesKeepToTheirSize(t *testing.T) {
	const n = 25
	in := orderedLookups(t, "batch-size", n)

	readNumberedInBatches(t, in, n, 10)
}

// readNumberedInBatches reads n records valued 0..n-1 from in, acknowledging
// each batch, and fails unless every batch holds at most max messages and
// the records arrive all, once, in order.
func readNumberedInBatches(t *testing.T, in *franzReader, n, max int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var got []string
	for len(got) < n {
		b, ack, err := in.ReadBatch(ctx)
		if err != nil {
			t.Fatalf("after %d records: %v", len(got), err)
		}
		if len(b) > max {
			t.Fatalf("a batch of %d messages out at once, want at most %d", len(b), max)
		}
		for _, m := range b {
			v, _ := m.AsBytes()
			got = append(got, string(v))
		}
		must(t, ack(ctx, nil))
	}
	for i, v := range got {
		if v != fmt.Sprint(i) {
			t.Fatalf("message %d is %q: out of order or repeated (%v)", i, v, got)
		}
	}
}

// A batch split off a larger fetch is forgotten once acknowledged: the rest
// of the fetch waiting its turn must not keep it. (Sharing the fetch's
// slice kept every acknowledged batch of a 10,000-record fetch, and every
// row the pipeline had written into its messages, until the fetch's last
// batch was done: the storm benchmark peaked at twice the memory.)
func TestAnAcknowledgedSplitBatchIsNotKeptByTheRest(t *testing.T) {
	in := orderedLookups(t, "split-release", 25)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	freed := make(chan struct{}, 10)
	func() {
		b, ack, err := in.ReadBatch(ctx)
		must(t, err)
		if len(b) == 25 {
			t.Fatal("the fetch was not split")
		}
		for _, m := range b {
			runtime.AddCleanup(m, func(ch chan struct{}) { ch <- struct{}{} }, freed)
		}
		must(t, ack(ctx, nil))
	}()
	// The second batch may be out already, waiting on nothing: the first
	// must be collectable while it and the third wait.
	// Cleanups run after a collection finds the messages unreachable: a
	// collection is asked for until they have all run, for at most 10s.
	deadline := time.Now().Add(10 * time.Second)
	for n := 0; n < 10; {
		runtime.GC()
		select {
		case <-freed:
			n++
		case <-time.After(50 * time.Millisecond):
			if time.Now().After(deadline) {
				t.Fatalf("%d of 10 acknowledged messages collected: the rest of their fetch keeps them", n)
			}
		}
	}
}

// checkpoint_limit bounds what one partition has out with the pipeline,
// whatever one fetch brings: every batch of a 25-record fetch under a limit
// of 10 holds at most 10 messages. Before, a fetch larger than the limit
// went out whole (up to a poll's 10,000 records), so the limit bounded
// nothing that memory could rely on. (That a full partition waits for
// acknowledgements is the checkpointer's, tested with it.) All 25 arrive,
// in order.
func TestCheckpointLimitBoundsWhatIsOut(t *testing.T) {
	addr := startBroker(t, "sightings")
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	must(t, err)
	defer cl.Close()
	produceNumbered(t, cl, "sightings", 25)
	in := connectedReader(t, addr, `topics: [ sightings ]
consumer_group: bounded
checkpoint_limit: 10
`)
	readNumberedInBatches(t, in, 25, 10)
}
