package intel_processor

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redpanda-data/benthos/v4/public/service"
)

var benchCachedIPs = flag.Int("bench.cached_ips", 200_000, "IPs cached in the memory benchmark")

// feedServer serves a tiny Feodo feed: lookups then cost no network, so the
// benchmarks measure the processor itself.
func feedOnlyYAML(b testing.TB, extra string) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `[{"ip_address":"45.0.0.1","port":443,"status":"online","hostname":null,"as_number":64496,"as_name":"EX","country":"FR","first_seen":"2025-06-01 00:00:00","last_online":"2025-06-15","malware":"QakBot"}]`)
	}))
	b.Cleanup(srv.Close)
	return fmt.Sprintf("providers: [ { name: feodo, url: %q } ]\ncache: { max_entries: 2000000 }\n%s", srv.URL+"/ipblocklist.json", extra)
}

func ipOf(i int) string { return fmt.Sprintf(`"45.%d.%d.%d"`, (i>>16)&255, (i>>8)&255, i&255) }

// batches of 500 events at a 99% hit rate: 495 repeat sightings of warm IPs
// and 5 never seen before.
func hitBatches(n, warm int, offset *int) []service.MessageBatch {
	out := make([]service.MessageBatch, n)
	fresh := warm
	for b := range out {
		batch := make(service.MessageBatch, 500)
		for i := range batch {
			ip := ipOf((b*500 + i*7919) % warm)
			if i%100 == 0 {
				ip = ipOf(1_000_000 + fresh)
				fresh++
			}
			*offset++
			batch[i] = msgAt(event(ip), *offset)
		}
		out[b] = batch
	}
	return out
}

func benchHitPath(b *testing.B, extra string) {
	p := newTestProcessor(b, feedOnlyYAML(b, extra))
	const warm = 10_000
	offset := 0
	for _, batch := range hitBatches(warm/500, warm, &offset) { // warm the cache
		for i := range batch {
			batch[i] = msgAt(event(ipOf(offset%warm)), offset)
			offset++
		}
		run(b, p, batch)
	}
	batches := hitBatches(64, warm, &offset)
	// Each run gets fresh message copies: processors rewrite messages.
	b.ReportAllocs()
	b.ResetTimer()
	msgs := 0
	for i := 0; i < b.N; i++ {
		src := batches[i%len(batches)]
		batch := make(service.MessageBatch, len(src))
		for j, m := range src {
			batch[j] = m.Copy()
		}
		run(b, p, batch)
		msgs += len(batch)
	}
	b.ReportMetric(float64(msgs)/b.Elapsed().Seconds(), "msgs/s")
	b.ReportMetric(0, "ns/op")
}

// go test ./plugins/intel_processor -run '^$' -bench HitPath -cpu 1
func BenchmarkHitPathEmitChanges(b *testing.B) { benchHitPath(b, "") }
func BenchmarkHitPathEmitAll(b *testing.B)     { benchHitPath(b, "emit: all") }

// BenchmarkMemoryPerCachedIP fills the cache and reports heap bytes per IP
// above the empty processor.
//
//	go test ./plugins/intel_processor -run '^$' -bench MemoryPerCachedIP -benchtime 1x -bench.cached_ips 1000000
func BenchmarkMemoryPerCachedIP(b *testing.B) {
	for i := 0; i < b.N; i++ {
		p := newTestProcessor(b, feedOnlyYAML(b, ""))
		n := *benchCachedIPs
		heap := func() uint64 {
			runtime.GC()
			runtime.GC()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			return ms.HeapAlloc
		}
		before := heap()
		offset := 0
		for start := 0; start < n; start += 500 {
			batch := make(service.MessageBatch, 0, 500)
			for j := start; j < start+500 && j < n; j++ {
				offset++
				batch = append(batch, msgAt(event(ipOf(j)), offset))
			}
			run(b, p, batch)
		}
		if p.engine.Len() != n {
			b.Fatalf("cache holds %d, want %d", p.engine.Len(), n)
		}
		after := heap()
		b.ReportMetric(float64(after-before)/float64(n), "bytes/IP")
		runtime.KeepAlive(p)
	}
}

// BenchmarkCallsPerUniqueIP: 64 concurrent batches over the same IPs, real
// providers against local servers; provider calls per unique IP.
func BenchmarkCallsPerUniqueIP(b *testing.B) {
	for it := 0; it < b.N; it++ {
		fp := newFixtureProviders(b)
		unlimited := "\n    limits: { max_concurrent: 64, rate_per_second: 0, daily_budget: 0 }"
		yaml := strings.NewReplacer("base_url: "+fp.URL, "base_url: "+fp.URL+unlimited).Replace(processorYAML(fp.URL, ""))
		p := newTestProcessor(b, yaml)
		const unique = 500
		var wg sync.WaitGroup
		for g := 0; g < 64; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				batch := make(service.MessageBatch, unique)
				for i := range batch {
					batch[i] = msgAt(event(ipOf(i)), g*unique+i)
				}
				if _, err := p.ProcessBatch(context.Background(), batch); err != nil {
					b.Error(err)
				}
			}()
		}
		wg.Wait()
		perIP := float64(fp.count("greynoise")+fp.count("abuseipdb")+fp.count("threatfox")) / 3 / unique
		b.ReportMetric(perIP, "calls/unique_IP")
		if perIP != 1 {
			b.Fatalf("%.2f calls per unique IP per provider", perIP)
		}
	}
}

