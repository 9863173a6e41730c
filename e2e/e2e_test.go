// Package e2e runs the shipped configs (config/) against the embedded broker
// and the recorded fixtures (internal/fixtures), as an operator would run them.
package e2e

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redpanda-data/benthos/v4/public/service"
	"github.com/twmb/franz-go/pkg/kgo"

	_ "github.com/redpanda-data/benthos/v4/public/components/pure"

	_ "github.com/decnet/decnet-stream/plugins/all"
	"github.com/decnet/decnet-stream/plugins/runtimeconf"

	"github.com/decnet/decnet-stream/internal/broker"
	"github.com/decnet/decnet-stream/internal/fixtures"
)

var logLevel = "warn"

func startBroker(t *testing.T) string {
	t.Helper()
	b, err := broker.Start(broker.Config{Partitions: 6})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b.Addr()
}

// runConfig runs a shipped config file with the given environment until the
// test ends.
func runConfig(t *testing.T, path string, env map[string]string) {
	t.Helper()
	runConfigServing(t, path, env)
}

// runConfigServing is runConfig that also serves the stream's HTTP
// endpoints (/metrics, /ready, …) and returns their base URL.
func runConfigServing(t *testing.T, path string, env map[string]string) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", path))
	if err != nil {
		t.Fatal(err)
	}
	sb := service.NewStreamBuilder()
	sb.SetSchema(runtimeconf.Schema("e2e", ""))
	sb.SetEnvVarLookupFunc(func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err := sb.SetYAML(string(raw)); err != nil {
		t.Fatal(err)
	}
	if err := sb.SetLoggerYAML("level: " + logLevel); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	sb.SetHTTPMux(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	s, err := sb.Build()
	if err != nil {
		t.Fatal(err)
	}
	var stopped atomic.Bool
	go func() {
		if err := s.Run(context.Background()); err != nil && !stopped.Load() {
			t.Errorf("%s stopped: %v", path, err)
		}
	}()
	t.Cleanup(func() { stopped.Store(true); _ = s.StopWithin(10 * time.Second) })
	return srv.URL
}

func client(t *testing.T, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// consume reads from the start until n records arrived, failing after within.
func consume(t *testing.T, cl *kgo.Client, n int, within time.Duration) []*kgo.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	var out []*kgo.Record
	for len(out) < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %d of %d records before the deadline", len(out), n)
		}
		out = append(out, fs.Records()...)
	}
	return out
}

func header(r *kgo.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

func readEvents(t *testing.T, name string) []fixtures.EventLine {
	t.Helper()
	lines, err := fixtures.Events(name)
	if err != nil {
		t.Fatal(err)
	}
	return lines
}
