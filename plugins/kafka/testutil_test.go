package kafka

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redpanda-data/benthos/v4/public/service"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	_ "github.com/redpanda-data/benthos/v4/public/components/pure"

	"github.com/decnet/decnet-stream/internal/broker"
)

// startBroker runs the embedded broker on a free loopback port for one test.
func startBroker(t testing.TB, topics ...string) string {
	t.Helper()
	b, err := broker.Start(broker.Config{Partitions: 6, Topics: topics})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b.Addr()
}

// event is the body of a test record: a per-key sequence lets tests check
// per-partition order, a global one lets them count loss.
type event struct {
	Seq    int    `json:"seq"`
	Key    string `json:"key"`
	KeySeq int    `json:"key_seq"`
}

const testKeys = 60

// produce writes n keyed records numbered from first, synchronously.
func produce(t testing.TB, addr, topic string, first, n int) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.AllowAutoTopicCreation(), kgo.MaxBufferedRecords(100000))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	recs := make([]*kgo.Record, 0, n)
	for i := first; i < first+n; i++ {
		key := fmt.Sprintf("k%02d", i%testKeys)
		v, _ := json.Marshal(event{Seq: i, Key: key, KeySeq: i / testKeys})
		recs = append(recs, &kgo.Record{Topic: topic, Key: []byte(key), Value: v})
	}
	for start := 0; start < len(recs); start += 10000 {
		end := min(start+10000, len(recs))
		if err := cl.ProduceSync(context.Background(), recs[start:end]...).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
}

// consumeN reads topic from the start until n records arrived or the
// deadline passed, and returns what it read.
func consumeN(t testing.TB, addr, topic string, n int, within time.Duration) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	var out []*kgo.Record
	for len(out) < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			break
		}
		out = append(out, fs.Records()...)
	}
	return out
}

func decode(t testing.TB, b []byte) event {
	t.Helper()
	var e event
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatalf("bad record %q: %v", b, err)
	}
	return e
}

// collector gathers what a stream's output acknowledged, by global sequence.
type collector struct {
	mu    sync.Mutex
	seen  map[int]int // seq → times acknowledged
	total int
	ch    chan struct{}
}

func newCollector() *collector {
	return &collector{seen: map[int]int{}, ch: make(chan struct{}, 1)}
}

func (c *collector) add(t testing.TB, b service.MessageBatch) {
	c.mu.Lock()
	for _, m := range b {
		raw, _ := m.AsBytes()
		c.seen[decode(t, raw).Seq]++
		c.total++
	}
	c.mu.Unlock()
	c.poke()
}

// poke wakes waitFor without adding anything, for conditions kept outside.
func (c *collector) poke() {
	select {
	case c.ch <- struct{}{}:
	default:
	}
}

func (c *collector) distinct() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.seen)
}

func (c *collector) has(seq int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.seen[seq] > 0
}

// waitFor blocks until cond holds after some delivery, or fails the test
// after within.
func (c *collector) waitFor(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for !cond() {
		select {
		case <-c.ch:
		case <-deadline.C:
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
	}
}

// runStream builds a stream from an input YAML and a consumer function and
// runs it until the test stops it.
type runningStream struct {
	stream *service.Stream
	done   chan error
}

func startStream(t testing.TB, inputYAML string, threads int, fn service.MessageBatchHandlerFunc) *runningStream {
	t.Helper()
	sb := service.NewStreamBuilder()
	if err := sb.SetLoggerYAML("level: warn"); err != nil {
		t.Fatal(err)
	}
	if err := sb.AddInputYAML(inputYAML); err != nil {
		t.Fatal(err)
	}
	sb.SetThreads(threads)
	if err := sb.AddBatchConsumerFunc(fn); err != nil {
		t.Fatal(err)
	}
	s, err := sb.Build()
	if err != nil {
		t.Fatal(err)
	}
	rs := &runningStream{stream: s, done: make(chan error, 1)}
	go func() { rs.done <- s.Run(context.Background()) }()
	t.Cleanup(func() { rs.stop(t) })
	return rs
}

func (rs *runningStream) stop(t testing.TB) {
	if rs.stream == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := rs.stream.Stop(ctx); err != nil {
		t.Logf("stopping stream: %v", err)
	}
	rs.stream = nil
}

// waitLag waits until group has committed the end offset of every
// partition of its topics that holds records.
func waitLag(t testing.TB, addr, group string, within time.Duration) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	deadline := time.Now().Add(within)
	for {
		lags, err := adm.Lag(context.Background(), group)
		if err == nil {
			if gl, ok := lags[group]; ok && len(gl.Lag) > 0 && gl.FetchErr == nil && gl.Lag.Total() == 0 {
				ok := true
				for _, ps := range gl.Lag {
					for _, l := range ps {
						if l.End.Offset > 0 && l.Commit.At < l.End.Offset {
							ok = false
						}
					}
				}
				if ok {
					return
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("group %s did not commit everything within %s", group, within)
		}
		time.Sleep(20 * time.Millisecond) // polling the broker's committed offsets
	}
}
