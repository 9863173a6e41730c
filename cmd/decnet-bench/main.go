// Command decnet-bench measures decnet-stream against the machine's ceiling
// and against the stock alternative a user would build instead, side by
// side in one run: it starts an embedded broker, a local ClickHouse and
// simulated providers that count every request, runs bin/decnet-stream on
// config/pipeline.yaml as shipped (and config/bench/stock.yaml), and prints
// a table. Any scenario that loses or duplicates events fails the run, so a
// fast wrong answer never passes as a figure.
//
//	go tool task bench                       # every scenario, defaults sized for a 2-core machine
//	go run ./cmd/decnet-bench -scenarios stock -stock-latencies 0s,50ms
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/decnet/decnet-stream/internal/chserver"
	"github.com/decnet/decnet-stream/internal/fixtures"
	"github.com/decnet/decnet-stream/internal/lab"
	"github.com/decnet/decnet-stream/internal/providersim"
)

type options struct {
	scenarios                  string
	binary                     string
	events, ips                int
	latency                    time.Duration
	latencyRate                int
	latencyFor                 time.Duration
	stageEvents, stageIPs      int
	stageRuns                  int
	stageProfiles              string
	stockEvents, stockIPs      int
	stockLatencies             string
	stormIPs, stormHot         int
	stormRate, stormClientRate float64
	stormProviderLimit         bool
	stormClientBurst           int
	stormOffered               float64
	memoryIPs                  int
	economyIPs                 int
	economySightings           int
	economyListed              string
	scalingEvents, scalingIPs  int
	soakFor, soakEvery         time.Duration
	soakRate, soakIPs          int
	plot                       string
	markdown                   string
	keepLogs                   bool
	sets                       []string // -set, passed to every pipeline run
	env                        []string // -env, in every pipeline process's environment
}

func main() {
	var o options
	flag.StringVar(&o.scenarios, "scenarios", "pipeline,stages,stock,storm,storm-paced,scaling,memory,economy", "scenarios to run, of pipeline (includes the ceiling), stages, stock, storm, storm-paced, scaling, memory, economy, soak")
	flag.StringVar(&o.binary, "binary", "bin/decnet-stream", "the decnet-stream binary under test")
	flag.IntVar(&o.events, "events", 1_000_000, "pipeline: events")
	flag.IntVar(&o.ips, "ips", 10_000, "pipeline: unique attacker IPs (heavy-tailed)")
	flag.DurationVar(&o.latency, "latency", 50*time.Millisecond, "pipeline, storm, scaling: provider latency")
	flag.IntVar(&o.latencyRate, "latency-rate", 2000, "pipeline: events/s produced while latency is measured")
	flag.DurationVar(&o.latencyFor, "latency-for", 10*time.Second, "pipeline: how long latency is measured")
	flag.IntVar(&o.stageEvents, "stage-events", 1_000_000, "stages: repeat sightings each stage reads")
	flag.IntVar(&o.stageIPs, "stage-ips", 10_000, "stages: attacker IPs, all enriched first (heavy-tailed)")
	flag.IntVar(&o.stageRuns, "stage-runs", 3, "stages: runs of each stage (the median is reported)")
	flag.StringVar(&o.stageProfiles, "stage-profiles", "", "stages: a directory for a CPU profile of each run's first 2s (go tool pprof bin/decnet-stream <file>)")
	flag.IntVar(&o.stockEvents, "stock-events", 100_000, "stock: events")
	flag.IntVar(&o.stockIPs, "stock-ips", 1_000, "stock: unique attacker IPs")
	flag.StringVar(&o.stockLatencies, "stock-latencies", "0s,10ms,50ms", "stock: provider latencies compared")
	flag.IntVar(&o.stormIPs, "storm-ips", 100_000, "storm: never-seen IPs at once")
	flag.IntVar(&o.stormHot, "storm-hot-events", 300_000, "storm: repeat sightings of cached IPs, with and without the storm")
	flag.Float64Var(&o.stormRate, "storm-rate", 100, "storm: each per-IP provider's rate limit, requests/s")
	flag.BoolVar(&o.stormProviderLimit, "storm-provider-limit", true, "storm: the simulated providers answer 429 above -storm-rate (false: only the pipeline's own limit holds it, to see what 429s cost)")
	flag.IntVar(&o.stormClientBurst, "storm-client-burst", 0, "storm: the burst the pipeline is configured with (0: the provider's, 10)")
	flag.Float64Var(&o.stormOffered, "storm-offered", 200_000, "storm-paced: hot sightings offered a second, with and without the storm (whose new IPs come on top)")
	flag.Float64Var(&o.stormClientRate, "storm-client-rate", 0, "storm: the rate the pipeline is configured with (0: -storm-rate, the provider's own)")
	flag.IntVar(&o.economyIPs, "economy-ips", 30_000, "economy: unique attackers in the simulated day")
	flag.IntVar(&o.economySightings, "economy-sightings", 300_000, "economy: sightings in the day (heavy-tailed over the attackers)")
	flag.StringVar(&o.economyListed, "economy-listed", "0.1,0.3,0.5", "economy: shares of the attackers on the bulk lists, one day each")
	flag.IntVar(&o.memoryIPs, "memory-ips", 1_000_000, "memory: cached IPs")
	flag.IntVar(&o.scalingEvents, "scaling-events", 500_000, "scaling: events")
	flag.IntVar(&o.scalingIPs, "scaling-ips", 10_000, "scaling: unique attacker IPs")
	flag.DurationVar(&o.soakFor, "soak-for", 10*time.Minute, "soak: how long (the soak runs only when named in -scenarios)")
	flag.DurationVar(&o.soakEvery, "soak-every", 10*time.Second, "soak: sampling period")
	flag.IntVar(&o.soakRate, "soak-rate", 2000, "soak: events/s")
	flag.IntVar(&o.soakIPs, "soak-ips", 20_000, "soak: attacker IPs (heavy-tailed)")
	flag.StringVar(&o.plot, "plot", "docs/bench/throughput-vs-latency.png", "where to draw events/s against provider latency (empty: no plot)")
	flag.BoolVar(&o.keepLogs, "keep-logs", false, "keep every run's log (and ClickHouse's) even when all went well")
	flag.StringVar(&o.markdown, "markdown", "", "also write the results table, as Markdown, to this file")
	flag.Func("set", "a --set override passed to every pipeline run (repeatable; for experiments)", func(v string) error {
		o.sets = append(o.sets, v)
		return nil
	})
	flag.Func("env", "KEY=VALUE in every pipeline process's environment, not the benchmark's own (repeatable; e.g. GOMEMLIMIT)", func(v string) error {
		if !strings.Contains(v, "=") {
			return fmt.Errorf("-env %q: want KEY=VALUE", v)
		}
		o.env = append(o.env, v)
		return nil
	})
	flag.Parse()

	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	if err := run(ctx, o, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "decnet-bench: FAILED:", err)
		os.Exit(1)
	}
}

