package concurrent_switch

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	_ "github.com/redpanda-data/benthos/v4/public/components/pure"
	"github.com/redpanda-data/benthos/v4/public/service"
)

// sink is a test output: it records what it is given, and holds each write
// until hold is closed (when set) or fails it (when fail is set).
type sink struct {
	got  chan service.MessageBatch
	hold chan struct{}
	fail func(service.MessageBatch) error
}

var (
	sinksMu sync.Mutex
	sinks   = map[string]*sink{}
)

func init() {
	err := service.RegisterBatchOutput("test_sink", service.NewConfigSpec().Field(service.NewStringField("name")),
		func(conf *service.ParsedConfig, _ *service.Resources) (service.BatchOutput, service.BatchPolicy, int, error) {
			name, err := conf.FieldString("name")
			if err != nil {
				return nil, service.BatchPolicy{}, 0, err
			}
			sinksMu.Lock()
			defer sinksMu.Unlock()
			s := sinks[name]
			if s == nil {
				return nil, service.BatchPolicy{}, 0, fmt.Errorf("no sink %q", name)
			}
			// One write at a time, as a batched output flushing a batch is:
			// what it is not yet writing waits in its channel.
			return s, service.BatchPolicy{}, 1, nil
		})
	if err != nil {
		panic(err)
	}
}

func (s *sink) Connect(context.Context) error { return nil }
func (s *sink) Close(context.Context) error   { return nil }
func (s *sink) WriteBatch(ctx context.Context, b service.MessageBatch) error {
	s.got <- b
	if s.hold != nil {
		select {
		case <-s.hold:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if s.fail != nil {
		return s.fail(b)
	}
	return nil
}

func newSink(t *testing.T, name string) *sink {
	s := &sink{got: make(chan service.MessageBatch, 100)}
	sinksMu.Lock()
	sinks[t.Name()+"/"+name] = s
	sinksMu.Unlock()
	return s
}

// start runs a stream of a producer into output yaml, whose sink names are
// prefixed with the test's name.
func start(t *testing.T, yaml string) service.MessageBatchHandlerFunc {
	t.Helper()
	b := service.NewStreamBuilder()
	if err := b.SetLoggerYAML("level: off"); err != nil {
		t.Fatal(err)
	}
	produce, err := b.AddBatchProducerFunc()
	if err != nil {
		t.Fatal(err)
	}
	if err := b.AddOutputYAML(fmt.Sprintf(yaml, t.Name())); err != nil {
		t.Fatal(err)
	}
	stream, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = stream.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return produce
}

const twoCases = `
concurrent_switch:
  cases:
    - check: '@lane == "rows"'
      output:
        test_sink: { name: "%[1]s/rows" }
    - check: '@lane == "requests"'
      output:
        test_sink: { name: "%[1]s/requests" }
`

func batchOf(lanes ...string) service.MessageBatch {
	var b service.MessageBatch
	for i, lane := range lanes {
		m := service.NewMessage(fmt.Appendf(nil, "%d", i))
		m.MetaSetMut("lane", lane)
		b = append(b, m)
	}
	return b
}

func bodies(b service.MessageBatch) []string {
	var out []string
	for _, m := range b {
		raw, _ := m.AsBytes()
		out = append(out, string(raw))
	}
	return out
}

// The invariant pipeline.yaml relies on: while one case's output holds a
// batch (ClickHouse busy with rows), batches for another case (lookup
// requests of repeat sightings) are written and acknowledged. Benthos'
// switch fails this: its one loop waits on the held case.
func TestASlowCaseHoldsOnlyItsOwnBatches(t *testing.T) {
	rows, requests := newSink(t, "rows"), newSink(t, "requests")
	rows.hold = make(chan struct{})
	produce := start(t, twoCases)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Several rows batches: the output holds the first, the others wait
	// for it (in Benthos' switch, in its one loop).
	const held = 4
	rowsDone := make(chan error, held)
	for range held {
		go func() { rowsDone <- produce(ctx, batchOf("rows", "rows")) }()
	}
	<-rows.got // the rows output now holds a batch

	for range 3 {
		if err := produce(ctx, batchOf("requests", "requests")); err != nil {
			t.Fatalf("a requests batch behind held rows: %v", err)
		}
		<-requests.got
	}
	select {
	case err := <-rowsDone:
		t.Fatalf("the held rows batch was acknowledged before its output let go: %v", err)
	default:
	}
	close(rows.hold)
	for range held {
		if err := <-rowsDone; err != nil {
			t.Fatalf("rows: %v", err)
		}
	}
}

// A batch split between cases is acknowledged only when every case has its
// share, and each case gets the messages it checks for, in batch order.
func TestABatchIsAcknowledgedWhenEveryCaseHasItsShare(t *testing.T) {
	rows, requests := newSink(t, "rows"), newSink(t, "requests")
	rows.hold = make(chan struct{})
	produce := start(t, twoCases)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	done := make(chan error, 1)
	go func() { done <- produce(ctx, batchOf("rows", "requests", "nobody", "rows", "requests")) }()
	gotRows, gotRequests := <-rows.got, <-requests.got
	select {
	case err := <-done:
		t.Fatalf("acknowledged while the rows case still held its share: %v", err)
	default:
	}
	close(rows.hold)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := bodies(gotRows); !slices.Equal(got, []string{"0", "3"}) {
		t.Errorf("rows case got %v", got)
	}
	if got := bodies(gotRequests); !slices.Equal(got, []string{"1", "4"}) {
		t.Errorf("requests case got %v", got)
	}
}

// A failed case fails only the messages routed to it (those its output
// names, when it names some): the input delivers only those again.
func TestAFailedCaseFailsOnlyItsMessages(t *testing.T) {
	rows, requests := newSink(t, "rows"), newSink(t, "requests")
	boom := errors.New("clickhouse said no")
	rows.fail = func(b service.MessageBatch) error {
		return service.NewBatchError(b, boom).Failed(1, boom) // the share's second message
	}
	requests.fail = func(service.MessageBatch) error { return nil }

	b := service.NewStreamBuilder()
	if err := b.SetLoggerYAML("level: off"); err != nil {
		t.Fatal(err)
	}
	if err := b.AddOutputYAML(fmt.Sprintf(twoCases, t.Name())); err != nil {
		t.Fatal(err)
	}
	// A processor between the input and the output sees the output's
	// verdict per message through the batch error: the way kafka_franz
	// decides what to replay.
	var failed []string
	var mu sync.Mutex
	produce, err := b.AddBatchProducerFunc()
	if err != nil {
		t.Fatal(err)
	}
	stream, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	go func() { _ = stream.Run(ctx) }()
	defer func() { _ = stream.Stop(context.Background()) }()

	batch := batchOf("rows", "requests", "rows", "rows")
	index := batch.Index()
	perr := produce(ctx, batch)
	<-rows.got
	<-requests.got
	var berr *service.BatchError
	if !errors.As(perr, &berr) {
		t.Fatalf("want a batch error, got %v", perr)
	}
	berr.WalkMessagesIndexedBy(index, func(i int, m *service.Message, e error) bool {
		if e != nil {
			raw, _ := m.AsBytes()
			mu.Lock()
			failed = append(failed, fmt.Sprintf("%d:%s", i, raw))
			mu.Unlock()
		}
		return true
	})
	if !slices.Equal(failed, []string{"2:2"}) {
		t.Errorf("failed messages %v, want only the rows share's second (index 2)", failed)
	}
}
