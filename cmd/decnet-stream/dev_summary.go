package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/decnet/decnet-stream/plugins/intel_processor"
)

// devSummary gathers what dev shows: records per topic from the broker,
// rows and verdicts from ClickHouse, dead letters by reason, and the intel
// stage's own counters and provider quotas.
type devSummary struct {
	cl      *kgo.Client
	adm     *kadm.Client
	ch      driver.Conn
	table   string
	started time.Time

	mu            sync.Mutex
	deadLetters   map[string]int64
	last          map[string]int64
	at            time.Time
	firstEnriched time.Duration
	stopDLQ       context.CancelFunc
	dlqDone       chan struct{}
}

func newDevSummary(addr, dsn, table string, started time.Time) (*devSummary, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		return nil, err
	}
	s := &devSummary{cl: cl, adm: kadm.NewClient(cl), table: table, started: started, deadLetters: map[string]int64{},
		last: map[string]int64{}, at: started, dlqDone: make(chan struct{})}
	if opts, err := clickhouse.ParseDSN(dsn); err == nil {
		s.ch, _ = clickhouse.Open(opts)
	}
	dlq, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumeTopics(envOr(nil, "DLQ_TOPIC", "decnet.dlq")),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		cl.Close()
		return nil, err
	}
	ctx, stop := context.WithCancel(context.Background())
	s.stopDLQ = stop
	go s.countDeadLetters(ctx, dlq)
	go s.watchFirstEnriched(ctx)
	return s, nil
}

