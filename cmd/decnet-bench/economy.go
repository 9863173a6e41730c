package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/decnet/decnet-stream/internal/aggregate"
	"github.com/decnet/decnet-stream/internal/enrich"
	"github.com/decnet/decnet-stream/internal/lab"
	"github.com/decnet/decnet-stream/internal/providers"
	"github.com/decnet/decnet-stream/internal/providersim"
)

// The economy scenario: one simulated day of a sensor fleet against the
// providers' free tiers. The providers are the simulation over HTTP, with
// the free tiers' daily caps (GreyNoise 100, AbuseIPDB 1,000; ThreatFox has
// no number) answered with their documented 429; the bulk lists hold a share
// of the attackers. Time is simulated a minute at a time: each minute's
// sightings go through, then the clock moves on. Per-second rate limits are
// left out on both sides: over a day they delay, the daily caps deny, and
// this scenario counts answers, not latency (the storm scenario measures
// rates).

// economyDay is a simulated day's sightings: for each minute, the attackers
// seen in it (each once per minute).
type economyDay struct {
	pop     lab.Population
	minutes [][]int32
	listed  []bool
	lists   providersim.Lists
}

// newEconomyDay spreads sightings over a day: every attacker is seen at
// least once, the rest of the sightings go to a heavy-tailed few (Zipf),
// each at a uniformly random minute. A share of the attackers is on the
// bulk lists, the malicious and suspicious ones first (lists hold bad
// actors): two thirds of them on AbuseIPDB's blacklist, two thirds on
// ThreatFox's export (overlapping), one in ten in DROP.
func newEconomyDay(ips, sightings int, listedShare float64) *economyDay {
	r := rand.New(rand.NewSource(20261130))
	d := &economyDay{pop: lab.Population{Set: 60, Size: ips}, minutes: make([][]int32, 24*60), listed: make([]bool, ips)}
	seen := make([]int32, ips) // last minute+1 an attacker was added to
	add := func(i, m int) {
		if seen[i] != int32(m+1) {
			seen[i] = int32(m + 1)
			d.minutes[m] = append(d.minutes[m], int32(i))
		}
	}
	// Minutes are visited in order below, so "seen" only dedupes within
	// one: collect first, then add minute by minute.
	byMinute := make([][]int32, 24*60)
	for i := 0; i < ips; i++ {
		m := r.Intn(24 * 60)
		byMinute[m] = append(byMinute[m], int32(i))
	}
	if extra := sightings - ips; extra > 0 {
		z := rand.NewZipf(r, 1.2, 1, uint64(ips-1))
		for range extra {
			m := r.Intn(24 * 60)
			byMinute[m] = append(byMinute[m], int32(z.Uint64()))
		}
	}
	for m, is := range byMinute {
		for _, i := range is {
			add(int(i), m)
		}
	}
	want := int(listedShare * float64(ips))
	k := 0
	for _, bad := range []bool{true, false} {
		for i := 0; i < ips && k < want; i++ {
			st := providersim.StoryOf(d.pop.IP(i))
			if d.listed[i] || (st == providersim.StoryMalicious || st == providersim.StorySuspicious) != bad {
				continue
			}
			d.listed[i] = true
			ip := d.pop.IP(i)
			if k%3 != 2 {
				d.lists.Blacklist = append(d.lists.Blacklist, ip)
			}
			if k%3 != 0 {
				d.lists.Export = append(d.lists.Export, ip)
			}
			if k%10 == 0 {
				d.lists.DROP = append(d.lists.DROP, netip.PrefixFrom(netip.MustParseAddr(ip), 32))
			}
			k++
		}
	}
	return d
}

// economyResult is what one design made of the day.
type economyResult struct {
	verdict []string // per attacker: the aggregate verdict ("none": no opinion)
	// calls are the per-IP providers' requests (429s included); wasted429
	// were answered 429; wastedListed were spent on attackers a bulk list
	// has; wastedRepeat asked a provider again about an IP it had answered.
	calls, wasted429, wastedListed, wastedRepeat int
}

