package main

import (
	"context"
	"fmt"
	"github.com/decnet/decnet-stream/internal/lab"
	"net/netip"
	"os"
	"runtime"
	"runtime/debug"
	"time"

	"github.com/decnet/decnet-stream/internal/enrich"
	"github.com/decnet/decnet-stream/internal/providers"
)

// memoryPerIP fills an intel_enrich engine with n cached attackers and
// reports resident memory per IP above the empty engine: real rows, from
// the real provider clients asking the simulated providers (every verdict
// the simulation gives), each cached under its own IP. keepRaw is
// `include_raw: true`, as config/pipeline.yaml ships (the ClickHouse row
// keeps the providers' raw answers).
func (l *bench) memoryPerIP(ctx context.Context, n int, keepRaw bool) (rssPerIP, heapPerIP float64, err error) {
	guard, err := providers.NewGuard(nil)
	if err != nil {
		return 0, 0, err
	}
	common := providers.Common{BaseURL: l.Sim.URL, Guard: guard, Limits: providers.Limits{Timeout: 10 * time.Second, MaxConcurrent: 16}}
	ps := []providers.Provider{
		providers.NewGreyNoise(providers.GreyNoiseConfig{Common: common, APIKey: "k"}),
		providers.NewAbuseIPDB(providers.AbuseIPDBConfig{Common: common, APIKey: "k"}),
		providers.NewFeodo(providers.FeodoConfig{URL: l.Sim.URL + "/ipblocklist.json", Guard: guard}),
		providers.NewThreatFox(providers.ThreatFoxConfig{Common: common, AuthKey: "k"}),
	}
	eng := enrich.New(enrich.Config{Providers: ps, MaxEntries: n + 1, KeepRaw: keepRaw, MaxWait: 10 * time.Second})

	// Templates: 60 attackers covering the simulation's verdict mix.
	pop := lab.Population{Set: 50, Size: n}
	var reqs []enrich.Request
	for i := range 60 {
		reqs = append(reqs, enrich.Request{IP: netip.MustParseAddr(pop.IP(i))})
	}
	answers := eng.Lookup(reqs, nil)
	templates := make([]enrich.Answer, 0, len(answers))
	for _, a := range answers {
		if !a.Row().Complete() {
			return 0, 0, fmt.Errorf("template row for %s is incomplete: %v", a.Row().AttackerIP, a.Row().Status)
		}
		templates = append(templates, a)
	}

	before := settledRSS()
	heapBefore := heapAlloc()
	for i := 60; i < n; i++ {
		ip := pop.IP(i)
		row := templates[i%len(templates)].Row().Clone()
		row.AttackerIP = ip
		row.ExpiresAt = time.Now().Add(24 * time.Hour)
		eng.Preload(netip.MustParseAddr(ip), row, enrich.Carrier{Topic: lab.InputTopics[i%2], Partition: int32(i % lab.Partitions), Offset: int64(i)})
	}
	if eng.Len() != n {
		return 0, 0, fmt.Errorf("the cache holds %d IPs, want %d", eng.Len(), n)
	}
	after := settledRSS()
	heapAfter := heapAlloc()
	runtime.KeepAlive(eng)
	return float64(after-before) / float64(n-60), float64(heapAfter-heapBefore) / float64(n-60), nil
}

// settledRSS is the process's resident set after a full collection has
// returned freed memory to the OS: what the cache itself holds, without the
// garbage its filling left behind.
func settledRSS() int64 {
	runtime.GC()
	debug.FreeOSMemory()
	return lab.ProcStatus(os.Getpid(), "VmRSS:")
}

func heapAlloc() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}