// bench runs the scenarios in one lab.
type bench struct {
	*lab.Lab
	profiles string // -stage-profiles: where CPU profiles of stage runs go
}

// result is one row of the table.
type result struct{ scenario, figure, value, aim, met string }

type report struct {
	w    io.Writer
	rows []result
}

func (r *report) add(scenario, figure, value, aim string, met *bool) {
	m := ""
	if met != nil {
		m = map[bool]string{true: "yes", false: "NO"}[*met]
	}
	row := result{scenario, figure, value, aim, m}
	r.rows = append(r.rows, row)
	fmt.Fprintf(r.w, "  %-12s %-58s %-26s %s %s\n", scenario, figure, value, aim, m)
}

func met(b bool) *bool { return &b }

func run(ctx context.Context, o options, w io.Writer) (err error) {
	root, err := chserver.RepoRoot()
	if err != nil {
		return err
	}
	if err := os.Chdir(root); err != nil {
		return err
	}
	binary, err := filepath.Abs(o.binary)
	if err != nil {
		return err
	}
	if _, err := os.Stat(binary); err != nil {
		return fmt.Errorf("%s: build it first (go tool task build): %w", o.binary, err)
	}
	tmp, err := os.MkdirTemp("", "decnet-bench-")
	if err != nil {
		return err
	}
	defer func() {
		if err == nil && !o.keepLogs {
			os.RemoveAll(tmp)
		} else {
			fmt.Fprintf(w, "logs kept in %s\n", tmp)
		}
	}()

	fmt.Fprintf(w, "decnet-bench %s: %d CPUs, %s, %s\n", time.Now().UTC().Format(time.RFC3339), runtime.NumCPU(), runtime.Version(), cpuModel())
	ch, err := chserver.New(filepath.Join(tmp, "clickhouse"))
	if err != nil {
		return err
	}
	if err := ch.Start(); err != nil {
		return err
	}
	defer ch.Stop()
	sim, err := providersim.Start(fixtures.FS(), providersim.Config{})
	if err != nil {
		return err
	}
	defer sim.Close()
	l := &bench{Lab: &lab.Lab{Binary: binary, Root: root, Tmp: tmp, CH: ch, Sim: sim, Sets: o.sets, Env: o.env}, profiles: o.stageProfiles}
	defer l.CloseBroker()

	rep := &report{w: w}
	want := map[string]bool{}
	for _, s := range strings.Split(o.scenarios, ",") {
		want[strings.TrimSpace(s)] = true
	}
	steps := []struct {
		name string
		fn   func(context.Context, options, *report) error
	}{
		{"pipeline", l.scenarioPipeline},
		{"stages", l.scenarioStages},
		{"stock", l.scenarioStock},
		{"storm", l.scenarioStorm},
		{"storm-paced", l.scenarioStormPaced},
		{"scaling", l.scenarioScaling},
		{"memory", l.scenarioMemory},
		{"economy", l.scenarioEconomy},
		{"soak", l.scenarioSoak},
	}
	for _, s := range steps {
		if !want[s.name] {
			continue
		}
		fmt.Fprintf(w, "\n== %s\n", s.name)
		start := time.Now()
		if err := s.fn(ctx, o, rep); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		fmt.Fprintf(w, "  (%s)\n", time.Since(start).Round(time.Second))
	}

	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SCENARIO\tFIGURE\tVALUE\tAIM\tMET")
	for _, r := range rep.rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.scenario, r.figure, r.value, r.aim, r.met)
	}
	tw.Flush()
	if o.markdown != "" {
		return writeMarkdown(o.markdown, rep.rows)
	}
	return nil
}

func writeMarkdown(path string, rows []result) error {
	var b strings.Builder
	b.WriteString("| scenario | figure | value | aim | met |\n|---|---|---|---|---|\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", r.scenario, r.figure, r.value, r.aim, r.met)
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "model name") {
			return strings.TrimSpace(line[strings.IndexByte(line, ':')+1:])
		}
	}
	return "unknown CPU"
}

func rate(v float64) string { return fmt.Sprintf("%s/s", thousands(int64(v))) }

func thousands(n int64) string {
	s := fmt.Sprint(n)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}