// simDay is the simulated clock.
type simDay struct {
	mu  sync.Mutex
	now time.Time
}

func (c *simDay) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *simDay) set(t time.Time) { c.mu.Lock(); c.now = t; c.mu.Unlock() }

var economyStart = time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)

// resetEconomySim forgets the last design's counts and sets the free tiers'
// daily caps and the day's lists.
func (l *bench) resetEconomySim(d *economyDay) {
	l.ResetSim(0)
	l.Sim.SetLatency(0)
	l.Sim.SetDailyQuota(providersim.GreyNoise, providers.DefaultGreyNoiseLimits.DailyBudget)
	l.Sim.SetDailyQuota(providersim.AbuseIPDB, providers.DefaultAbuseIPDBLimits.DailyBudget)
	l.Sim.SetLists(d.lists)
}

// collect reads the simulation's counts into r.
func (l *bench) collect(d *economyDay, r *economyResult) {
	for _, p := range providersim.PerIP {
		c := l.Sim.Counts(p)
		r.calls += c.Requests + c.Limited
		r.wasted429 += c.Limited
		for ip, n := range l.Sim.RequestsByIP(p) {
			r.wastedRepeat += n - 1
			if i, ok := d.index(ip); ok && d.listed[i] {
				r.wastedListed += n
			}
		}
	}
}

func (d *economyDay) index(ip string) (int, bool) {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return 0, false
	}
	b := a.As4()
	i := (int(b[1])<<16 | int(b[2])<<8 | int(b[3])) - 1
	return i, i >= 0 && i < len(d.listed) && d.pop.IP(i) == ip
}

// seedDesign is DECNET's intel worker as the seed had it: every attacker
// asked of every provider, 50 attackers a minute in the order they were
// first seen, no daily budget kept (past a cap, the provider answers 429),
// Feodo's list for free.
func (l *bench) seedDesign(ctx context.Context, d *economyDay) (economyResult, error) {
	l.resetEconomySim(d)
	res := economyResult{verdict: make([]string, d.pop.Size)}
	for i := range res.verdict {
		res.verdict[i] = aggregate.VerdictNone
	}
	guard, err := providers.NewGuard(nil)
	if err != nil {
		return res, err
	}
	feodo := providers.NewFeodo(providers.FeodoConfig{URL: l.Sim.URL + "/ipblocklist.json", Guard: guard})
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	seen := make([]bool, d.pop.Size)
	var queue []int32
	for _, minute := range d.minutes {
		for _, i := range minute {
			if !seen[i] {
				seen[i] = true
				queue = append(queue, i)
			}
		}
		n := min(50, len(queue))
		batch := queue[:n]
		queue = queue[n:]
		var wg sync.WaitGroup
		for _, i := range batch {
			wg.Add(1)
			go func(i int32) {
				defer wg.Done()
				ip := d.pop.IP(int(i))
				vs := seedAsk(ctx, client, l.Sim.URL, ip)
				vs = append(vs, feodo.Lookup(ctx, netip.MustParseAddr(ip)).Verdict)
				res.verdict[i] = aggregate.Strongest(vs...)
			}(i)
		}
		wg.Wait()
	}
	l.collect(d, &res)
	return res, ctx.Err()
}

