package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/decnet/decnet-stream/internal/broker"
	"github.com/decnet/decnet-stream/internal/chserver"
	"github.com/decnet/decnet-stream/internal/chtest"
	"github.com/decnet/decnet-stream/internal/providers"
	"github.com/decnet/decnet-stream/plugins/intel_processor"
)

// The README's run command in a copy of the repository alone (nothing
// beside it, no DECNET_FIXTURES): within 40 seconds it shows attackers
// enriched, rows in ClickHouse, and GreyNoise's daily budget (100 lookups)
// said in words. Whether it is used up within 40 seconds depends on the
// machine's speed; TestLimitsLineSaysWhichLimitBites covers the words
// then.
func TestDevShowsTheProductWorking(t *testing.T) {
	copyDir := copyRepo(t)
	srv := chtest.Start(t)
	cmd := exec.Command(binary, "dev", "--duration", "40s", "--plain", "--check", "--summary-interval", "10s", "--broker-addr", "127.0.0.1:0")
	cmd.Dir = copyDir
	cmd.Env = append(withoutEnv("DECNET_FIXTURES"), "CLICKHOUSE_DSN="+srv.DSN())
	out, err := cmd.CombinedOutput()
	text := string(out)
	tally := text[strings.LastIndex(text, "final tally"):]
	if err != nil {
		t.Fatalf("dev --check: %v\n%s", err, tally)
	}
	for _, want := range []string{`attacker_intel: \d+ rows`, `greynoise .*(daily budget 100/100 spent, next at 00:00 UTC|budget left \d+/100 today)`, "first enriched event"} {
		if !regexp.MustCompile(want).MatchString(tally) {
			t.Errorf("the final tally lacks %q:\n%s", want, tally)
		}
	}
	if strings.Contains(text, "rows=?") || strings.Contains(tally, "unreadable") {
		t.Errorf("the tally has no real numbers:\n%s", tally)
	}
	t.Logf("dev, 40s in a copy of the repository:\n%s", tally)
}

// The summary's numbers are what the broker and ClickHouse hold.
func TestDevSummaryCountsWhatTheBrokerAndClickHouseHold(t *testing.T) {
	b, err := broker.Start(broker.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.Addr()), kgo.AllowAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var recs []*kgo.Record
	for i := 0; i < 37; i++ {
		recs = append(recs, &kgo.Record{Topic: "attacker.observed", Value: []byte("{}")})
	}
	for i := 0; i < 5; i++ {
		reason := "bad_key"
		if i%2 == 0 {
			reason = "invalid_json"
		}
		recs = append(recs, &kgo.Record{Topic: "decnet.dlq", Value: []byte("x"), Headers: []kgo.RecordHeader{{Key: "decnet_error", Value: []byte(reason)}}})
	}
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	srv := chtest.Start(t)
	ctx := context.Background()
	if err := chserver.Exec(ctx, srv.DSN(), "CREATE TABLE intel (attacker_ip String, aggregate_verdict String, version UInt64) ENGINE = ReplacingMergeTree(version) ORDER BY attacker_ip"); err != nil {
		t.Fatal(err)
	}
	// Three attackers, one of them with two versions: FINAL counts three.
	if err := chserver.Exec(ctx, srv.DSN(), "INSERT INTO intel SELECT * FROM (SELECT '45.0.0.1', 'malicious', toUInt64(1) UNION ALL SELECT '45.0.0.1', 'benign', toUInt64(2) UNION ALL SELECT '45.0.0.2', 'benign', toUInt64(1) UNION ALL SELECT '45.0.0.3', 'unknown', toUInt64(1))"); err != nil {
		t.Fatal(err)
	}
	s, err := newDevSummary(b.Addr(), srv.DSN(), "intel", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	var d devSnapshot
	for deadline := time.Now().Add(30 * time.Second); ; {
		d = s.collect(ctx)
		if d.deadLetters["bad_key"]+d.deadLetters["invalid_json"] == 5 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond) // the dead-letter reader catching up
	}
	records := map[string]int64{}
	for _, tr := range d.topics {
		records[tr.name] = tr.records
	}
	if records["attacker.observed"] != 37 || records["decnet.dlq"] != 5 {
		t.Errorf("records per topic %v, want 37 and 5", records)
	}
	if d.deadLetters["bad_key"] != 2 || d.deadLetters["invalid_json"] != 3 {
		t.Errorf("dead letters %v, want bad_key 2, invalid_json 3", d.deadLetters)
	}
	if d.rows != 3 || d.verdicts["benign"] != 2 || d.verdicts["unknown"] != 1 || d.verdicts["malicious"] != 0 {
		t.Errorf("rows %d, verdicts %v; want 3 rows: benign 2, unknown 1", d.rows, d.verdicts)
	}
	var buf bytes.Buffer
	d.write(&buf)
	for _, want := range []string{"attacker.observed  37", "attacker_intel: 3 rows", "dead letters: invalid_json 3, bad_key 2"} {
		if !strings.Contains(regexp.MustCompile(` {2,}`).ReplaceAllString(buf.String(), "  "), want) {
			t.Errorf("the summary lacks %q:\n%s", want, buf.String())
		}
	}
}

