package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/redpanda-data/benthos/v4/public/service"
	ucli "github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/decnet/decnet-stream/internal/broker"
	"github.com/decnet/decnet-stream/internal/chserver"
	"github.com/decnet/decnet-stream/internal/fixtures"
	"github.com/decnet/decnet-stream/internal/providersim"
	"github.com/decnet/decnet-stream/plugins/runtimeconf"
)

// devCommand is `decnet-stream dev`: the whole job on one machine. It starts
// the embedded broker, a local ClickHouse and a simulation of the four
// providers, runs the pipeline and a generator of DECNET traffic against
// them, and shows what the stage is doing until Ctrl-C.
func devCommand() *ucli.Command {
	return &ucli.Command{
		Name:  "dev",
		Usage: "Run the pipeline on an embedded broker, fed by generated DECNET traffic, and show what it does",
		Description: `Everything runs on this machine and nothing leaves it: an embedded Kafka broker, a local
ClickHouse (scripts/clickhouse.sh: installed and started when missing, or CLICKHOUSE_DSN), and
simulated providers answering any IP with the providers' recorded response shapes (a realistic
mix of malicious, suspicious, benign and unseen attackers). The shipped free-tier limits apply,
their rates scaled up 20x so that a minute shows both the enrichment and the daily budgets
biting. With a real API key in the environment (DECNET_GREYNOISE_API_KEY, ...) the real
providers are asked instead.`,
		Flags: []ucli.Flag{
			&ucli.StringFlag{Name: "broker-addr", Value: "127.0.0.1:9092", Usage: "where the embedded broker listens (a free port if taken)"},
			&ucli.StringSliceFlag{Name: "config", Value: ucli.NewStringSlice("config/pipeline.yaml"), Usage: "pipeline configs to run"},
			&ucli.StringFlag{Name: "generator", Value: "config/dev/generator.yaml", Usage: "the traffic generator config (empty for none)"},
			&ucli.StringSliceFlag{Name: "stream", Value: ucli.NewStringSlice("config/streams/heartbeat.yaml"), Usage: "more streams to run beside the pipeline"},
			&ucli.DurationFlag{Name: "summary-interval", Usage: "how often to show the summary (default 2s on a terminal, 10s otherwise)"},
			&ucli.DurationFlag{Name: "duration", Usage: "stop after this long (default: run until Ctrl-C)"},
			&ucli.BoolFlag{Name: "plain", Usage: "print the summary as lines, even on a terminal"},
			&ucli.BoolFlag{Name: "check", Usage: "exit non-zero unless attackers were enriched, rows written and more than one verdict seen (for CI)"},
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
			w := c.App.Writer
			live := !c.Bool("plain") && isTerminal(w)
			every := c.Duration("summary-interval")
			if every <= 0 {
				every = 10 * time.Second
				if live {
					every = 2 * time.Second
				}
			}
			return runDev(ctx, devOptions{w: w, addr: c.String("broker-addr"), configs: configs, every: every, live: live, check: c.Bool("check")})
		},
	}
}

