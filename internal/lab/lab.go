// Package lab runs decnet-stream for real, as operators do: the built binary
// on a shipped config, against an embedded broker (a fresh one on demand), a
// local ClickHouse and simulated providers that count every request. The
// benchmark command and the reliability tests both measure through it.
package lab

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tidwall/gjson"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/decnet/decnet-stream/internal/broker"
	"github.com/decnet/decnet-stream/internal/chserver"
	"github.com/decnet/decnet-stream/internal/providersim"
)

// InputTopics are the subjects config/pipeline.yaml reads.
var InputTopics = []string{"attacker.observed", "attacker.scored"}

// Topics the pipeline writes, and the partitions of every topic.
const (
	EnrichedTopic = "attacker.intel.enriched"
	DLQTopic      = "decnet.dlq"
	LookupTopic   = "attacker.intel.lookup"
	// WarmLookupTopic is the lookup topic of warm-up runs, so a later run
	// on LookupTopic reads no lookup requests but its own.
	WarmLookupTopic = "bench.warm.lookup"
	Partitions      = 6
)

// Lab is what every run goes against: the binary under test, a ClickHouse
// server, the simulated providers, and an embedded broker, fresh for each
// scenario so none reads another's records.
type Lab struct {
	Binary string // the decnet-stream binary
	Root   string // the repository, configs are relative to it
	Tmp    string // logs and state files
	CH     *chserver.Server
	Sim    *providersim.Server
	Broker *broker.Broker
	Kafka  *kgo.Client // produces to and administers Broker
	Admin  *kadm.Client
	// BrokerDataDir, when set, persists the broker's log there, so
	// StopBroker and StartBroker keep every record.
	BrokerDataDir string
	// Sets are --set overrides added to every run (the benchmark's -set
	// flag, for experiments).
	Sets []string
	// Env is added to every pipeline process's environment (before a run's
	// own), not the benchmark's: a GOMEMLIMIT for the pipeline alone, say,
	// not for the broker running in this process.
	Env    []string
	tables int
}

// FreshBroker replaces the broker with an empty one, on a new port.
func (l *Lab) FreshBroker() error {
	l.CloseBroker()
	if err := l.startBroker("127.0.0.1:0"); err != nil {
		return err
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(l.Broker.Addr()), kgo.MaxBufferedRecords(200_000), kgo.ProducerLinger(5*time.Millisecond),
		kgo.ProducerBatchMaxBytes(1<<20))
	if err != nil {
		l.CloseBroker()
		return err
	}
	l.Kafka, l.Admin = cl, kadm.NewClient(cl)
	return nil
}

func (l *Lab) startBroker(addr string) error {
	b, err := broker.Start(broker.Config{Addr: addr, Partitions: Partitions, DataDir: l.BrokerDataDir,
		Topics: append([]string{EnrichedTopic, DLQTopic, LookupTopic, WarmLookupTopic, "bench.copy"}, InputTopics...)})
	if err != nil {
		return err
	}
	l.Broker = b
	return nil
}

// StopBroker stops the broker as a crash would; its address is kept, and
// its log too when BrokerDataDir is set. Clients see connections refused.
func (l *Lab) StopBroker() { l.Broker.Close() }

// StartBroker starts the stopped broker again on the same address.
func (l *Lab) StartBroker() error { return l.startBroker(l.Broker.Addr()) }

// CloseBroker stops the broker and the lab's clients for good.
func (l *Lab) CloseBroker() {
	if l.Kafka != nil {
		l.Kafka.Close()
	}
	if l.Broker != nil {
		l.Broker.Close()
	}
	l.Broker, l.Kafka, l.Admin = nil, nil, nil
}

// Table names a new attacker_intel table, so a run starts with nothing
// stored (no warm start, no shared lookups) unless it asks for an old one.
func (l *Lab) Table() string {
	l.tables++
	return fmt.Sprintf("lab_intel_%d_%d", time.Now().Unix(), l.tables)
}

// Population is a set of distinct, globally routable attacker IPs: set k
// uses first octet 11+k, so populations never overlap.
type Population struct{ Set, Size int }

// IP is the population's i-th address (i below 2^24 - 1).
func (p Population) IP(i int) string {
	a := uint32(11+p.Set)<<24 | uint32(i+1)&0xffffff
	return fmt.Sprintf("%d.%d.%d.%d", a>>24, (a>>16)&255, (a>>8)&255, a&255)
}