// BenchmarkHitPathWhileMissesTakeOneSecond: pure-hit batches keep their
// pace while other batches wait on a provider that takes 1s for every miss.
func BenchmarkHitPathWhileMissesTakeOneSecond(b *testing.B) {
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(time.Second):
		case <-r.Context().Done():
		}
		fmt.Fprint(w, `{"ip":"45.0.0.1","noise":true,"riot":false,"classification":"malicious","name":"unknown","last_seen":"2025-06-15","message":"Success"}`)
	}))
	defer slow.Close()
	p := newTestProcessor(b, fmt.Sprintf("providers: [ { name: greynoise, base_url: %q, limits: { max_concurrent: 256, rate_per_second: 100000, burst: 100000, daily_budget: 0 } } ]\nmax_wait: 2s\ncache: { max_entries: 100000 }", slow.URL))
	const warm = 2000
	offset := 0
	warmBatch := make(service.MessageBatch, warm)
	for i := range warmBatch {
		warmBatch[i] = msgAt(event(ipOf(i)), i)
	}
	run(b, p, warmBatch)
	hitBatch := func() service.MessageBatch {
		batch := make(service.MessageBatch, 500)
		for i := range batch {
			offset++
			batch[i] = msgAt(event(ipOf(i*3%warm)), offset)
		}
		return batch
	}
	measure := func(d time.Duration) float64 {
		n := 0
		start := time.Now()
		for time.Since(start) < d {
			run(b, p, hitBatch())
			n += 500
		}
		return float64(n) / time.Since(start).Seconds()
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		base := measure(2 * time.Second)
		stop := make(chan struct{})
		var misses atomic.Int64
		var wg sync.WaitGroup
		for g := 0; g < 4; g++ { // four other pipeline threads, each stuck on misses
			wg.Add(1)
			go func() {
				defer wg.Done()
				for k := 0; ; k++ {
					select {
					case <-stop:
						return
					default:
					}
					batch := service.MessageBatch{msgAt(event(ipOf(100_000+int(misses.Add(1)))), 0)}
					_, _ = p.ProcessBatch(context.Background(), batch)
				}
			}()
		}
		during := measure(2 * time.Second)
		close(stop)
		wg.Wait()
		b.ReportMetric(base, "hit_msgs/s_alone")
		b.ReportMetric(during, "hit_msgs/s_with_slow_misses")
		b.ReportMetric(during/base, "ratio")
		b.ReportMetric(float64(misses.Load()), "slow_misses")
	}
}

// pipelineMessage is a sighting as config/pipeline.yaml hands it to
// intel_enrich: the seven kafka_* keys of a real record and the router's
// decnet_key, the IP it validated.
func pipelineMessage(topic, ip string, offset int) *service.Message {
	m := service.NewMessage([]byte(event(`"` + ip + `"`)))
	m.MetaSetMut("kafka_key", ip)
	m.MetaSetMut("kafka_topic", topic)
	m.MetaSetMut("kafka_partition", 0)
	m.MetaSetMut("kafka_offset", offset)
	m.MetaSetMut("kafka_timestamp_ms", int64(1750000000000))
	m.MetaSetMut("kafka_tombstone_message", false)
	m.MetaSetMut("kafka_lag", int64(0))
	m.MetaSetMut("decnet_key", ip)
	return m
}

// BenchmarkHitPathAsPipelineRoutes: repeat sightings of 10,000 cached IPs
// through intel_enrich configured as config/pipeline.yaml (IP from
// decnet_key, misses to the lookup topic), messages made afresh per batch
// as the input makes them: the hit path's cost per event, allocations
// included.
//
//	go test ./plugins/intel_processor -run '^$' -bench AsPipelineRoutes -benchmem -cpu 1
func BenchmarkHitPathAsPipelineRoutes(b *testing.B) {
	p := newTestProcessor(b, feedOnlyYAML(b, "ip_metadata: decnet_key\nlookup_topic: attacker.intel.lookup"))
	const warm = 10_000
	ips := make([]string, warm)
	for i := range ips {
		ips[i] = strings.Trim(ipOf(i), `"`)
	}
	for start := 0; start < warm; start += 500 { // looked up: now cached
		batch := make(service.MessageBatch, 0, 500)
		for i := start; i < start+500; i++ {
			batch = append(batch, pipelineMessage("attacker.intel.lookup", ips[i], i))
		}
		run(b, p, batch)
	}
	b.ReportAllocs()
	b.ResetTimer()
	offset := 0
	for n := 0; n < b.N; n++ {
		batch := make(service.MessageBatch, 500)
		for i := range batch {
			offset++
			batch[i] = pipelineMessage("attacker.observed", ips[(offset*7919)%warm], offset)
		}
		if out := run(b, p, batch); len(out) != 0 {
			b.Fatalf("%d of 500 repeat sightings left the processor: not all hits", len(out))
		}
	}
	b.ReportMetric(float64(b.N*500)/b.Elapsed().Seconds(), "msgs/s")
}
