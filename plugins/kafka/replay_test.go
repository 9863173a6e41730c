package kafka

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redpanda-data/benthos/v4/public/service"

	_ "github.com/decnet/decnet-stream/plugins/concurrent_switch"
)

// flakyOutput fails each message whose seq is in failing for its first
// `times` attempts, reporting the failures per message (a BatchError), and
// records every message it accepted.
type flakyOutput struct {
	mu        sync.Mutex
	attempts  map[int]int
	delivered map[int]int
	failing   func(seq int) bool
	times     int
}

func (o *flakyOutput) Connect(context.Context) error { return nil }
func (o *flakyOutput) Close(context.Context) error   { return nil }

func (o *flakyOutput) WriteBatch(_ context.Context, batch service.MessageBatch) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	var bErr *service.BatchError
	for i, m := range batch {
		b, _ := m.AsBytes()
		var e event
		if err := json.Unmarshal(b, &e); err != nil {
			return err
		}
		seq := e.Seq
		o.attempts[seq]++
		if o.failing(seq) && o.attempts[seq] <= o.times {
			if bErr == nil {
				bErr = service.NewBatchError(batch, fmt.Errorf("flaky"))
			}
			bErr.Failed(i, fmt.Errorf("seq %d attempt %d refused", seq, o.attempts[seq]))
			continue
		}
		o.delivered[seq]++
	}
	if bErr != nil {
		return bErr
	}
	return nil
}

// Messages nacked more than once in a row are replayed until they are
// delivered, however the failures fall within their batch. (Benthos' own
// nack-replay wrapper maps a replayed batch's failures by the indexes of the
// batch first read, so a message failing again beyond the replayed batch's
// length was acknowledged undelivered: lost, and its offset committed.)
func TestRepeatedPartialNacksLoseNothing(t *testing.T) {
	const n = 600
	out := &flakyOutput{attempts: map[int]int{}, delivered: map[int]int{}, times: 3,
		failing: func(seq int) bool { return seq%7 >= 3 }}
	if lost := replayThrough(t, n, out, nil, nil, "flaky: {}", every); len(lost) > 0 {
		t.Fatalf("%d of %d messages were committed but never delivered, e.g. %v", len(lost), n, lost[:min(10, len(lost))])
	}
	// Only what failed is replayed: each failure is traced to its record.
	for seq := 0; seq < n; seq++ {
		if !out.failing(seq) && out.attempts[seq] != 1 {
			t.Fatalf("message %d never failed but was written %d times", seq, out.attempts[seq])
		}
	}
}

// replayThrough produces n events and streams them from the input through
// processors (YAML, in order) into output (YAML naming the "flaky"
// output, out) until the group has committed every offset. register adds
// the test's own plugins. It returns the seqs out never accepted among
// those want says must arrive, with out locked until the test ends.
func replayThrough(t *testing.T, n int, out *flakyOutput, register func(*service.Environment), processors []string, output string, want func(seq int) bool) []int {
	t.Helper()
	addr := startBroker(t, "in")
	produce(t, addr, "in", 0, n)
	env := service.NewEnvironment()
	must(t, env.RegisterBatchOutput("flaky", service.NewConfigSpec(),
		func(*service.ParsedConfig, *service.Resources) (service.BatchOutput, service.BatchPolicy, int, error) {
			return out, service.BatchPolicy{}, 1, nil
		}))
	if register != nil {
		register(env)
	}
	sb := env.NewStreamBuilder()
	must(t, sb.SetLoggerYAML("level: warn"))
	must(t, sb.AddInputYAML(inputYAML(addr, "in", "replayer", "")))
	for _, p := range processors {
		must(t, sb.AddProcessorYAML(p))
	}
	must(t, sb.AddOutputYAML(output))
	s, err := sb.Build()
	must(t, err)
	go func() { _ = s.Run(context.Background()) }()
	t.Cleanup(func() { _ = s.StopWithin(10 * time.Second) })

	waitLag(t, addr, "replayer", 60*time.Second)
	out.mu.Lock()
	t.Cleanup(out.mu.Unlock)
	var lost []int
	for seq := 0; seq < n; seq++ {
		if want(seq) && out.delivered[seq] == 0 {
			lost = append(lost, seq)
		}
	}
	return lost
}

func every(int) bool { return true }

// The same through a switch output whose cases split each batch, after
// processors that drop some messages (as intel_enrich drops repeats).
func TestRepeatedPartialNacksThroughASwitchLoseNothing(t *testing.T) {
	// Benthos' switch, and ours that writes its cases concurrently (the
	// one pipeline.yaml uses): both must map each case's nacks back.
	for _, sw := range []string{"switch", "concurrent_switch"} {
		t.Run(sw, func(t *testing.T) { partialNacksThroughASwitch(t, sw) })
	}
}

