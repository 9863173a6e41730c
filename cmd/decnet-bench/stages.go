package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/decnet/decnet-stream/internal/lab"
)

// stage is one configuration of the stages scenario: each reads the same
// records in its own consumer group.
type stage struct {
	name, config, kafkaInput string
	env, sets                []string // beyond the run's own
}

// The stages, by index in stages.
const (
	stagePassthrough = iota
	stageNoop
	stageRouter
	stagePipeline
	stagePipelineDefaultGC
	stagePassthroughMinGoal
)

// The last two are the shipped runtime section's share: pipeline.yaml at
// Go's default collector, and the passthrough with pipeline.yaml's minimum
// heap goal: the same collector on both sides.
var stages = []stage{
	stagePassthrough:        {name: "kafka_franz → drop (Benthos passthrough)", config: "config/bench/stage-passthrough.yaml", kafkaInput: "input.kafka_franz"},
	stageNoop:               {name: "+ two noop processors (Benthos' own cost of two)", config: "config/bench/stage-noop.yaml", kafkaInput: "input.kafka_franz"},
	stageRouter:             {name: "+ topic_router", config: "config/bench/stage-router.yaml", kafkaInput: "input.kafka_franz"},
	stagePipeline:           {name: "pipeline.yaml (router + intel_enrich, all hits)", config: pipelineConfig},
	stagePipelineDefaultGC:  {name: "pipeline.yaml, gc_min_heap_goal off (Go's default collector)", config: pipelineConfig, env: []string{"DECNET_GC_MIN_HEAP_GOAL=off"}},
	stagePassthroughMinGoal: {name: "kafka_franz → drop, with pipeline.yaml's gc_min_heap_goal", config: "config/bench/stage-passthrough.yaml", kafkaInput: "input.kafka_franz"},
}

// shippedMinHeapGoal is pipeline.yaml's gc_min_heap_goal as shipped: the
// default of its ${VAR:default}.
func shippedMinHeapGoal(root string) (string, error) {
	raw, err := os.ReadFile(filepath.Join(root, pipelineConfig))
	if err != nil {
		return "", err
	}
	var conf struct {
		Runtime struct {
			MinHeapGoal string `yaml:"gc_min_heap_goal"`
		} `yaml:"runtime"`
	}
	if err := yaml.Unmarshal(raw, &conf); err != nil {
		return "", err
	}
	v := conf.Runtime.MinHeapGoal
	if i := strings.LastIndex(v, ":"); strings.HasPrefix(v, "${") && i > 0 {
		v = strings.TrimSuffix(v[i+1:], "}")
	}
	if v == "" {
		return "", fmt.Errorf("%s has no runtime.gc_min_heap_goal", pipelineConfig)
	}
	return v, nil
}

// stageRun is one run of one stage.
type stageRun struct {
	// events/s; CPU-seconds per million events, from the first event on
	// (start-up is not per event: the pipeline's, a warm start of every
	// cached row from ClickHouse, would have counted 0.1-0.2 CPU-s per
	// million events against it); CPU-seconds before the first event.
	rate, cpuPerM, startCPU float64
	peakRSS                 int64 // bytes
}

