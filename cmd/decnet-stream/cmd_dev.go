package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/redpanda-data/benthos/v4/public/service"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	ucli "github.com/urfave/cli/v2"

	"github.com/decnet/decnet-stream/internal/broker"
	"github.com/decnet/decnet-stream/internal/fixtures"
	"github.com/decnet/decnet-stream/plugins/intel_processor"
)

// devCommand is `decnet-stream dev`: the whole job on one machine. It starts
// the embedded broker, runs the pipeline and a generator of DECNET traffic
// against it, and prints what flows through each topic until Ctrl-C.
func devCommand() *ucli.Command {
	return &ucli.Command{
		Name:  "dev",
		Usage: "Run the pipeline on an embedded broker, fed by generated DECNET traffic",
		Flags: []ucli.Flag{
			&ucli.StringFlag{Name: "broker-addr", Value: "127.0.0.1:9092", Usage: "where the embedded broker listens"},
			&ucli.StringSliceFlag{Name: "config", Value: ucli.NewStringSlice("config/pipeline.yaml"), Usage: "pipeline configs to run"},
			&ucli.StringFlag{Name: "generator", Value: "config/dev/generator.yaml", Usage: "the traffic generator config (empty for none)"},
			&ucli.StringSliceFlag{Name: "stream", Value: ucli.NewStringSlice("config/streams/heartbeat.yaml"), Usage: "more streams to run beside the pipeline"},
			&ucli.DurationFlag{Name: "summary-interval", Value: 5 * time.Second, Usage: "how often to print the summary"},
			&ucli.DurationFlag{Name: "duration", Usage: "stop after this long (default: run until Ctrl-C)"},
		},
		Action: func(c *ucli.Context) error {
			ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
			defer stop()
			if d := c.Duration("duration"); d > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, d)
				defer cancel()
			}
			configs := append(c.StringSlice("config"), c.StringSlice("stream")...)
			if g := c.String("generator"); g != "" {
				configs = append(configs, g)
			}
			return runDev(ctx, c.App.Writer, c.String("broker-addr"), configs, c.Duration("summary-interval"))
		},
	}
}

func runDev(ctx context.Context, w io.Writer, addr string, configs []string, every time.Duration) error {
	b, err := broker.Start(broker.Config{Addr: addr})
	if err != nil {
		return err
	}
	defer b.Close()
	// The configs read their brokers from the environment.
	if err := os.Setenv("KAFKA_SEED_BROKERS", b.Addr()); err != nil {
		return err
	}
	fmt.Fprintf(w, "decnet-stream dev: embedded broker on %s\n", b.Addr())
	stopProviders, err := devProviders(w)
	if err != nil {
		return err
	}
	defer stopProviders()
	dsn, err := devClickHouse(ctx, w)
	if err != nil {
		return err
	}

	streams := make([]*service.Stream, 0, len(configs))
	for _, path := range configs {
		s, err := buildStream(path)
		if err != nil {
			return err
		}
		streams = append(streams, s)
	}
	errs := make(chan error, len(streams))
	var wg sync.WaitGroup
	for i, s := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Run(ctx); err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
				errs <- fmt.Errorf("%s: %w", configs[i], err)
			}
		}()
		fmt.Fprintf(w, "decnet-stream dev: running %s\n", configs[i])
	}

	sum, err := newTopicSummary(b.Addr(), dsn)
	if err != nil {
		return err
	}
	defer sum.close()
	tick := time.NewTicker(every)
	defer tick.Stop()
	var runErr error
loop:
	for {
		select {
		case <-tick.C:
			fmt.Fprintln(w, sum.line(ctx))
		case runErr = <-errs:
			break loop
		case <-ctx.Done():
			break loop
		}
	}
	for _, s := range streams {
		_ = s.StopWithin(10 * time.Second)
	}
	wg.Wait()
	fmt.Fprintf(w, "decnet-stream dev: final tally: %s\n", sum.line(context.Background()))
	return runErr
}