// Event is a DECNET v1 envelope for ip on topic.
func Event(seq int, topic, ip string) []byte {
	return fmt.Appendf(nil, `{"v":1,"id":"b%08d","topic":%q,"type":%q,"ts":1763900000.5,"payload":{"attacker_ip":%q,`+
		`"attacker_uuid":"5f0c%08x","decky":"decky-%02d","service":"ssh","event_type":"login_attempt","event_count":%d,"score":%d}}`,
		seq, topic, topic, ip, seq, seq%16, seq%7+1, seq%100)
}

// HeavyTailed picks n IP indexes from p: Zipf-distributed (s=1.1), so a few
// attackers are most of the traffic, and every IP appears at least once.
func HeavyTailed(p Population, n int, seed uint64) []int {
	rng := rand.New(rand.NewPCG(seed, seed+1))
	z := rand.NewZipf(rng, 1.1, 1, uint64(p.Size-1))
	idx := make([]int, n)
	for i := range idx {
		if i < p.Size {
			idx[i] = i
		} else {
			idx[i] = int(z.Uint64())
		}
	}
	rng.Shuffle(len(idx), func(i, j int) { idx[i], idx[j] = idx[j], idx[i] })
	return idx
}

// Produce writes one event per index, keyed by IP, alternating between the
// input subjects; it returns when the broker has every record.
func (l *Lab) Produce(ctx context.Context, p Population, idx []int, seq0 int) error {
	return l.ProduceMixed(ctx, []Population{p}, make([]int, len(idx)), idx, seq0)
}

// ProduceMixed writes one event per (pops[i], idx[i]): Population pops[i]'s
// IP idx[i].
func (l *Lab) ProduceMixed(ctx context.Context, ps []Population, pops, idx []int, seq0 int) error {
	return l.ProduceMixedAt(ctx, ps, pops, idx, seq0, 0)
}

// ProduceMixedAt is ProduceMixed offering perSecond events a second (0: as
// fast as the broker takes them), as sensors send them: in chunks of 20ms
// worth, each written when the schedule reaches it.
func (l *Lab) ProduceMixedAt(ctx context.Context, ps []Population, pops, idx []int, seq0 int, perSecond float64) error {
	chunk := 50_000
	if perSecond > 0 {
		chunk = max(int(perSecond/50), 1)
	}
	began := time.Now()
	for start := 0; start < len(idx); start += chunk {
		if perSecond > 0 {
			due := began.Add(time.Duration(float64(start) / perSecond * float64(time.Second)))
			if d := time.Until(due); d > 0 {
				select {
				case <-time.After(d):
				case <-ctx.Done():
					return ctx.Err()
				}
			}
		}
		end := min(start+chunk, len(idx))
		recs := make([]*kgo.Record, 0, end-start)
		for i := start; i < end; i++ {
			ip := ps[pops[i]].IP(idx[i])
			topic := InputTopics[i%len(InputTopics)]
			recs = append(recs, &kgo.Record{Topic: topic, Key: []byte(ip), Value: Event(seq0+i, topic, ip)})
		}
		if err := l.Kafka.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			return fmt.Errorf("producing events: %w", err)
		}
	}
	return nil
}

// Total is the number of records in topics.
func (l *Lab) Total(ctx context.Context, topics ...string) (int64, error) {
	ends, err := l.Admin.ListEndOffsets(ctx, topics...)
	if err != nil {
		return 0, err
	}
	var n int64
	ends.Each(func(o kadm.ListedOffset) { n += o.Offset })
	return n, ends.Error()
}

// WaitCommitted waits until group has committed every record of the input
// topics and of the lookup topic: for every partition that holds records,
// the committed offset is its end offset. (A partition whose first record is stuck has no commit at
// all: a lag computed from commits alone would not see it.)
func (l *Lab) WaitCommitted(ctx context.Context, group string, within time.Duration) (time.Time, error) {
	deadline := time.Now().Add(within)
	for {
		done, err := l.committedAll(ctx, group)
		if err == nil && done {
			return time.Now(), nil
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("group %s did not commit every record within %s (%v)", group, within, err)
		}
		if err := SleepCtx(ctx, 20*time.Millisecond); err != nil {
			return time.Time{}, err
		}
	}
}

