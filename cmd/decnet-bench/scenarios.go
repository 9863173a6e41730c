package main

import (
	"context"
	"fmt"
	"github.com/decnet/decnet-stream/internal/lab"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/tidwall/gjson"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

const pipelineConfig = "config/pipeline.yaml"

// providerLimits overrides the shipped free-tier limits (one request a
// second, a hundred a day) with the benchmark's: without it the benchmark
// would measure GreyNoise's daily cap, not the pipeline. rate 0 is no limit.
func providerLimits(ratePerSecond float64, burst, concurrent int) []string {
	return lab.ProviderLimits(fmt.Sprintf("max_concurrent=%d", concurrent), "daily_budget=0",
		fmt.Sprintf("rate_per_second=%g", ratePerSecond), fmt.Sprintf("burst=%d", burst))
}

// throughput is one run's measured figures.
type throughput struct {
	events  int64
	elapsed time.Duration
	// first is the CPU used when the first event was seen: the processes'
	// start-up (config, connections, a warm start from ClickHouse), which
	// is not a cost per event.
	first cpuSnapshot
}

func (t throughput) rate() float64 { return float64(t.events) / t.elapsed.Seconds() }

// ceiling reads the workload with a bare franz-go consumer, straight from
// every partition's start: the most any stage that reads every event can do
// here. With copy, each fetch is also produced to another topic before the
// next poll (the ceiling of a stage that writes every event, as `emit: all`
// does). The clock starts before the client connects.
func (l *bench) ceiling(ctx context.Context, n int64, copy bool) (throughput, error) {
	start := time.Now()
	parts := map[string]map[int32]kgo.Offset{}
	for _, t := range lab.InputTopics {
		parts[t] = map[int32]kgo.Offset{}
		for p := range int32(lab.Partitions) {
			parts[t][p] = kgo.NewOffset().AtStart()
		}
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(l.Broker.Addr()), kgo.ConsumePartitions(parts), kgo.ProducerLinger(0))
	if err != nil {
		return throughput{}, err
	}
	defer cl.Close()
	var read int64
	for read < n {
		fs := cl.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			return throughput{}, err
		}
		var out []*kgo.Record
		fs.EachRecord(func(r *kgo.Record) {
			read++
			if copy {
				out = append(out, &kgo.Record{Topic: "bench.copy", Key: r.Key, Value: r.Value})
			}
		})
		if len(out) > 0 {
			if err := cl.ProduceSync(ctx, out...).FirstErr(); err != nil {
				return throughput{}, err
			}
		}
	}
	if read != n {
		return throughput{}, fmt.Errorf("ceiling read %d records, want %d", read, n)
	}
	return throughput{events: read, elapsed: time.Since(start)}, nil
}

// runPipeline starts replicas of the binary on o, with the lab's workload
// already on the broker, and measures them (see measure). The processes are
// left running for the caller to stop.
func (l *bench) runPipeline(ctx context.Context, o lab.RunOpts, group string, want int64, replicas int) (throughput, []*lab.Process, error) {
	var ps []*lab.Process
	for range replicas {
		p, err := l.Start(o)
		if err != nil {
			return throughput{}, ps, err
		}
		ps = append(ps, p)
	}
	t, err := l.measure(ctx, ps, group, want)
	return t, ps, err
}

// measure clocks replicas ps from the first event any of them received to
// every offset of group committed, and fails unless they received exactly
// want events between them: fewer were lost, more were replayed.
func (l *bench) measure(ctx context.Context, ps []*lab.Process, group string, want int64) (throughput, error) {
	deadline := time.Now().Add(3 * time.Minute)
	var t0 time.Time
	var t throughput
	for {
		if slices.ContainsFunc(ps, func(p *lab.Process) bool { return p.Sightings() > 0 }) {
			t0, t.first = time.Now(), l.cpu(ps...)
			break
		}
		if time.Now().After(deadline) {
			return throughput{}, fmt.Errorf("no replica received an event within 3m (see %s)", ps[0].Log.Name())
		}
		if err := lab.SleepCtx(ctx, lab.PollEvery); err != nil {
			return throughput{}, err
		}
	}
	t1, err := l.WaitCommitted(ctx, group, 20*time.Minute)
	if err != nil {
		return throughput{}, err
	}
	var got float64
	for _, p := range ps {
		got += p.Sightings()
	}
	if int64(got) != want {
		return throughput{}, fmt.Errorf("the pipeline received %.0f events, want %d: events were lost or replayed", got, want)
	}
	t.events, t.elapsed = want, t1.Sub(t0)
	return t, nil
}

