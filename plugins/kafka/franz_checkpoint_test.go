package kafka

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/redpanda-data/benthos/v4/public/service"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

type commits struct{ offsets []int64 }

func (c *commits) commit(r *kgo.Record) { c.offsets = append(c.offsets, r.Offset) }

func rec(off int64) *kgo.Record { return &kgo.Record{Topic: "t", Partition: 0, Offset: off} }

var tp0 = map[string][]int32{"t": {0}}

func TestCheckpointReleasesOnlyContiguousAcks(t *testing.T) {
	var c commits
	cp := newCheckpointer(1000, c.commit)
	cp.assign(tp0)
	pc := cp.current(topicPartition{"t", 0}, false)
	ctx := context.Background()
	a, _ := cp.track(ctx, pc, rec(9), 10)
	b, _ := cp.track(ctx, pc, rec(19), 10)
	d, _ := cp.track(ctx, pc, rec(29), 10)

	b() // out of order: nothing before it is done
	if len(c.offsets) != 0 {
		t.Fatalf("committed %v before the first batch was acked", c.offsets)
	}
	a() // releases a and b together
	d()
	d() // a second ack of the same batch changes nothing
	if want := []int64{19, 29}; !equal(c.offsets, want) {
		t.Fatalf("committed %v, want %v", c.offsets, want)
	}
	if pc.msgs != 0 || len(pc.pending) != 0 {
		t.Fatalf("state not empty after all acks: %d msgs, %d pending", pc.msgs, len(pc.pending))
	}
}

func TestCheckpointIgnoresAcksAfterRevoke(t *testing.T) {
	var c commits
	cp := newCheckpointer(1000, c.commit)
	cp.assign(tp0)
	old := cp.current(topicPartition{"t", 0}, false)
	release, _ := cp.track(context.Background(), old, rec(5), 6)
	cp.drop(tp0)
	cp.assign(tp0) // reassigned: a new owner epoch
	release()
	if len(c.offsets) != 0 {
		t.Fatalf("an ack from a revoked assignment committed %v", c.offsets)
	}
	if _, ok := cp.track(context.Background(), old, rec(7), 1); ok {
		t.Fatal("a batch fetched under the old assignment was accepted")
	}
}

func TestCheckpointLimitWaitsForAcks(t *testing.T) {
	var c commits
	cp := newCheckpointer(10, c.commit)
	cp.assign(tp0)
	pc := cp.current(topicPartition{"t", 0}, false)
	ctx := context.Background()
	first, _ := cp.track(ctx, pc, rec(7), 8)

	tracked := make(chan bool)
	go func() {
		_, ok := cp.track(ctx, pc, rec(15), 8) // 16 > 10: must wait
		tracked <- ok
	}()
	select {
	case <-tracked:
		t.Fatal("second batch went out past checkpoint_limit")
	default:
	}
	first()
	if ok := <-tracked; !ok {
		t.Fatal("second batch was dropped instead of going out after the ack")
	}
}

func TestCheckpointLimitAllowsOneOversizedBatch(t *testing.T) {
	cp := newCheckpointer(10, func(*kgo.Record) {})
	cp.assign(tp0)
	pc := cp.current(topicPartition{"t", 0}, false)
	if _, ok := cp.track(context.Background(), pc, rec(99), 100); !ok {
		t.Fatal("a batch larger than the limit must go out alone, not deadlock")
	}
}

func TestCheckpointWaitEndsOnRevoke(t *testing.T) {
	cp := newCheckpointer(1, func(*kgo.Record) {})
	cp.assign(tp0)
	pc := cp.current(topicPartition{"t", 0}, false)
	_, _ = cp.track(context.Background(), pc, rec(0), 1)
	tracked := make(chan bool)
	go func() {
		_, ok := cp.track(context.Background(), pc, rec(1), 1)
		tracked <- ok
	}()
	cp.drop(tp0)
	if <-tracked {
		t.Fatal("a waiting batch of a dropped partition was accepted")
	}
}

func TestDrainWaitsForOutstandingBatches(t *testing.T) {
	var c commits
	cp := newCheckpointer(1000, c.commit)
	cp.assign(tp0)
	pc := cp.current(topicPartition{"t", 0}, false)
	first, _ := cp.track(context.Background(), pc, rec(3), 4)
	second, _ := cp.track(context.Background(), pc, rec(8), 5)

	drained := make(chan struct{})
	go func() { cp.drain(context.Background(), tp0); close(drained) }()
	first()
	second()
	<-drained // hangs (and the test times out) if drain never notices the acks
	if want := []int64{3, 8}; !equal(c.offsets, want) {
		t.Fatalf("committed %v, want %v", c.offsets, want)
	}
	if cp.current(topicPartition{"t", 0}, false) != nil {
		t.Fatal("drained partition still tracked")
	}
}

func TestDrainGivesUpAtDeadlineKeepingWhatIsDone(t *testing.T) {
	var c commits
	cp := newCheckpointer(1000, c.commit)
	cp.assign(tp0)
	pc := cp.current(topicPartition{"t", 0}, false)
	done, _ := cp.track(context.Background(), pc, rec(3), 4)
	late, _ := cp.track(context.Background(), pc, rec(8), 5)
	done()
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the rebalance deadline has passed
	cp.drain(ctx, tp0)
	late()
	if want := []int64{3}; !equal(c.offsets, want) {
		t.Fatalf("committed %v, want %v (a late ack must not commit)", c.offsets, want)
	}
}