func (l *Lab) committedAll(ctx context.Context, group string) (bool, error) {
	// Every other topic the group reads too (its lookup topic): a sighting
	// is committed once its lookup request is written, the request once
	// its row and event are.
	topics := slices.Clone(InputTopics)
	described, err := l.Admin.DescribeGroups(ctx, group)
	if err != nil {
		return false, err
	}
	for _, t := range described.AssignedPartitions().Topics() {
		if !slices.Contains(topics, t) {
			topics = append(topics, t)
		}
	}
	ends, err := l.Admin.ListEndOffsets(ctx, topics...)
	if err != nil {
		return false, err
	}
	commits, err := l.Admin.FetchOffsets(ctx, group)
	if err != nil {
		return false, err
	}
	done := true
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset == 0 {
			return
		}
		c, ok := commits.Lookup(o.Topic, o.Partition)
		if !ok || c.At < o.Offset {
			done = false
		}
	})
	return done, nil
}

// ReadAll reads every record of topic up to its end offsets now, calling fn.
func (l *Lab) ReadAll(ctx context.Context, topic string, fn func(*kgo.Record)) (int64, error) {
	want, err := l.Total(ctx, topic)
	if err != nil || want == 0 {
		return 0, err
	}
	rd, err := kgo.NewClient(kgo.SeedBrokers(l.Broker.Addr()), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		return 0, err
	}
	defer rd.Close()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var read int64
	for read < want {
		fs := rd.PollFetches(ctx)
		if ctx.Err() != nil {
			return read, fmt.Errorf("read %d of %d records of %s", read, want, topic)
		}
		fs.EachRecord(func(r *kgo.Record) { read++; fn(r) })
	}
	return read, nil
}

// EnrichedByIP counts the enriched events per attacker IP, and the events
// that repeat an earlier one of their IP exactly (same payload: the same
// row version published twice).
func (l *Lab) EnrichedByIP(ctx context.Context, topic string) (perIP map[string]int, n, repeats int64, err error) {
	perIP = map[string]int{}
	payloads := map[string]bool{}
	n, err = l.ReadAll(ctx, topic, func(r *kgo.Record) {
		p := gjson.GetBytes(r.Value, "payload")
		perIP[p.Get("attacker_ip").String()]++
		if payloads[p.Raw] {
			repeats++
		}
		payloads[p.Raw] = true
	})
	return perIP, n, repeats, err
}

// perIPProviders are the indexes of GreyNoise, AbuseIPDB and ThreatFox in
// config/pipeline.yaml's intel_enrich providers (Feodo, 2, is a feed).
var perIPProviders = []int{0, 1, 3}

// ProviderLimits are --set overrides of config/pipeline.yaml's per-IP
// provider limits, each "field=value" (e.g. "rate_per_second=0") applied to
// all three: runs here would otherwise measure the free tiers' daily caps.
func ProviderLimits(fields ...string) []string {
	var sets []string
	for _, i := range perIPProviders {
		for _, f := range fields {
			sets = append(sets, fmt.Sprintf("pipeline.processors.1.intel_enrich.providers.%d.limits.%s", i, f))
		}
	}
	return sets
}

// Process is one decnet-stream process.
type Process struct {
	Cmd     *exec.Cmd
	Log     *os.File // its stdout and stderr
	metrics string
	exited  chan struct{}
	exitErr error
}

// RunOpts say how to start the binary.
type RunOpts struct {
	Config string   // relative to the repository root
	Env    []string // on top of the Lab's
	Sets   []string // --set overrides
	// LogLevel is the process's log level; default warn.
	LogLevel string
	// Debug serves /debug/pprof, for Goroutines.
	Debug bool
	// KafkaInput is the config path of the kafka_franz input; default
	// config/pipeline.yaml's.
	KafkaInput string
}

// PipelineKafkaInput is where config/pipeline.yaml's kafka_franz input sits.
const PipelineKafkaInput = "input.broker.inputs.0.kafka_franz"