// scenarioStages: what each stage of the hot path costs when every event
// is a repeat sighting. The workload's attackers are enriched and stored
// first; every stage then reads the same records in a consumer group of its
// own, three runs each, beside a bare franz-go consumer.
func (l *bench) scenarioStages(ctx context.Context, o options, rep *report) error {
	if err := l.FreshBroker(); err != nil {
		return err
	}
	l.ResetSim(0)
	hot := lab.Population{Set: 30, Size: o.stageIPs}
	table := l.Table()

	// Warm-up: every attacker enriched and its row complete in ClickHouse,
	// with lookups on a topic of their own so no later run reads them.
	warm := make([]int, hot.Size)
	for i := range warm {
		warm[i] = i
	}
	if err := l.Produce(ctx, hot, warm, 0); err != nil {
		return err
	}
	_, ps, err := l.runPipeline(ctx, lab.RunOpts{Config: pipelineConfig, Sets: benchLimits, Env: []string{
		"CLICKHOUSE_TABLE=" + table, "KAFKA_CONSUMER_GROUP=bench-stage-warm", "INTEL_MAX_WAIT=60s",
		"INTEL_LOOKUP_TOPIC=" + lab.WarmLookupTopic,
	}}, "bench-stage-warm", int64(hot.Size), 1)
	if err2 := lab.StopAll(ps); err == nil {
		err = err2
	}
	if err == nil {
		_, err = l.VerifyOutputs(ctx, table, lab.EnrichedTopic, hot.Size)
	}
	if err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	if err := l.Produce(ctx, hot, lab.HeavyTailed(hot, o.stageEvents, 4), hot.Size); err != nil {
		return err
	}
	n := int64(hot.Size + o.stageEvents)
	enriched, err := l.Total(ctx, lab.EnrichedTopic)
	if err != nil {
		return err
	}

	goal, err := shippedMinHeapGoal(l.Root)
	if err != nil {
		return err
	}

	var bare []float64
	runs := make([][]stageRun, len(stages))
	for round := range o.stageRuns {
		t, err := l.ceiling(ctx, n, false)
		if err != nil {
			return err
		}
		bare = append(bare, t.rate())
		for i, s := range stages {
			group := fmt.Sprintf("bench-stage-%d-%d", i, round)
			if i == stagePassthroughMinGoal {
				s.sets = []string{"runtime.gc_min_heap_goal=" + goal}
			}
			l.ResetSim(0)
			r, err := l.runStage(ctx, s, group, table, n)
			if err != nil {
				return fmt.Errorf("%s: %w", s.name, err)
			}
			if req, _ := l.Sim.PerIPCalls(); req > 0 {
				return fmt.Errorf("%s: %d provider calls in a hit-only run", s.name, req)
			}
			runs[i] = append(runs[i], r)
		}
	}
	if after, err := l.Total(ctx, lab.EnrichedTopic); err != nil || after != enriched {
		return fmt.Errorf("hit-only runs published %d enriched events (%v): they were not all hits", after-enriched, err)
	}

	rep.add("stages", fmt.Sprintf("bare franz-go consumer, %s records, median of %d", thousands(n), len(bare)), rate(median(bare)), "", nil)
	for i, s := range stages {
		m := medianRun(runs[i])
		lo, hi := rssRange(runs[i])
		rep.add("stages", s.name, fmt.Sprintf("%s, %.2f CPU-s/1M, %d–%d MiB (start-up %.2f CPU-s)", rate(m.rate), m.cpuPerM, lo>>20, hi>>20, m.startCPU), "", nil)
	}
	pass, pipe := medianRun(runs[stagePassthrough]), medianRun(runs[stagePipeline])
	ratio := pipe.rate / pass.rate
	rep.add("stages", "pipeline.yaml ÷ passthrough, events/s", fmt.Sprintf("%.2f", ratio), "≥ 0.60", met(ratio >= 0.6))
	extra := pipe.cpuPerM - pass.cpuPerM
	rep.add("stages", "CPU of router + enrich hits ÷ passthrough's", fmt.Sprintf("%.2f", extra/pass.cpuPerM), "≤ 1.00", met(extra <= pass.cpuPerM))
	// Beyond Benthos' cost of running two processors at all (the
	// pipeline's sort group, its threads). Its noop is an internal,
	// unwrapped processor: what every plugin processor also pays, the
	// public API's wrapping (a tracing span, a context, a part and a
	// service.Message per event and processor), is on the plugins' side.
	noop := medianRun(runs[stageNoop])
	own := pipe.cpuPerM - noop.cpuPerM
	rep.add("stages", "of which beyond two noop processors (the plugins' own work and their public-API wrapping) ÷ passthrough's", fmt.Sprintf("%.2f (%.2f of %.2f CPU-s/1M)", own/pass.cpuPerM, own, extra), "", nil)
	// The same two figures with the same collector on both sides: what
	// the plugins cost apart from the runtime section's trade.
	for _, c := range []struct {
		how        string
		pass, pipe stageRun
	}{
		{"both at Go's default collector", pass, medianRun(runs[stagePipelineDefaultGC])},
		{"both with gc_min_heap_goal " + goal, medianRun(runs[stagePassthroughMinGoal]), pipe},
	} {
		rep.add("stages", "pipeline.yaml ÷ passthrough, "+c.how, fmt.Sprintf("%.2f events/s, CPU %.2f", c.pipe.rate/c.pass.rate, (c.pipe.cpuPerM-c.pass.cpuPerM)/c.pass.cpuPerM), "", nil)
	}
	_, hi := rssRange(runs[stagePipeline])
	rep.add("stages", "peak RSS of pipeline.yaml, hit-only", fmt.Sprintf("%d MiB", hi>>20), "≤ 300 MiB", met(hi <= 300<<20))
	return nil
}