// devClickHouse makes sure a ClickHouse server is up for the attacker_intel
// rows: CLICKHOUSE_DSN when set, else the local one of scripts/clickhouse.sh
// (installed and started when missing).
func devClickHouse(ctx context.Context, w io.Writer) (string, error) {
	if dsn := os.Getenv("CLICKHOUSE_DSN"); dsn != "" {
		return dsn, nil
	}
	cmd := exec.CommandContext(ctx, "bash", filepath.Join("scripts", "clickhouse.sh"), "start")
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("starting the local ClickHouse (scripts/clickhouse.sh start): %w", err)
	}
	dsn := "clickhouse://127.0.0.1:" + envOr("CLICKHOUSE_TCP_PORT", "9000") + "/default"
	return dsn, os.Setenv("CLICKHOUSE_DSN", dsn)
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// devProviders points the pipeline's providers at a local server answering
// from the recorded fixtures built into the binary, unless real API keys are set: the demo
// then shows real verdicts without sending anything off the machine (the
// generated attackers use documentation addresses, which must never reach a
// real provider).
func devProviders(w io.Writer) (func(), error) {
	for _, k := range []string{"GREYNOISE_API_KEY", "ABUSEIPDB_API_KEY", "THREATFOX_API_KEY"} {
		if os.Getenv(k) != "" {
			fmt.Fprintf(w, "decnet-stream dev: %s is set: using the real providers\n", k)
			return func() {}, nil
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: fixtures.NewProviderServer(fixtures.FS()).Handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	base := "http://" + ln.Addr().String()
	for k, v := range map[string]string{
		"GREYNOISE_BASE_URL": base, "ABUSEIPDB_BASE_URL": base, "THREATFOX_BASE_URL": base,
		"ABUSEIPDB_API_KEY": "dev-fixtures", "THREATFOX_API_KEY": "dev-fixtures",
		"FEODO_URL": base + "/ipblocklist.json", "INTEL_ALLOW_DOCUMENTATION_RANGES": "true",
		"INTEL_STATE_FILE": filepath.Join("var", "dev", "budget.json"),
		// The demo starts cold: every attacker is new at once. Short waits
		// keep the stream moving; late answers fill the cache.
		"INTEL_MAX_WAIT": "250ms",
	} {
		if err := os.Setenv(k, v); err != nil {
			return nil, err
		}
	}
	fmt.Fprintf(w, "decnet-stream dev: providers answer from the recorded fixtures at %s\n", base)
	return func() { _ = srv.Close() }, nil
}

func buildStream(path string) (*service.Stream, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	sb := service.NewStreamBuilder()
	if err := sb.SetYAML(string(raw)); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	s, err := sb.Build()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// topicSummary reports records per topic and their rate since the last
// line, and the attacker_intel rows in ClickHouse.
type topicSummary struct {
	cl   *kgo.Client
	adm  *kadm.Client
	ch   driver.Conn
	last map[string]int64
	at   time.Time
}

func newTopicSummary(addr, dsn string) (*topicSummary, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		return nil, err
	}
	s := &topicSummary{cl: cl, adm: kadm.NewClient(cl), last: map[string]int64{}, at: time.Now()}
	if opts, err := clickhouse.ParseDSN(dsn); err == nil {
		s.ch, _ = clickhouse.Open(opts)
	}
	return s, nil
}

func (s *topicSummary) close() {
	s.cl.Close()
	if s.ch != nil {
		_ = s.ch.Close()
	}
}

// rows counts attacker_intel rows, one per IP.
func (s *topicSummary) rows(ctx context.Context) string {
	if s.ch == nil {
		return "?"
	}
	var n uint64
	if err := s.ch.QueryRow(ctx, "SELECT count() FROM attacker_intel FINAL").Scan(&n); err != nil {
		return "?"
	}
	return fmt.Sprint(n)
}

func (s *topicSummary) line(ctx context.Context) string {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	ends, err := s.adm.ListEndOffsets(ctx)
	if err != nil {
		return "summary unavailable: " + err.Error()
	}
	totals := map[string]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		if !strings.HasPrefix(o.Topic, "__") {
			totals[o.Topic] += o.Offset
		}
	})
	names := make([]string, 0, len(totals))
	for t := range totals {
		names = append(names, t)
	}
	sort.Strings(names)
	secs := time.Since(s.at).Seconds()
	parts := make([]string, 0, len(names))
	for _, t := range names {
		parts = append(parts, fmt.Sprintf("%s=%d (%.0f/s)", t, totals[t], float64(totals[t]-s.last[t])/secs))
	}
	s.last, s.at = totals, time.Now()
	parts = append(parts, "clickhouse attacker_intel rows="+s.rows(ctx))
	st := intel_processor.Stats()
	events, hits := st["events"].(int64), st["cache_hits"].(int64)
	hitRate := 0.0
	if events > 0 {
		hitRate = 100 * float64(hits) / float64(events)
	}
	parts = append(parts, fmt.Sprintf("| intel: events=%d cache_hits=%.1f%% changes=%d verdicts=%v skipped=%d invalid_ip=%d provider_calls=%d provider_errors=%d",
		events, hitRate, st["changes"], st["verdicts"], st["skipped"], st["invalid_ip"], st["provider_calls"], st["provider_errors"]))
	return strings.Join(parts, "  ")
}