type devOptions struct {
	w       io.Writer
	addr    string
	configs []string
	every   time.Duration
	live    bool
	check   bool
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func runDev(ctx context.Context, o devOptions) error {
	started := time.Now()
	b, err := broker.Start(broker.Config{Addr: o.addr})
	if err != nil {
		// Another broker (an earlier dev, a real one) has the port.
		if b, err = broker.Start(broker.Config{Addr: "127.0.0.1:0"}); err != nil {
			return err
		}
	}
	defer b.Close()
	fmt.Fprintf(o.w, "decnet-stream dev: embedded Kafka broker on %s\n", b.Addr())
	env := map[string]string{"KAFKA_SEED_BROKERS": b.Addr()}

	state, err := os.MkdirTemp("", "decnet-dev-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(state)
	// A fresh budget each run, so the limits bite within the demo; and
	// lookups wait for their rate-limit tokens (the lookup topic queues
	// the new attackers meanwhile) rather than giving up after 2s, so the
	// rows come out whole at the providers' pace.
	env["INTEL_STATE_FILE"] = filepath.Join(state, "budget.json")
	env["INTEL_FEED_DIR"] = filepath.Join(state, "feeds")
	env["INTEL_BUDGET_TABLE"] = "dev_intel_budget"
	env["INTEL_MAX_WAIT"] = "60s"

	stopProviders, simulated, err := devProviders(o.w, env)
	if err != nil {
		return err
	}
	defer stopProviders()
	dsn, err := devClickHouse(ctx, o.w, env)
	if err != nil {
		return err
	}

	streams := make([]*service.Stream, 0, len(o.configs))
	for _, path := range o.configs {
		s, err := buildStream(path, env, simulated && path == o.configs[0])
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
				errs <- fmt.Errorf("%s: %w", o.configs[i], err)
			}
		}()
		fmt.Fprintf(o.w, "decnet-stream dev: running %s\n", o.configs[i])
	}

	sum, err := newDevSummary(b.Addr(), dsn, envOr(env, "CLICKHOUSE_TABLE", "attacker_intel"), started)
	if err != nil {
		return err
	}
	defer sum.close()
	tick := time.NewTicker(o.every)
	defer tick.Stop()
	var runErr error
loop:
	for {
		select {
		case <-tick.C:
			snap := sum.collect(ctx)
			if o.live {
				fmt.Fprint(o.w, "\x1b[H\x1b[2J") // redraw in place
			}
			snap.write(o.w)
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
	final := sum.collect(context.Background())
	fmt.Fprintln(o.w, "\ndecnet-stream dev: final tally")
	final.write(o.w)
	if runErr == nil && o.check {
		runErr = final.check()
	}
	return runErr
}

// devClickHouse makes sure a ClickHouse server is up for the attacker_intel
// rows: CLICKHOUSE_DSN when set, else the local one of scripts/clickhouse.sh
// (installed and started when missing).
func devClickHouse(ctx context.Context, w io.Writer, env map[string]string) (string, error) {
	dsn := os.Getenv("CLICKHOUSE_DSN")
	if dsn == "" {
		cmd := exec.CommandContext(ctx, "bash", filepath.Join("scripts", "clickhouse.sh"), "start")
		cmd.Stdout, cmd.Stderr = w, w
		if err := cmd.Run(); err != nil {
			return "", fmt.Errorf("starting the local ClickHouse (scripts/clickhouse.sh start): %w", err)
		}
		dsn = "clickhouse://127.0.0.1:" + envOr(nil, "CLICKHOUSE_TCP_PORT", "9000") + "/default"
	}
	env["CLICKHOUSE_DSN"] = dsn
	// The demo starts cold every time, in tables of its own: every attacker
	// is new, and the budgets whole.
	if os.Getenv("CLICKHOUSE_TABLE") == "" {
		env["CLICKHOUSE_TABLE"] = "dev_attacker_intel"
	}
	for _, t := range []string{env["CLICKHOUSE_TABLE"], env["INTEL_BUDGET_TABLE"]} {
		if t != os.Getenv("CLICKHOUSE_TABLE") {
			_ = chserver.Exec(ctx, dsn, "DROP TABLE IF EXISTS "+t)
		}
	}
	return dsn, nil
}

// envOr is env's value of k, else the process environment's, else def.
func envOr(env map[string]string, k, def string) string {
	if v := env[k]; v != "" {
		return v
	}
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// apiKeys are the environment variables of real provider keys (old names
// were adopted at start: env_names.go).
var apiKeys = []string{"DECNET_GREYNOISE_API_KEY", "DECNET_ABUSEIPDB_API_KEY", "DECNET_THREATFOX_API_KEY"}

// devProviders points the pipeline's providers at a local simulation,
// unless real API keys are set. The generated attackers use documentation
// addresses, which must never reach a real provider: the simulation takes
// them, the real providers are only asked with real keys and real traffic.
func devProviders(w io.Writer, env map[string]string) (stop func(), simulated bool, err error) {
	for _, k := range apiKeys {
		if os.Getenv(k) != "" {
			fmt.Fprintf(w, "decnet-stream dev: %s is set: asking the real providers\n", k)
			return func() {}, false, nil
		}
	}
	sim, err := providersim.Start(fixtures.FS(), providersim.Config{AllowDocumentationRanges: true})
	if err != nil {
		return nil, false, err
	}
	sim.SetLatencyFunc(providersim.MixedLatency(300 * time.Millisecond))
	for k, v := range map[string]string{
		"GREYNOISE_BASE_URL": sim.URL, "ABUSEIPDB_BASE_URL": sim.URL, "THREATFOX_BASE_URL": sim.URL,
		"DECNET_GREYNOISE_API_KEY": "dev-simulation", "DECNET_ABUSEIPDB_API_KEY": "dev-simulation", "DECNET_THREATFOX_API_KEY": "dev-simulation",
		"FEODO_URL": sim.URL + "/ipblocklist.json", "INTEL_ALLOW_DOCUMENTATION_RANGES": "true",
		"THREATFOX_EXPORT_URL": sim.URL + "/export/json/ip-port/recent/",
		"SPAMHAUS_DROP_V4_URL": sim.URL + "/drop/drop_v4.json", "SPAMHAUS_DROP_V6_URL": sim.URL + "/drop/drop_v6.json",
	} {
		env[k] = v
	}
	fmt.Fprintf(w, "decnet-stream dev: simulated providers at %s (recorded response shapes, any IP; nothing leaves this machine)\n", sim.URL)
	return sim.Close, true, nil
}

// demoRate scales the per-IP providers' free-tier rates for the demo: the
// daily budgets stay as shipped, so within a minute the enrichment shows
// and GreyNoise's 100 lookups a day run out.
const demoRate = 20

func buildStream(path string, env map[string]string, scaleLimits bool) (*service.Stream, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	sb := service.NewStreamBuilder()
	// The config's runtime section is accepted and left unapplied: the
	// demo shares its process with a broker and ClickHouse's feeders.
	sb.SetSchema(runtimeconf.Schema(version, dateBuilt))
	sb.SetEnvVarLookupFunc(func(k string) (string, bool) {
		if v, ok := env[k]; ok {
			return v, true
		}
		return os.LookupEnv(k)
	})
	if err := sb.SetYAML(string(raw)); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if scaleLimits {
		// GreyNoise, AbuseIPDB and ThreatFox in config/pipeline.yaml.
		for _, i := range []int{0, 1, 3} {
			prefix := fmt.Sprintf("pipeline.processors.1.intel_enrich.providers.%d.limits.", i)
			if err := sb.SetFields(prefix+"rate_per_second", float64(demoRate), prefix+"burst", demoRate); err != nil {
				return nil, fmt.Errorf("%s: scaling the demo's limits: %w", path, err)
			}
		}
	}
	s, err := sb.Build()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}