// Start runs the binary with config against the Lab, with its own metrics
// port and log file.
func (l *Lab) Start(o RunOpts) (*Process, error) {
	port, err := chserver.FreePort()
	if err != nil {
		return nil, err
	}
	logf, err := os.CreateTemp(l.Tmp, "pipeline-*.log")
	if err != nil {
		return nil, err
	}
	level := o.LogLevel
	if level == "" {
		level = "warn"
	}
	args := []string{"run", "--log.level", level, "-s", fmt.Sprintf("http.address=127.0.0.1:%d", port), "-s", "metrics.json_api={}",
		// Commits every 100ms instead of 5s, so "every offset committed" marks
		// the end of the work, not the next commit tick.
		"-s", cmp.Or(o.KafkaInput, PipelineKafkaInput) + ".commit_period=100ms"}
	if o.Debug {
		args = append(args, "-s", "http.debug_endpoints=true")
	}
	for _, s := range append(o.Sets, l.Sets...) {
		args = append(args, "-s", s)
	}
	args = append(args, filepath.Join(l.Root, o.Config))
	cmd := exec.Command(l.Binary, args...)
	cmd.Dir = l.Root
	cmd.Env = append(append(os.Environ(),
		"KAFKA_SEED_BROKERS="+l.Broker.Addr(),
		"CLICKHOUSE_DSN="+l.CH.DSN(),
		"GREYNOISE_BASE_URL="+l.Sim.URL, "ABUSEIPDB_BASE_URL="+l.Sim.URL, "THREATFOX_BASE_URL="+l.Sim.URL,
		"FEODO_URL="+l.Sim.URL+"/ipblocklist.json", "THREATFOX_EXPORT_URL="+l.Sim.URL+"/export/json/ip-port/recent/",
		"SPAMHAUS_DROP_V4_URL="+l.Sim.URL+"/drop/drop_v4.json", "SPAMHAUS_DROP_V6_URL="+l.Sim.URL+"/drop/drop_v6.json",
		"INTEL_FEED_DIR="+filepath.Join(l.Tmp, fmt.Sprintf("feeds-%d", port)),
		"DECNET_GREYNOISE_API_KEY=bench-greynoise-key", "DECNET_ABUSEIPDB_API_KEY=bench-abuseipdb-key", "DECNET_THREATFOX_API_KEY=bench-threatfox-key",
		"INTEL_STATE_FILE="+filepath.Join(l.Tmp, fmt.Sprintf("budget-%d.json", port)),
	), append(slices.Clip(l.Env), o.Env...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// A process never outlives its benchmark or test, however that ends.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &Process{Cmd: cmd, metrics: fmt.Sprintf("http://127.0.0.1:%d/metrics", port), Log: logf, exited: make(chan struct{})}
	go func() { p.exitErr = cmd.Wait(); close(p.exited) }()
	return p, nil
}

// Exited is closed when the process has exited; ExitErr says how.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// ExitErr is the process's exit status once Exited is closed.
func (p *Process) ExitErr() error { <-p.exited; return p.exitErr }

// Kill ends the process with SIGKILL (no drain, no commit) and waits.
func (p *Process) Kill() {
	_ = p.Cmd.Process.Kill()
	<-p.exited
	p.Log.Close()
}

// PollEvery is how often the lab reads a process's metrics. Each read makes
// the process under measurement encode every metric: reading every 5ms, as
// it once did, took CPU from the pipeline it was timing.
const PollEvery = 20 * time.Millisecond

// Sightings is how many records of the input topics (not the lookup
// topic) the process has handed to its pipeline.
func (p *Process) Sightings() float64 { return p.sightings("kafka_records_received") }

// SightingsAcked is how many records of the input topics the process's
// outputs have acknowledged: what its commits may cover.
func (p *Process) SightingsAcked() float64 { return p.sightings("kafka_records_acked") }

func (p *Process) sightings(metric string) float64 {
	n := 0.0
	for _, t := range InputTopics {
		v := p.metric(metric, fmt.Sprintf("topic=%q", t))
		if v < 0 {
			return -1
		}
		n += v
	}
	return n
}

// Metric sums every series of name (any labels) on the process's json_api
// metrics endpoint; -1 when the endpoint does not answer yet.
func (p *Process) Metric(name string) float64 { return p.metric(name, "") }

// metric sums the series of name whose labels contain label.
func (p *Process) metric(name, label string) float64 {
	resp, err := http.Get(p.metrics)
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	var series map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&series); err != nil {
		return -1
	}
	sum := 0.0
	for k, v := range series {
		if (k == name || strings.HasPrefix(k, name+"{")) && strings.Contains(k, label) {
			if f, ok := v.(float64); ok {
				sum += f
			}
		}
	}
	return sum
}

// Goroutines is the process's goroutine count (RunOpts.Debug must be set),
// or -1 when it cannot be read.
func (p *Process) Goroutines() int {
	resp, err := http.Get(strings.TrimSuffix(p.metrics, "/metrics") + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil {
		return -1
	}
	var n int
	if _, err := fmt.Sscanf(line, "goroutine profile: total %d", &n); err != nil {
		return -1
	}
	return n
}

// CPUProfile writes a CPU profile of the next d of the process (started
// with Debug) to path: what a benchmark run spends its time on.
func (p *Process) CPUProfile(d time.Duration, path string) error {
	return p.profile(fmt.Sprintf("profile?seconds=%d", max(1, int(d.Seconds()))), path)
}

// HeapProfile writes the process's heap profile (started with Debug) to
// path: what its memory holds now, and what it allocated so far.
func (p *Process) HeapProfile(path string) error { return p.profile("heap", path) }

func (p *Process) profile(name, path string) error {
	url := strings.TrimSuffix(p.metrics, "/metrics") + "/debug/pprof/" + name
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// Metrics is the process's json_api metrics document, as served.
func (p *Process) Metrics() (string, error) {
	resp, err := http.Get(p.metrics)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// WaitMetric polls until name reaches at least v and returns when it did.
func (p *Process) WaitMetric(ctx context.Context, name string, v float64, within time.Duration) (time.Time, error) {
	return p.waitFor(ctx, name, func() float64 { return p.Metric(name) }, v, within)
}

// WaitSightings polls until Sightings reaches at least v.
func (p *Process) WaitSightings(ctx context.Context, v float64, within time.Duration) (time.Time, error) {
	return p.waitFor(ctx, "sightings received", p.Sightings, v, within)
}

func (p *Process) waitFor(ctx context.Context, name string, read func() float64, v float64, within time.Duration) (time.Time, error) {
	deadline := time.Now().Add(within)
	for {
		if read() >= v {
			return time.Now(), nil
		}
		select {
		case <-p.exited:
			return time.Time{}, fmt.Errorf("the pipeline exited (%v) before %s reached %.0f (see %s)", p.exitErr, name, v, p.Log.Name())
		default:
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("%s never reached %.0f within %s (see %s)", name, v, within, p.Log.Name())
		}
		if err := SleepCtx(ctx, PollEvery); err != nil {
			return time.Time{}, err
		}
	}
}

// CPUSeconds is the user and system CPU time the process has used so far.
func (p *Process) CPUSeconds() float64 { return CPUSecondsOf(p.Cmd.Process.Pid) }

// CPUSecondsOf is the user and system CPU time process pid has used so
// far, or -1 when it cannot be read.
func CPUSecondsOf(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return -1
	}
	// Fields after the command name, which is in parentheses and may hold
	// spaces: utime and stime are the 12th and 13th of them, in clock
	// ticks (USER_HZ, 100 on Linux).
	rest := b[bytes.LastIndexByte(b, ')')+1:]
	f := strings.Fields(string(rest))
	if len(f) < 13 {
		return -1
	}
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) / 100
}

// PeakRSS is the process's high-water resident set, in bytes.
func (p *Process) PeakRSS() int64 { return ProcStatus(p.Cmd.Process.Pid, "VmHWM:") }

// ResetPeakRSS starts the process's high-water resident set again from
// its resident set now (Linux: clear_refs 5), so that PeakRSS measures one
// phase of a run.
func (p *Process) ResetPeakRSS() error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", p.Cmd.Process.Pid), []byte("5"), 0)
}

// RSS is the process's resident set now, in bytes.
func (p *Process) RSS() int64 { return ProcStatus(p.Cmd.Process.Pid, "VmRSS:") }

// Stop asks the process to drain and exit (SIGTERM), and waits.
func (p *Process) Stop() error {
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		p.Log.Close()
		if p.exitErr != nil {
			return fmt.Errorf("the pipeline exited: %v (see %s)", p.exitErr, p.Log.Name())
		}
		return nil
	case <-time.After(60 * time.Second):
		p.Kill()
		return fmt.Errorf("the pipeline did not stop within 60s of SIGTERM (see %s)", p.Log.Name())
	}
}