func partialNacksThroughASwitch(t *testing.T, sw string) {
	const n = 600
	out := &flakyOutput{attempts: map[int]int{}, delivered: map[int]int{}, times: 3,
		failing: func(seq int) bool { return seq%7 >= 3 }}
	lost := replayThrough(t, n, out, nil, []string{
		`mutation: 'meta odd = if this.seq % 2 == 1 { "yes" } else { "no" }'`,
		`mapping: 'root = if this.seq % 11 == 0 { deleted() } else { this }'`,
	}, sw+`:
  cases:
    - check: '@odd == "yes"'
      output: { flaky: {} }
    - output: { flaky: {} }
`, func(seq int) bool { return seq%11 != 0 })
	if len(lost) > 0 {
		t.Fatalf("%d of %d messages were committed but never delivered, e.g. %v; attempts %d", len(lost), n, lost[:min(10, len(lost))], len(out.attempts))
	}
}

// Per-record failures are reported against their own messages. franz-go's
// ProduceSync returns results in the order they complete, not the order
// given: attributing them by position blamed a delivered message and let a
// refused one be acknowledged. Here the too-large records (refused by the
// client, over max_message_bytes, before any is sent) and the small ones
// (written) are interleaved.
func TestWriterReportsEachFailureAgainstItsOwnMessage(t *testing.T) {
	addr := startBroker(t, "big")
	conf, err := outputSpec().ParseYAML(fmt.Sprintf("seed_brokers: [ %q ]\ntopic: big\n", addr), nil)
	must(t, err)
	wc, err := parseWriterConfig(conf)
	must(t, err)
	w := newFranzWriter(wc, service.MockResources())
	must(t, w.Connect(context.Background()))
	defer w.Close(context.Background())
	var batch service.MessageBatch
	tooLarge := map[int]bool{}
	for i := 0; i < 12; i++ {
		size := 100
		if i%3 == 1 {
			size, tooLarge[i] = 2<<20, true // over the default 1 MiB max_message_bytes
		}
		body := make([]byte, size)
		_, _ = rand.Read(body) // incompressible: compression must not make it fit
		batch = append(batch, service.NewMessage(body))
	}
	idx := batch.Index()
	err = w.WriteBatch(context.Background(), batch)
	var bErr *service.BatchError
	if !errors.As(err, &bErr) {
		t.Fatalf("got %v, want per-message failures", err)
	}
	walked := 0
	bErr.WalkMessagesIndexedBy(idx, func(i int, _ *service.Message, e error) bool {
		walked++
		if (e != nil) != tooLarge[i] {
			t.Errorf("message %d (too large: %v) reported %v", i, tooLarge[i], e)
		}
		return true
	})
	if walked != len(batch) {
		t.Fatalf("the error covers %d of %d messages", walked, len(batch))
	}
}

// renewProcessor replaces every message with a new one holding the same
// bytes but neither the metadata nor the context the input gave it, as a
// processor building its output from scratch does.
type renewProcessor struct{}

func (renewProcessor) ProcessBatch(_ context.Context, b service.MessageBatch) ([]service.MessageBatch, error) {
	out := make(service.MessageBatch, len(b))
	for i, m := range b {
		body, err := m.AsBytes()
		if err != nil {
			return nil, err
		}
		out[i] = service.NewMessage(body)
	}
	return []service.MessageBatch{out}, nil
}

func (renewProcessor) Close(context.Context) error { return nil }

// A failure the input cannot trace to its records (the failed message
// carries nothing of the message it was made from) replays the whole
// batch: duplicates, never a record committed undelivered.
func TestPartialNacksOfUntraceableMessagesLoseNothing(t *testing.T) {
	const n = 300
	out := &flakyOutput{attempts: map[int]int{}, delivered: map[int]int{}, times: 2,
		failing: func(seq int) bool { return seq%5 == 2 }}
	renew := func(env *service.Environment) {
		must(t, env.RegisterBatchProcessor("renew", service.NewConfigSpec(),
			func(*service.ParsedConfig, *service.Resources) (service.BatchProcessor, error) {
				return renewProcessor{}, nil
			}))
	}
	if lost := replayThrough(t, n, out, renew, []string{"renew: {}"}, "flaky: {}", every); len(lost) > 0 {
		t.Fatalf("%d of %d messages were committed but never delivered, e.g. %v", len(lost), n, lost[:min(10, len(lost))])
	}
}