func equal(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Records polled under one assignment are never tracked under the next.
// A rebalance is put between a poll and the tracking of its records: the
// partition revoked (its drain gave up) and assigned again, as a blocked
// pipeline and a member joining and leaving would do it. Those records
// must be dropped (the new assignment reads from the last commit), not
// tracked under the new checkpoint, where a later offset could be
// committed before the earlier ones were read again.
func TestRecordsPolledBeforeARebalanceAreNotTrackedAfterIt(t *testing.T) {
	addr := startBroker(t)
	adm, err := kgo.NewClient(kgo.SeedBrokers(addr))
	must(t, err)
	_, err = kadm.NewClient(adm).CreateTopic(context.Background(), 1, 1, nil, "stale")
	adm.Close()
	must(t, err)
	produce(t, addr, "stale", 0, 10)
	conf, err := inputSpec().ParseYAML(fmt.Sprintf("seed_brokers: [ %q ]\ntopics: [ stale ]\nconsumer_group: stale-group\n", addr), nil)
	must(t, err)
	rc, err := parseReaderConfig(conf)
	must(t, err)
	r := newFranzReader(rc, service.MockResources())
	polls := 0
	queued := make(chan int, 1)
	r.afterPoll = func() {
		polls++
		switch polls {
		case 1: // the first records are out of the broker: rebalance now
			parts := map[string][]int32{}
			for tp := range r.cp.parts {
				parts[tp.topic] = append(parts[tp.topic], tp.partition)
			}
			r.cp.drop(parts)
			r.cp.assign(parts)
			go func() { // one more record wakes the second poll
				cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
				if err == nil {
					cl.ProduceSync(context.Background(), &kgo.Record{Topic: "stale", Value: []byte(`{"seq":10}`)})
					cl.Close()
				}
			}()
		case 2: // the first poll's records have been handled
			queued <- len(r.batches)
		}
	}
	must(t, r.Connect(context.Background()))
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = r.Close(ctx)
	}()
	if n := <-queued; n != 0 {
		t.Fatalf("%d batches polled under the old assignment were handed out under the new one", n)
	}
}

// An ordered topic has one batch of a partition out at a time, however
// high checkpoint_limit is; other topics are not held by it.
func TestOrderedTopicHasOneBatchOutAtATime(t *testing.T) {
	cp := newCheckpointer(1000, func(*kgo.Record) {})
	cp.ordered = map[string]bool{"t": true}
	cp.assign(map[string][]int32{"t": {0}, "other": {0}})
	pc := cp.current(topicPartition{"t", 0}, false)
	ctx := context.Background()
	first, _ := cp.track(ctx, pc, rec(2), 3)
	other := cp.current(topicPartition{"other", 0}, false)
	if _, ok := cp.track(ctx, other, &kgo.Record{Topic: "other", Offset: 5}, 6); !ok {
		t.Fatal("another topic was held by the ordered one")
	}
	second := make(chan bool)
	go func() {
		_, ok := cp.track(ctx, pc, rec(3), 1)
		second <- ok
	}()
	select {
	case <-second:
		t.Fatal("a second batch of an ordered partition went out before the first was acknowledged")
	default:
	}
	first()
	if !<-second {
		t.Fatal("the second batch never went out")
	}
}

// With the range balancer, co-partitioned topics (equal partition counts)
// put partition N of each on the same member: an attacker's sightings and
// its lookup requests, keyed alike, reach one replica.
func TestRangeBalancerCoPartitionsTopics(t *testing.T) {
	addr := startBroker(t, "sightings", "lookups")
	members := make([]*franzReader, 2)
	for i := range members {
		conf, err := inputSpec().ParseYAML(fmt.Sprintf("seed_brokers: [ %q ]\ntopics: [ sightings, lookups ]\nconsumer_group: copart\ngroup_balancer: range\n", addr), nil)
		must(t, err)
		rc, err := parseReaderConfig(conf)
		must(t, err)
		members[i] = newFranzReader(rc, service.MockResources())
		must(t, members[i].Connect(context.Background()))
		defer members[i].Close(context.Background())
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		var owned [2]map[string][]int32
		total := 0
		for i, m := range members {
			owned[i] = map[string][]int32{}
			m.cp.mu.Lock()
			for tp := range m.cp.parts {
				owned[i][tp.topic] = append(owned[i][tp.topic], tp.partition)
				total++
			}
			m.cp.mu.Unlock()
			slices.Sort(owned[i]["sightings"])
			slices.Sort(owned[i]["lookups"])
		}
		if total == 12 && len(owned[0]["sightings"]) > 0 && len(owned[1]["sightings"]) > 0 {
			for i := range owned {
				if !slices.Equal(owned[i]["sightings"], owned[i]["lookups"]) {
					t.Fatalf("member %d owns sightings %v but lookups %v", i, owned[i]["sightings"], owned[i]["lookups"])
				}
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the group never settled: %v", owned)
		}
		time.Sleep(20 * time.Millisecond) // polling the members' assignments
	}
}