// ProcStatus reads one kB field of /proc/<pid>/status, in bytes.
func ProcStatus(pid int, field string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, field) {
			f := strings.Fields(line)
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return -1
}

// SleepCtx waits d, or less if ctx ends first (its error is returned).
func SleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// StopAll stops every process (SIGTERM, drain) and returns the first error.
func StopAll(ps []*Process) error {
	var first error
	for _, p := range ps {
		if err := p.Stop(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// VerifyOutputs checks what a pipeline run must have written for ips
// distinct attackers: one attacker_intel row each whose newest version is
// its IP's last enriched event on topic (VerifyNewestRowsHaveTheirEvents;
// without a table, as for the stock job, at least one event each), never
// the same event twice (a later event of an IP must be a newer row),
// nothing dead-lettered, and no provider asked about a non-routable
// address. It returns the enriched events beyond one per IP.
func (l *Lab) VerifyOutputs(ctx context.Context, table, topic string, ips int) (updates int64, err error) {
	updates, repeats, err := l.verifyOutputs(ctx, table, topic, ips)
	if err == nil && repeats > 0 {
		err = fmt.Errorf("%d enriched events repeat an earlier one exactly: duplicated", repeats)
	}
	return updates, err
}

// VerifyStockOutputs is VerifyOutputs for the stock build, the benchmark's
// yardstick: its duplicates (Benthos' dedupe and cached make no promise
// against them) are returned to be reported, not failed on.
func (l *Lab) VerifyStockOutputs(ctx context.Context, topic string, ips int) (repeats int64, err error) {
	_, repeats, err = l.verifyOutputs(ctx, "", topic, ips)
	return repeats, err
}

func (l *Lab) verifyOutputs(ctx context.Context, table, topic string, ips int) (updates, repeats int64, err error) {
	if table != "" {
		got, err := l.VerifyNewestRowsHaveTheirEvents(ctx, table, topic, "")
		if err != nil {
			return 0, 0, err
		}
		if got.IPs != ips {
			return 0, 0, fmt.Errorf("%s holds rows of %d IPs, want %d: rows were lost", table, got.IPs, ips)
		}
	}
	perIP, n, repeats, err := l.EnrichedByIP(ctx, topic)
	if err != nil {
		return 0, 0, err
	}
	if len(perIP) != ips {
		return 0, 0, fmt.Errorf("enriched events cover %d IPs, want %d: enrichments were lost", len(perIP), ips)
	}
	if dead, err := l.Total(ctx, DLQTopic); err != nil || dead != 0 {
		return 0, 0, fmt.Errorf("%d events dead-lettered (%v)", dead, err)
	}
	if bad := l.Sim.Forbidden(); len(bad) > 0 {
		return 0, 0, fmt.Errorf("providers were asked about non-routable addresses: %v", bad[:min(5, len(bad))])
	}
	return n - int64(ips), repeats, nil
}

// CallsPerIP is per-IP provider requests over (IPs × per-IP providers).
func (l *Lab) CallsPerIP(ips int) float64 {
	requests, _ := l.Sim.PerIPCalls()
	return float64(requests) / float64(ips*len(providersim.PerIP))
}

// ResetSim forgets the provider simulation's counts and faults, lifts its
// rate limits and sets its latency.
func (l *Lab) ResetSim(latency time.Duration) {
	l.Sim.SetRate(0, 0)
	l.Sim.Reset()
	l.Sim.SetLatency(latency)
}

// Newest is what the invariant check found: per IP, the newest row and the
// enriched events in the order Kafka holds them.
type Newest struct {
	IPs    int // IPs with a row
	Events int // enriched events read
}

// VerifyNewestRowsHaveTheirEvents checks the invariant users rely on, not
// a proxy for it ("some enriched event per IP"): for every IP of table
// (rows FINAL, the newest version), the last enriched event on topic is
// that row (same version, same verdict and provider answers), and no event
// of an IP carries an older version than one published before it. A lost
// complete-row event, or a stale partial one published after it, fails.
// where, when set, narrows the rows checked (SQL).
func (l *Lab) VerifyNewestRowsHaveTheirEvents(ctx context.Context, table, topic, where string) (Newest, error) {
	if where == "" {
		where = "1"
	}
	rows, err := chserver.Query(ctx, l.CH.DSN(), "SELECT attacker_ip, toString(version), ifNull(aggregate_verdict, 'null'), "+
		"ifNull(greynoise_classification, 'null'), ifNull(toString(abuseipdb_score), 'null'), ifNull(toString(feodo_listed), 'null'), "+
		"ifNull(toString(threatfox_listed), 'null') FROM "+table+" FINAL WHERE "+where)
	if err != nil {
		return Newest{}, err
	}
	type event struct {
		version int64
		content string
	}
	last := map[string]event{}
	var problems []string
	n, err := l.ReadAll(ctx, topic, func(r *kgo.Record) {
		p := gjson.GetBytes(r.Value, "payload")
		ip := p.Get("attacker_ip").String()
		at, err := time.Parse(time.RFC3339Nano, p.Get("cached_at").String())
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: an event without a cached_at: %s", ip, p.Raw))
			return
		}
		e := event{version: at.UnixNano(), content: strings.Join([]string{
			orNull(p.Get("aggregate_verdict")), orNull(p.Get("greynoise_classification")), orNull(p.Get("abuseipdb_score")),
			boolNum(p.Get("feodo_listed")), boolNum(p.Get("threatfox_listed"))}, "|")}
		if prev, ok := last[ip]; ok && e.version < prev.version && len(problems) < 20 {
			problems = append(problems, fmt.Sprintf("%s: an event of version %d published after one of version %d", ip, e.version, prev.version))
		}
		last[ip] = e
	})
	if err != nil {
		return Newest{}, err
	}
	for _, row := range rows {
		ip := row[0]
		version, _ := strconv.ParseInt(row[1], 10, 64)
		want := strings.Join(row[2:], "|")
		e, ok := last[ip]
		switch {
		case !ok:
			problems = append(problems, fmt.Sprintf("%s: its row (version %d) has no enriched event", ip, version))
		case e.version != version:
			problems = append(problems, fmt.Sprintf("%s: the last enriched event is version %d, the newest row %d", ip, e.version, version))
		case e.content != want:
			problems = append(problems, fmt.Sprintf("%s: the last enriched event says %s, the newest row %s", ip, e.content, want))
		}
		if len(problems) >= 20 {
			break
		}
	}
	if len(problems) > 0 {
		return Newest{}, fmt.Errorf("%d IPs break the newest-row invariant, e.g. %s", len(problems), strings.Join(problems, "; "))
	}
	return Newest{IPs: len(rows), Events: int(n)}, nil
}

func orNull(r gjson.Result) string {
	if !r.Exists() || r.Type == gjson.Null {
		return "null"
	}
	return r.String()
}

// boolNum writes a JSON boolean as ClickHouse's UInt8 reads.
func boolNum(r gjson.Result) string {
	switch r.Type {
	case gjson.True:
		return "1"
	case gjson.False:
		return "0"
	}
	return "null"
}

// VerifyAnswersReachedRows checks that every answer the simulated providers
// gave reached its IP's row in table: the provider's status there is ok
// (or stale: answered, then failed on a refresh, the answer kept). An
// answer paid for and never written, or overwritten by a failure, fails.
func (l *Lab) VerifyAnswersReachedRows(ctx context.Context, table string) (answers int, err error) {
	rows, err := chserver.Query(ctx, l.CH.DSN(), "SELECT attacker_ip, greynoise_status, abuseipdb_status, threatfox_status FROM "+table+" FINAL")
	if err != nil {
		return 0, err
	}
	status := map[string]map[string]string{}
	for _, r := range rows {
		status[r[0]] = map[string]string{providersim.GreyNoise: r[1], providersim.AbuseIPDB: r[2], providersim.ThreatFox: r[3]}
	}
	var lost []string
	for _, p := range providersim.PerIP {
		for _, ip := range l.Sim.Answered(p) {
			answers++
			if s := status[ip][p]; s != "ok" && s != "stale" && len(lost) < 10 {
				lost = append(lost, fmt.Sprintf("%s answered %s, its row says %q", p, ip, s))
			}
		}
	}
	if len(lost) > 0 {
		return answers, fmt.Errorf("answers never reached their rows: %s", strings.Join(lost, "; "))
	}
	return answers, nil
}