// copyRepo copies the repository's tracked files (as they are in the work
// tree) to a folder of their own: nothing beside it, as in a user's clone.
func copyRepo(t *testing.T) string {
	t.Helper()
	root, err := chserver.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("git", "-C", root, "ls-files", "-z").Output()
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "decnet-stream")
	for _, f := range strings.Split(strings.TrimRight(string(out), "\x00"), "\x00") {
		src := filepath.Join(root, f)
		st, err := os.Lstat(src)
		if err != nil {
			continue // deleted in the work tree
		}
		to := filepath.Join(dst, f)
		if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
			t.Fatal(err)
		}
		if st.Mode()&os.ModeSymlink != 0 {
			target, _ := os.Readlink(src)
			if err := os.Symlink(target, to); err != nil {
				t.Fatal(err)
			}
			continue
		}
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(to, b, st.Mode().Perm()); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

func withoutEnv(keys ...string) []string {
	var out []string
	for _, kv := range os.Environ() {
		drop := false
		for _, k := range keys {
			drop = drop || strings.HasPrefix(kv, k+"=")
		}
		if !drop {
			out = append(out, kv)
		}
	}
	return out
}

// When a limit bites the summary says which, until when, and why.
func TestLimitsLineSaysWhichLimitBites(t *testing.T) {
	now := time.Date(2026, 11, 29, 22, 30, 0, 0, time.UTC)
	spent := providers.Quota{Used: 100, Budget: 100, Remaining: 0}
	blocked := providers.Quota{Used: 12, Budget: 1000, Remaining: 988, BlockedUntil: now.Add(90 * time.Second), BlockKind: providers.ErrRateLimited,
		KeyID: providers.KeyID("abuseipdb-key")}
	for _, c := range []struct {
		status intel_processor.ProviderStatus
		want   string
	}{
		{intel_processor.ProviderStatus{Quota: &spent}, "daily budget 100/100 spent, next at 00:00 UTC (in 1h30m0s)"},
		{intel_processor.ProviderStatus{Quota: &blocked, Errors: map[string]int64{"rate_limited": 3}},
			"budget left 988/1000 today; blocked until 22:31:30 UTC (rate_limited); 3 lookups waited past max_wait for the rate limit; key " + providers.KeyID("abuseipdb-key")},
		{intel_processor.ProviderStatus{Quota: &providers.Quota{Remaining: -1, KeyID: "none"}}, "no daily cap; keyless"},
		{intel_processor.ProviderStatus{Quota: &providers.Quota{Remaining: -1}}, "no daily cap"},
		{intel_processor.ProviderStatus{FeedEntries: 29, FeedAge: 39 * time.Second}, "bulk feed, 29 entries, 39s old"},
	} {
		if got := limitsLine(c.status, now); got != c.want {
			t.Errorf("limitsLine = %q, want %q", got, c.want)
		}
	}
}