// watchFirstEnriched notes when the first enriched event is published:
// the time a newcomer waits to see the product work.
func (s *devSummary) watchFirstEnriched(ctx context.Context) {
	for ctx.Err() == nil {
		ends, err := s.adm.ListEndOffsets(ctx, "attacker.intel.enriched")
		if err == nil {
			var n int64
			ends.Each(func(o kadm.ListedOffset) { n += o.Offset })
			if n > 0 {
				s.mu.Lock()
				s.firstEnriched = time.Since(s.started)
				s.mu.Unlock()
				return
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// countDeadLetters reads the dead-letter topic as it fills, by reason.
func (s *devSummary) countDeadLetters(ctx context.Context, cl *kgo.Client) {
	defer close(s.dlqDone)
	defer cl.Close()
	for ctx.Err() == nil {
		fs := cl.PollFetches(ctx)
		fs.EachRecord(func(r *kgo.Record) {
			reason := "unknown"
			for _, h := range r.Headers {
				if h.Key == "decnet_error" {
					reason = string(h.Value)
				}
			}
			s.mu.Lock()
			s.deadLetters[reason]++
			s.mu.Unlock()
		})
	}
}

func (s *devSummary) close() {
	s.stopDLQ()
	<-s.dlqDone
	s.cl.Close()
	if s.ch != nil {
		_ = s.ch.Close()
	}
}

// topicRow is one topic's records and rate since the last summary.
type topicRow struct {
	name    string
	records int64
	rate    float64
}

// devSnapshot is one summary: everything measured at one moment.
type devSnapshot struct {
	elapsed, firstEnriched time.Duration
	topics                 []topicRow
	topicsErr              error
	providers              []intel_processor.ProviderStatus
	stats                  map[string]any
	rows                   int64
	verdicts               map[string]int64
	rowsErr                error
	deadLetters            map[string]int64
	now                    time.Time
}

func (s *devSummary) collect(ctx context.Context) devSnapshot {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	now := time.Now()
	d := devSnapshot{elapsed: now.Sub(s.started), now: now, stats: intel_processor.Stats(), providers: intel_processor.ProviderStatuses()}
	ends, err := s.adm.ListEndOffsets(ctx)
	if err != nil {
		d.topicsErr = err
	} else {
		totals := map[string]int64{}
		ends.Each(func(o kadm.ListedOffset) {
			if !strings.HasPrefix(o.Topic, "__") {
				totals[o.Topic] += o.Offset
			}
		})
		s.mu.Lock()
		secs := now.Sub(s.at).Seconds()
		for t, n := range totals {
			d.topics = append(d.topics, topicRow{name: t, records: n, rate: float64(n-s.last[t]) / secs})
		}
		s.last, s.at = totals, now
		d.firstEnriched = s.firstEnriched
		s.mu.Unlock()
		sort.Slice(d.topics, func(i, j int) bool { return d.topics[i].name < d.topics[j].name })
	}
	d.rows, d.verdicts, d.rowsErr = s.rowsAndVerdicts(ctx)
	s.mu.Lock()
	d.deadLetters = make(map[string]int64, len(s.deadLetters))
	for k, v := range s.deadLetters {
		d.deadLetters[k] = v
	}
	s.mu.Unlock()
	return d
}

// rowsAndVerdicts are the attacker_intel rows (one per attacker, FINAL) and
// their aggregate verdicts.
func (s *devSummary) rowsAndVerdicts(ctx context.Context) (int64, map[string]int64, error) {
	if s.ch == nil {
		return 0, nil, errors.New("no ClickHouse connection")
	}
	rows, err := s.ch.Query(ctx, "SELECT ifNull(aggregate_verdict, 'none') AS v, count() FROM "+s.table+" FINAL GROUP BY v")
	if err != nil {
		if strings.Contains(err.Error(), "UNKNOWN_TABLE") || strings.Contains(err.Error(), "doesn't exist") {
			return 0, map[string]int64{}, nil // not created yet
		}
		return 0, nil, err
	}
	defer rows.Close()
	var total int64
	verdicts := map[string]int64{}
	for rows.Next() {
		var v string
		var n uint64
		if err := rows.Scan(&v, &n); err != nil {
			return 0, nil, err
		}
		if v == "" {
			v = "none"
		}
		verdicts[v] += int64(n)
		total += int64(n)
	}
	return total, verdicts, rows.Err()
}

// write renders the snapshot: a few aligned blocks that a newcomer can read
// without knowing the code.
func (d devSnapshot) write(w io.Writer) {
	first := "no enriched event yet"
	if d.firstEnriched > 0 {
		first = fmt.Sprintf("first enriched event %.1fs after start", d.firstEnriched.Seconds())
	}
	fmt.Fprintf(w, "decnet-stream dev: %s running; %s\n\n", d.elapsed.Round(time.Second), first)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TOPIC\tRECORDS\tPER SECOND\t")
	if d.topicsErr != nil {
		fmt.Fprintf(tw, "(broker: %v)\t\t\t\n", d.topicsErr)
	}
	for _, t := range d.topics {
		fmt.Fprintf(tw, "%s\t%d\t%.0f\t\n", t.name, t.records, t.rate)
	}
	tw.Flush()

	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PROVIDER\tCALLS\tANSWERS\tERRORS\tLIMITS\t")
	for _, p := range d.providers {
		calls := fmt.Sprint(p.Calls)
		if p.Quota == nil {
			calls = "(local)" // a bulk feed answers from memory
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t\n", p.Name, calls, p.Answers, countsLine(p.Errors, "-"), limitsLine(p, d.now))
	}
	tw.Flush()

	events, _ := d.stats["events"].(int64)
	hits, _ := d.stats["cache_hits"].(int64)
	lookups, _ := d.stats["lookups"].(int64)
	share := 0.0
	if events > 0 {
		share = 100 * float64(hits) / float64(events)
	}
	fmt.Fprintf(w, "\nsightings %d, %.1f%% answered from the cache; %d lookups; %v enriched events published\n", events, share, lookups, d.stats["changes"])
	if d.rowsErr != nil {
		fmt.Fprintf(w, "attacker_intel: unreadable (%v)\n", d.rowsErr)
	} else {
		fmt.Fprintf(w, "attacker_intel: %d rows (one per attacker); verdicts %s\n", d.rows, countsLine(d.verdicts, "none yet"))
	}
	fmt.Fprintf(w, "dead letters: %s\n", countsLine(d.deadLetters, "none"))
}

// limitsLine says where a provider stands against its limits, and when one
// bites, which and why.
func limitsLine(p intel_processor.ProviderStatus, now time.Time) string {
	if p.Quota == nil {
		if p.FeedErr != nil && p.FeedEntries == 0 {
			return "bulk feed not loaded: " + p.FeedErr.Error()
		}
		return fmt.Sprintf("bulk feed, %d entries, %s old", p.FeedEntries, p.FeedAge.Round(time.Second))
	}
	q := *p.Quota
	var parts []string
	switch {
	case q.Budget > 0 && q.Remaining == 0:
		parts = append(parts, fmt.Sprintf("daily budget %d/%d spent, next at 00:00 UTC (in %s)", q.Used, q.Budget, q.NextDay(now).Sub(now).Round(time.Minute)))
	case q.Budget > 0:
		parts = append(parts, fmt.Sprintf("budget left %d/%d today", q.Remaining, q.Budget))
	default:
		parts = append(parts, "no daily cap")
	}
	if q.Blocked(now) {
		parts = append(parts, fmt.Sprintf("blocked until %s (%s)", q.BlockedUntil.UTC().Format("15:04:05 UTC"), q.BlockKind))
	}
	if n := p.Errors["rate_limited"]; n > 0 {
		parts = append(parts, fmt.Sprintf("%d lookups waited past max_wait for the rate limit", n))
	}
	if p.Covered > 0 {
		parts = append(parts, fmt.Sprintf("%d calls saved: a bulk list had the IP", p.Covered))
	}
	switch q.KeyID {
	case "":
	case "none":
		parts = append(parts, "keyless")
	default:
		parts = append(parts, "key "+q.KeyID) // a fingerprint, never the key
	}
	return strings.Join(parts, "; ")
}

func countsLine(m map[string]int64, empty string) string {
	if len(m) == 0 {
		return empty
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return m[keys[i]] > m[keys[j]] || (m[keys[i]] == m[keys[j]] && keys[i] < keys[j]) })
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	return strings.Join(parts, ", ")
}

// check is --check's verdict: the product visibly worked.
func (d devSnapshot) check() error {
	var missing []string
	if d.firstEnriched == 0 {
		missing = append(missing, "no enriched event was published")
	}
	if d.rows == 0 {
		missing = append(missing, "no attacker_intel row was written")
	}
	if len(d.verdicts) < 2 {
		missing = append(missing, fmt.Sprintf("the verdict mix has %d verdicts, want more than one", len(d.verdicts)))
	}
	if len(missing) > 0 {
		return errors.New("dev --check: " + strings.Join(missing, "; "))
	}
	return nil
}
