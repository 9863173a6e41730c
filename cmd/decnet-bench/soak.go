package main

import (
	"context"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/decnet/decnet-stream/internal/lab"
)

// sample is one reading of the soaked process.
type sample struct {
	at         time.Duration
	rss        int64
	goroutines int
}

// scenarioSoak runs config/pipeline.yaml for o.soakFor at a steady rate over
// a fixed, heavy-tailed population, sampling memory and goroutines: after
// warm-up (the first quarter, when the cache fills) neither may grow.
func (l *bench) scenarioSoak(ctx context.Context, o options, rep *report) error {
	if err := l.FreshBroker(); err != nil {
		return err
	}
	l.ResetSim(o.latency)
	table := l.Table()
	p, err := l.Start(lab.RunOpts{Config: pipelineConfig, Debug: true, Sets: benchLimits, Env: []string{"CLICKHOUSE_TABLE=" + table}})
	if err != nil {
		return err
	}
	defer p.Stop()
	if _, err := p.WaitMetric(ctx, "input_connection_up", 1, time.Minute); err != nil {
		return err
	}

	pop := lab.Population{Set: 45, Size: o.soakIPs}
	idx := lab.HeavyTailed(pop, o.soakRate*60, 9) // one minute of traffic, replayed
	start := time.Now()
	var samples []sample
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	perTick, seq := max(o.soakRate/100, 1), 0
	nextSample := start
	for time.Since(start) < o.soakFor {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
		for range perTick {
			ip := pop.IP(idx[seq%len(idx)])
			topic := lab.InputTopics[seq%2]
			l.Kafka.Produce(ctx, &kgo.Record{Topic: topic, Key: []byte(ip), Value: lab.Event(seq, topic, ip)}, nil)
			seq++
		}
		if now := time.Now(); !now.Before(nextSample) {
			s := sample{at: now.Sub(start), rss: p.RSS(), goroutines: p.Goroutines()}
			samples = append(samples, s)
			fmt.Fprintf(rep.w, "  soak %6s  RSS %4d MiB  goroutines %d\n", s.at.Round(time.Second), s.rss>>20, s.goroutines)
			nextSample = now.Add(o.soakEvery)
		}
	}
	if err := l.Kafka.Flush(ctx); err != nil {
		return err
	}
	if _, err := l.WaitCommitted(ctx, "decnet-intel", 5*time.Minute); err != nil {
		return err
	}
	if got := p.Sightings(); int(got) != seq {
		return fmt.Errorf("the pipeline received %.0f of %d events: lost or replayed", got, seq)
	}
	if len(samples) < 8 {
		return fmt.Errorf("%d samples: soak longer (-soak-for) or sample more often (-soak-every)", len(samples))
	}

	// Warm-up is the first quarter; compare the second quarter with the last.
	q := len(samples) / 4
	mid, last := samples[q:2*q], samples[len(samples)-q:]
	peak := func(ss []sample, f func(sample) float64) float64 {
		m := 0.0
		for _, s := range ss {
			m = max(m, f(s))
		}
		return m
	}
	rss := func(s sample) float64 { return float64(s.rss) }
	gor := func(s sample) float64 { return float64(s.goroutines) }
	rssGrowth := peak(last, rss)/peak(mid, rss) - 1
	gorGrowth := peak(last, gor)/peak(mid, gor) - 1
	where := fmt.Sprintf("%s at %d ev/s over %s IPs (%s events)", o.soakFor, o.soakRate, thousands(int64(o.soakIPs)), thousands(int64(seq)))
	rep.add("soak", where+": peak RSS, after warm-up → last quarter",
		fmt.Sprintf("%d → %d MiB (%+.0f%%)", int64(peak(mid, rss))>>20, int64(peak(last, rss))>>20, rssGrowth*100), "no growth (≤ +10%)", met(rssGrowth <= 0.10))
	rep.add("soak", "peak goroutines, after warm-up → last quarter",
		fmt.Sprintf("%.0f → %.0f (%+.0f%%)", peak(mid, gor), peak(last, gor), gorGrowth*100), "no growth (≤ +10%)", met(gorGrowth <= 0.10))
	if rssGrowth > 0.10 || gorGrowth > 0.10 {
		return fmt.Errorf("memory or goroutines grew after warm-up: RSS %+.0f%%, goroutines %+.0f%%", rssGrowth*100, gorGrowth*100)
	}
	return nil
}