// seedAsk asks the three per-IP providers about ip as the seed did and
// reads their answers with the providers' own decoders under DECNET's rules;
// a 429 or a failure is no opinion.
func seedAsk(ctx context.Context, c *http.Client, base, ip string) []providers.Verdict {
	get := func(method, url string, body []byte, header map[string]string) (int, []byte) {
		req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
		if err != nil {
			return 0, nil
		}
		for k, v := range header {
			req.Header.Set(k, v)
		}
		resp, err := c.Do(req)
		if err != nil {
			return 0, nil
		}
		defer resp.Body.Close()
		var b bytes.Buffer
		_, _ = b.ReadFrom(resp.Body)
		return resp.StatusCode, b.Bytes()
	}
	addr, policy := netip.MustParseAddr(ip), providers.DECNETPolicy()
	q, _ := json.Marshal(map[string]string{"query": "search_ioc", "search_term": ip})
	var out []providers.Verdict
	for _, a := range []struct {
		provider, method, url string
		body                  []byte
		header                map[string]string
	}{
		{providers.NameGreyNoise, http.MethodGet, base + "/v3/community/" + ip, nil, nil},
		{providers.NameAbuseIPDB, http.MethodGet, base + "/api/v2/check?ipAddress=" + ip, nil, map[string]string{"Key": "k", "Accept": "application/json"}},
		{providers.NameThreatFox, http.MethodPost, base + "/api/v1/", q, map[string]string{"Auth-Key": "k"}},
	} {
		if st, b := get(a.method, a.url, a.body, a.header); st != 0 {
			out = append(out, providers.Decode(a.provider, st, b, addr, policy, time.Now()).Verdict)
		}
	}
	return out
}

// stageDesign is this stage's engine (intel_enrich's) over the day, with
// the shipped free-tier budgets; withLists adds the bulk lists and
// config/pipeline.yaml's skip_when.
func (l *bench) stageDesign(ctx context.Context, d *economyDay, withLists bool) (economyResult, error) {
	l.resetEconomySim(d)
	res := economyResult{verdict: make([]string, d.pop.Size)}
	guard, err := providers.NewGuard(nil)
	if err != nil {
		return res, err
	}
	clock := &simDay{now: economyStart}
	limits := func(l providers.Limits) providers.Limits {
		l.RatePerSecond, l.Retries, l.MaxConcurrent = 0, 0, 64
		return l
	}
	common := func(lim providers.Limits) providers.Common {
		return providers.Common{BaseURL: l.Sim.URL, Guard: guard, Limits: limits(lim), Now: clock.Now}
	}
	provs := []providers.Provider{
		providers.NewGreyNoise(providers.GreyNoiseConfig{Common: common(providers.DefaultGreyNoiseLimits), APIKey: "k"}),
		providers.NewAbuseIPDB(providers.AbuseIPDBConfig{Common: common(providers.DefaultAbuseIPDBLimits), APIKey: "k"}),
		providers.NewFeodo(providers.FeodoConfig{URL: l.Sim.URL + "/ipblocklist.json", Guard: guard, Now: clock.Now}),
		providers.NewThreatFox(providers.ThreatFoxConfig{Common: common(providers.DefaultThreatFoxLimits), AuthKey: "k"}),
	}
	conf := enrich.Config{MaxEntries: d.pop.Size + 1, MaxWait: 30 * time.Second, Now: clock.Now}
	if withLists {
		list := providers.BulkListConfig{Guard: guard, Now: clock.Now}
		black, export, drop := list, list, list
		black.URLs, black.Key = []string{providers.AbuseIPDBBlacklistURL(l.Sim.URL, 100, 10000)}, "k"
		export.URLs, export.Key = []string{l.Sim.URL + "/export/json/ip-port/recent/"}, "k"
		drop.URLs = []string{l.Sim.URL + "/drop/drop_v4.json", l.Sim.URL + "/drop/drop_v6.json"}
		provs = append(provs, providers.NewAbuseIPDBBlacklist(black), providers.NewThreatFoxExport(export), providers.NewSpamhausDROP(drop))
		lists := []string{providers.NameAbuseIPDBBlacklist, providers.NameThreatFoxExport, providers.NameSpamhausDROP}
		conf.SkipWhen = map[string][]string{providers.NameGreyNoise: lists, providers.NameAbuseIPDB: lists, providers.NameThreatFox: lists}
	}
	conf.Providers = provs
	eng := enrich.New(conf)
	for m, minute := range d.minutes {
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
		clock.set(economyStart.Add(time.Duration(m) * time.Minute))
		reqs := make([]enrich.Request, len(minute))
		for k, i := range minute {
			reqs[k] = enrich.Request{IP: netip.MustParseAddr(d.pop.IP(int(i)))}
		}
		for k, a := range eng.Lookup(reqs, nil) {
			res.verdict[minute[k]] = string(a.Row().AggregateVerdict)
		}
	}
	for i, v := range res.verdict {
		if v == "" {
			res.verdict[i] = aggregate.VerdictNone
		}
	}
	l.collect(d, &res)
	return res, nil
}

