package kafka

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redpanda-data/benthos/v4/public/service"
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
		var seq int
		fmt.Sscanf(string(b), `{"seq":%d`, &seq)
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
	addr := startBroker(t, "in")
	produce(t, addr, "in", 0, n)

	out := &flakyOutput{attempts: map[int]int{}, delivered: map[int]int{}, times: 3,
		failing: func(seq int) bool { return seq%7 >= 3 }}
	env := service.NewEnvironment()
	must(t, env.RegisterBatchOutput("flaky", service.NewConfigSpec(),
		func(*service.ParsedConfig, *service.Resources) (service.BatchOutput, service.BatchPolicy, int, error) {
			return out, service.BatchPolicy{}, 1, nil
		}))
	sb := env.NewStreamBuilder()
	must(t, sb.SetLoggerYAML("level: warn"))
	must(t, sb.AddInputYAML(inputYAML(addr, "in", "replayer", "")))
	must(t, sb.AddOutputYAML("flaky: {}"))
	s, err := sb.Build()
	must(t, err)
	go func() { _ = s.Run(context.Background()) }()
	defer func() { _ = s.StopWithin(10 * time.Second) }()

	waitLag(t, addr, "replayer", 60*time.Second)
	out.mu.Lock()
	defer out.mu.Unlock()
	var lost []int
	for seq := 0; seq < n; seq++ {
		if out.delivered[seq] == 0 {
			lost = append(lost, seq)
		}
	}
	if len(lost) > 0 {
		t.Fatalf("%d of %d messages were committed but never delivered, e.g. %v", len(lost), n, lost[:min(10, len(lost))])
	}
}