// latencies produces events at a steady rate for d, one in every ten from
// an attacker never seen before, and measures from each new attacker's
// event produced to its enriched event consumable on topic.
func (l *bench) latencies(ctx context.Context, hot lab.Population, perSecond int, d time.Duration, topic string) (p50, p99 time.Duration, n int, err error) {
	ends, err := l.Admin.ListEndOffsets(ctx, topic)
	if err != nil {
		return 0, 0, 0, err
	}
	offsets := map[string]map[int32]kgo.Offset{topic: {}}
	ends.Each(func(o kadm.ListedOffset) { offsets[topic][o.Partition] = kgo.NewOffset().At(o.Offset) })
	rd, err := kgo.NewClient(kgo.SeedBrokers(l.Broker.Addr()), kgo.ConsumePartitions(offsets), kgo.FetchMaxWait(10*time.Millisecond))
	if err != nil {
		return 0, 0, 0, err
	}
	defer rd.Close()

	fresh := lab.Population{Set: 40, Size: 1 << 20}
	var mu sync.Mutex
	produced := map[string]time.Time{}
	got := map[string]time.Duration{}
	readCtx, stopReading := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for readCtx.Err() == nil {
			fs := rd.PollFetches(readCtx)
			now := time.Now()
			fs.EachRecord(func(r *kgo.Record) {
				ip := gjson.GetBytes(r.Value, "payload.attacker_ip").String()
				mu.Lock()
				if t, ok := produced[ip]; ok {
					if _, dup := got[ip]; !dup {
						got[ip] = now.Sub(t)
					}
				}
				mu.Unlock()
			})
		}
	}()

	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	perTick := max(perSecond/100, 1)
	seq, newIPs := 0, 0
	for end := time.Now().Add(d); time.Now().Before(end); <-tick.C {
		for range perTick {
			var ip string
			if seq%10 == 0 {
				ip = fresh.IP(newIPs)
				newIPs++
			} else {
				ip = hot.IP(seq % hot.Size)
			}
			topic := lab.InputTopics[seq%2]
			mu.Lock()
			if seq%10 == 0 {
				produced[ip] = time.Now()
			}
			mu.Unlock()
			l.Kafka.Produce(ctx, &kgo.Record{Topic: topic, Key: []byte(ip), Value: lab.Event(900_000_000+seq, topic, ip)}, nil)
			seq++
		}
	}
	if err := l.Kafka.Flush(ctx); err != nil {
		stopReading()
		return 0, 0, 0, err
	}
	// Every new attacker must come out: wait for the stragglers.
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		mu.Lock()
		all := len(got) == len(produced)
		mu.Unlock()
		if all {
			break
		}
		_ = lab.SleepCtx(ctx, 20*time.Millisecond)
	}
	stopReading()
	<-done
	if len(got) != len(produced) {
		return 0, 0, 0, fmt.Errorf("%d of %d new attackers never reached %s: lost", len(produced)-len(got), len(produced), topic)
	}
	lat := make([]time.Duration, 0, len(got))
	for _, v := range got {
		lat = append(lat, v)
	}
	slices.Sort(lat)
	return lat[len(lat)/2], lat[len(lat)*99/100], len(lat), nil
}

// shuffled interleaves two index lists of two populations, deterministically.
func shuffled(a, b []int, seed uint64) (pops []int, idx []int) {
	pops = make([]int, 0, len(a)+len(b))
	idx = make([]int, 0, len(a)+len(b))
	for _, i := range a {
		pops, idx = append(pops, 0), append(idx, i)
	}
	for _, i := range b {
		pops, idx = append(pops, 1), append(idx, i)
	}
	rng := rand.New(rand.NewPCG(seed, seed*3))
	rng.Shuffle(len(idx), func(i, j int) {
		idx[i], idx[j] = idx[j], idx[i]
		pops[i], pops[j] = pops[j], pops[i]
	})
	return pops, idx
}