// scenarioEconomy runs the three designs over the same day for each listed
// share and reports them side by side.
func (l *bench) scenarioEconomy(ctx context.Context, o options, rep *report) error {
	for _, s := range strings.Split(o.economyListed, ",") {
		share, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		if err != nil || share < 0 || share > 1 {
			return fmt.Errorf("-economy-listed: %q is not a share in [0, 1]", s)
		}
		d := newEconomyDay(o.economyIPs, o.economySightings, share)
		bad := 0
		for i := range d.listed {
			st := providersim.StoryOf(d.pop.IP(i))
			if d.listed[i] || st == providersim.StoryMalicious || st == providersim.StorySuspicious {
				bad++
			}
		}
		fmt.Fprintf(rep.w, "  a day: %d attackers, %d sightings, %.0f%% on bulk lists (blacklist %d, export %d, DROP %d); %d (%.0f%%) malicious or suspicious by the simulation's stories\n",
			o.economyIPs, o.economySightings, 100*share, len(d.lists.Blacklist), len(d.lists.Export), len(d.lists.DROP), bad, pct(bad, o.economyIPs))
		seed, err := l.seedDesign(ctx, d)
		if err != nil {
			return err
		}
		perIP, err := l.stageDesign(ctx, d, false)
		if err != nil {
			return err
		}
		bulk, err := l.stageDesign(ctx, d, true)
		if err != nil {
			return err
		}
		tag := fmt.Sprintf("economy %.0f%%", 100*share)
		for _, r := range []struct {
			name string
			res  economyResult
		}{{"seed (every provider per IP, 50 IPs/min)", seed}, {"this stage, per-IP providers only", perIP}, {"this stage with bulk lists + skip_when", bulk}} {
			withV, withBad := r.res.counts()
			rep.add(tag, r.name+": attackers with a verdict", fmt.Sprintf("%.1f%% (%d)", pct(withV, o.economyIPs), withV), "", nil)
			rep.add(tag, r.name+": malicious/suspicious found", fmt.Sprintf("%.1f%% (%d of %d)", pct(withBad, o.economyIPs), withBad, bad), "", nil)
			rep.add(tag, r.name+": per-IP calls spent", fmt.Sprint(r.res.calls), "", nil)
			rep.add(tag, r.name+": calls wasted (429 / listed / repeat)", fmt.Sprintf("%d / %d / %d", r.res.wasted429, r.res.wastedListed, r.res.wastedRepeat), "", nil)
		}
		wb, _ := bulk.counts()
		wp, _ := perIP.counts()
		ratio := float64(wb) / float64(max(wp, 1))
		wasted := bulk.wasted429 + bulk.wastedListed + bulk.wastedRepeat
		rep.add(tag, "bulk lists: calls wasted", fmt.Sprint(wasted), "0", met(wasted == 0))
		rep.add(tag, "bulk lists: attackers with a verdict, × per-IP only", fmt.Sprintf("%.1f×", ratio), "several (≥ 3×)", met(ratio >= 3))
	}
	return nil
}

// counts are the attackers with any verdict and with a malicious or
// suspicious one.
func (r economyResult) counts() (withVerdict, withBad int) {
	for _, v := range r.verdict {
		if v != aggregate.VerdictNone && v != "" {
			withVerdict++
		}
		if v == string(providers.VerdictMalicious) || v == string(providers.VerdictSuspicious) {
			withBad++
		}
	}
	return withVerdict, withBad
}

func pct(n, of int) float64 { return 100 * float64(n) / float64(max(of, 1)) }
