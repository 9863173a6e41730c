package kafka

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redpanda-data/benthos/v4/public/service"

	_ "github.com/decnet/decnet-stream/plugins/prometheus"
)

// lagStream runs the input with the prometheus exporter and returns a
// function that scrapes its /metrics.
func lagStream(t *testing.T, input string, fn service.MessageBatchHandlerFunc) func() string {
	t.Helper()
	sb := service.NewStreamBuilder()
	mux := http.NewServeMux()
	sb.SetHTTPMux(mux)
	must(t, sb.SetLoggerYAML("level: warn"))
	must(t, sb.SetMetricsYAML("prometheus: {}"))
	must(t, sb.AddInputYAML(input))
	must(t, sb.AddBatchConsumerFunc(fn))
	s, err := sb.Build()
	must(t, err)
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Run(context.Background()) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_ = s.Stop(ctx)
		<-done
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return func() string {
		resp, err := http.Get(srv.URL + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
}

// Every message says how far behind the partition's end it was read, and
// kafka_consumer_lag says it per partition, in Prometheus' format.
func TestLagMetadataAndGauge(t *testing.T) {
	addr := startBroker(t, "lagged")
	produce(t, addr, "lagged", 0, 120)
	type seen struct{ offset, lag int64 }
	var mu sync.Mutex
	got := map[int][]seen{}
	c := newCollector()
	metrics := lagStream(t, inputYAML(addr, "lagged", "lag-group", ""), func(_ context.Context, b service.MessageBatch) error {
		mu.Lock()
		for _, m := range b {
			p, _ := m.MetaGetMut(metaPartition)
			o, _ := m.MetaGetMut(metaOffset)
			l, _ := m.MetaGetMut(metaLag)
			got[p.(int)] = append(got[p.(int)], seen{int64(o.(int)), l.(int64)})
		}
		mu.Unlock()
		c.add(t, b)
		return nil
	})
	c.waitFor(t, 30*time.Second, "every record", func() bool { return c.distinct() == 120 })

	mu.Lock()
	defer mu.Unlock()
	text := metrics()
	for p, recs := range got {
		// Everything was produced before the stream started: each fetch saw
		// the partition's final high watermark.
		end := int64(len(recs))
		for _, r := range recs {
			if r.lag != end-r.offset-1 {
				t.Errorf("partition %d offset %d: kafka_lag %d, want %d", p, r.offset, r.lag, end-r.offset-1)
			}
		}
		line := regexp.MustCompile(fmt.Sprintf(`kafka_consumer_lag\{[^}]*partition="%d"[^}]*topic="lagged"\} 0\n`, p))
		if !line.MatchString(text) {
			t.Errorf("no lag 0 for partition %d in /metrics:\n%s", p, text)
		}
	}
}

// A partition whose batch never finishes returns no more records: its lag
// comes from the group's commits (read every topic_lag_refresh_period, a
// field of the redpanda input), and counts what is not committed.
func TestGroupLagCountsWhatIsNotCommitted(t *testing.T) {
	addr := startBroker(t, "stuck")
	produce(t, addr, "stuck", 0, 60)
	release := make(chan struct{})
	metrics := lagStream(t, strings.Replace(inputYAML(addr, "stuck", "stuck-group", "  checkpoint_limit: 1\n  auto_replay_nacks: false\n  topic_lag_refresh_period: 20ms"), "kafka_franz:", "redpanda:", 1),
		func(ctx context.Context, b service.MessageBatch) error {
			select { // never acknowledged while the test runs
			case <-release:
			case <-ctx.Done():
			}
			return nil
		})
	t.Cleanup(func() { close(release) }) // before the stream stops: cleanups run last first
	// Every partition holds 10 records (60 keys over 6 partitions); nothing
	// is committed, so the group lags by all of them on each.
	lagLine := regexp.MustCompile(`kafka_consumer_lag\{[^}]*partition="(\d)"[^}]*topic="stuck"\} (\d+)\n`)
	deadline := time.Now().Add(20 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		total := 0
		ms := lagLine.FindAllStringSubmatch(metrics(), -1)
		for _, m := range ms {
			n, _ := strconv.Atoi(m[2])
			total += n
		}
		if len(ms) == 6 && total == 60 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("lag never showed 60 uncommitted records on 6 partitions: %v", ms)
		}
		<-tick.C
	}
}