// runStage runs one stage over the workload and measures it, from its
// first event to every offset committed.
func (l *bench) runStage(ctx context.Context, s stage, group, table string, n int64) (stageRun, error) {
	o := lab.RunOpts{Config: s.config, KafkaInput: s.kafkaInput, Sets: s.sets,
		Env: append([]string{"CLICKHOUSE_TABLE=" + table, "KAFKA_CONSUMER_GROUP=" + group}, s.env...)}
	if s.config == pipelineConfig {
		o.Sets = slices.Concat(o.Sets, benchLimits)
	}
	if l.profiles != "" {
		o.Debug = true
	}
	p, err := l.Start(o)
	if err != nil {
		return stageRun{}, err
	}
	if l.profiles != "" {
		// Two seconds of the run, from its start: the processes begin
		// reading at once, and a million hits take a few seconds.
		path := filepath.Join(l.profiles, group+".pprof")
		go func() {
			for p.Sightings() < 0 { // until its HTTP server answers
				if lab.SleepCtx(ctx, lab.PollEvery) != nil {
					return
				}
			}
			if err := p.CPUProfile(2*time.Second, path); err != nil {
				fmt.Fprintf(os.Stderr, "profile %s: %v\n", path, err)
			}
			// What the heap holds mid-run, at full flow.
			heap := strings.TrimSuffix(path, ".pprof") + "-heap.pprof"
			if err := p.HeapProfile(heap); err != nil {
				fmt.Fprintf(os.Stderr, "profile %s: %v\n", heap, err)
			}
		}()
	}
	t, err := l.measure(ctx, []*lab.Process{p}, group, n)
	var r stageRun
	if err == nil {
		r = stageRun{rate: t.rate(), cpuPerM: (p.CPUSeconds() - t.first.pipeline) / float64(n) * 1e6, startCPU: t.first.pipeline, peakRSS: p.PeakRSS()}
	}
	if err2 := p.Stop(); err == nil {
		err = err2
	}
	return r, err
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

// medianRun is the run of median rate, and the median CPU per event.
func medianRun(rs []stageRun) stageRun {
	rates, cpu, start := make([]float64, len(rs)), make([]float64, len(rs)), make([]float64, len(rs))
	for i, r := range rs {
		rates[i], cpu[i], start[i] = r.rate, r.cpuPerM, r.startCPU
	}
	return stageRun{rate: median(rates), cpuPerM: median(cpu), startCPU: median(start)}
}

func rssRange(rs []stageRun) (lo, hi int64) {
	lo = rs[0].peakRSS
	for _, r := range rs {
		lo, hi = min(lo, r.peakRSS), max(hi, r.peakRSS)
	}
	return lo, hi
}
