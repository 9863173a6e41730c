package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// binary is decnet-stream built once for these tests, as users run it.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "decnet-stream-bin")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "decnet-stream")
	build := exec.Command("go", "build", "-ldflags", "-X main.version=v0.0.0-test -X main.dateBuilt=today", "-o", binary, ".")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		panic("building decnet-stream: " + err.Error())
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command(binary, args...).CombinedOutput()
	return string(out), err
}

func TestVersionAndComponents(t *testing.T) {
	out, err := run(t, "--version")
	if err != nil || !strings.Contains(out, "v0.0.0-test") {
		t.Fatalf("--version: %v\n%s", err, out)
	}
	out, err = run(t, "list", "inputs", "outputs")
	if err != nil {
		t.Fatalf("list: %v\n%s", err, out)
	}
	if n := strings.Count(out, "kafka_franz"); n != 2 {
		t.Fatalf("list shows kafka_franz %d times, want as input and output:\n%s", n, out)
	}
}

// enrichProviders is a config whose intel_enrich has the given providers
// list (YAML, one item per line, unindented).
func enrichProviders(items string) string {
	return "input:\n  generate: { mapping: 'root = \"\"' }\npipeline:\n  processors:\n    - intel_enrich:\n        providers:\n" +
		"          " + strings.ReplaceAll(strings.TrimSpace(items), "\n", "\n          ") + "\noutput:\n  drop: {}\n"
}

func TestLintNamesTheBadField(t *testing.T) {
	for name, tc := range map[string]struct{ yaml, want string }{
		"misspelt field": {`
input:
  kafka_franz:
    seed_brokers: [ localhost:9092 ]
    topics: [ a ]
    consumer_grup: g
output:
  drop: {}
`, "field consumer_grup not recognised"},
		"out of range": {`
input:
  kafka_franz:
    seed_brokers: [ localhost:9092 ]
    topics: [ a ]
    checkpoint_limit: 0
output:
  drop: {}
`, "checkpoint_limit must be at least 1"},
		"bad enum": {`
input:
  generate: { mapping: 'root = ""' }
output:
  kafka_franz:
    seed_brokers: [ localhost:9092 ]
    topic: out
    compression: brotli
`, "compression must be one of none, gzip, snappy, lz4, zstd, got brotli"},
		"bad size": {`
input:
  generate: { mapping: 'root = ""' }
output:
  kafka_franz:
    seed_brokers: [ localhost:9092 ]
    topic: out
    max_message_bytes: lots
`, "max_message_bytes must be a byte size"},
		"skip_when names a per-IP provider": {enrichProviders(`
- name: greynoise
  skip_when: [ abuseipdb ]
- name: abuseipdb`), "skip_when names feeds only"},
		"skip_when on a feed": {enrichProviders(`
- name: spamhaus_drop
  skip_when: [ feodo ]
- name: feodo`), "skip_when is for the per-IP providers"},
		"a list field on the wrong provider": {enrichProviders(`
- name: threatfox_export
  confidence_minimum: 90`), "confidence_minimum and limit are for abuseipdb_blacklist only"},
		"a confidence AbuseIPDB refuses": {enrichProviders(`
- name: abuseipdb_blacklist
  confidence_minimum: 10`), "confidence_minimum must be in [25, 100]"},
		"a GOGC Go would refuse":         {"runtime:\n  gc_percent: lots\n" + enrichProviders("- name: feodo"), "gc_percent must be a non-negative integer, off or empty"},
		"a memory limit that is no size": {"runtime:\n  memory_limit: 12 bytes\n" + enrichProviders("- name: feodo"), "memory_limit must be a size"},
		"Spamhaus more often than it allows": {enrichProviders(`
- name: spamhaus_drop
  refresh_interval: 10m`), "spamhaus_drop refresh_interval must be at least 1h"},
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "bad.yaml")
			if err := os.WriteFile(path, []byte(tc.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			out, err := run(t, "lint", path)
			if err == nil {
				t.Fatalf("lint passed a bad config:\n%s", out)
			}
			if !strings.Contains(out, tc.want) {
				t.Fatalf("lint output lacks %q:\n%s", tc.want, out)
			}
		})
	}
}

func TestShippedConfigsLint(t *testing.T) {
	configs, _ := filepath.Glob("../../config/*.yaml")
	for _, pattern := range []string{"../../config/*/*.yaml", "../../config/*/*/*.yaml"} {
		more, _ := filepath.Glob(pattern)
		configs = append(configs, more...)
	}
	if len(configs) == 0 {
		t.Fatal("no configs found")
	}
	out, err := run(t, append([]string{"lint"}, configs...)...)
	if err != nil {
		t.Fatalf("lint: %v\n%s", err, out)
	}
}

// startBroker runs `decnet-stream broker` on a free port and returns its
// address once it serves.
func startBroker(t *testing.T, topics ...string) string {
	t.Helper()
	args := []string{"broker", "--addr", "127.0.0.1:0", "--log-level", "warn"}
	for _, topic := range topics {
		args = append(args, "--topic", topic)
	}
	cmd := exec.Command(binary, args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("broker printed nothing: %v", err)
	}
	m := regexp.MustCompile(`serving Kafka on (\S+)`).FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("unexpected broker banner %q", line)
	}
	return m[1]
}

// kcat, a client nobody here wrote (librdkafka), produces 1,000 keyed records
// with headers into `decnet-stream broker`; decnet-stream reads them with
// kafka_franz and writes them back with kafka_franz; kcat reads them back
// with their keys and headers.
func TestKcatRoundTrip(t *testing.T) {
	kcat, err := exec.LookPath("kcat")
	if err != nil {
		t.Fatal("kcat is required (apt-get install kcat; .ci/run installs it)")
	}
	const n = 1000
	// kcat's consumer gives up on a topic that does not exist yet.
	addr := startBroker(t, "sensor.relayed")

	var in strings.Builder
	for i := 0; i < n; i++ {
		fmt.Fprintf(&in, "203.0.113.%d|{\"seq\":%d}\n", i%200, i)
	}
	produce := exec.Command(kcat, "-P", "-b", addr, "-t", "sensor.raw", "-K", "|", "-H", "decnet_sensor=sensor-7", "-p", "-1")
	produce.Stdin = strings.NewReader(in.String())
	if out, err := produce.CombinedOutput(); err != nil {
		t.Fatalf("kcat produce: %v\n%s", err, out)
	}

	cfg := filepath.Join(t.TempDir(), "relay.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`
input:
  kafka_franz:
    seed_brokers: [ %q ]
    topics: [ sensor.raw ]
    consumer_group: relay
pipeline:
  processors:
    - mapping: |
        root = this
        meta relayed_key = @kafka_key
        meta decnet_sensor = @decnet_sensor
output:
  kafka_franz:
    seed_brokers: [ %q ]
    topic: sensor.relayed
    key: ${! @kafka_key }
    metadata:
      include_patterns: [ "^decnet_sensor$", "^relayed_key$" ]
logger:
  level: warn
`, addr, addr)), 0o600); err != nil {
		t.Fatal(err)
	}
	relay := exec.Command(binary, "run", cfg)
	relay.Stdout, relay.Stderr = os.Stderr, os.Stderr
	if err := relay.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = relay.Process.Signal(syscall.SIGTERM)
		_ = relay.Wait()
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	consume := exec.CommandContext(ctx, kcat, "-C", "-b", addr, "-t", "sensor.relayed", "-o", "beginning",
		"-c", fmt.Sprint(n), "-f", "%k|%h|%s\n")
	out, err := consume.Output()
	if err != nil {
		t.Fatalf("kcat consume: %v (read %d lines)", err, strings.Count(string(out), "\n"))
	}
	seen := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		parts := strings.SplitN(line, "|", 3)
		if len(parts) != 3 {
			t.Fatalf("bad kcat line %q", line)
		}
		key, headers, value := parts[0], parts[1], parts[2]
		if !strings.Contains(headers, "decnet_sensor=sensor-7") || !strings.Contains(headers, "relayed_key="+key) {
			t.Fatalf("record %s: headers %q lack the original header or key", value, headers)
		}
		seen[value] = true
	}
	if len(seen) != n {
		t.Fatalf("kcat read %d distinct records back, want %d", len(seen), n)
	}
}

// The committed reference under docs/components is what the specs render
// now: run `go tool task docs` after changing a spec.
func TestDocsMatchSpecs(t *testing.T) {
	out := t.TempDir()
	if msg, err := run(t, "docs", "--out", out); err != nil {
		t.Fatalf("docs: %v\n%s", err, msg)
	}
	generated, _ := filepath.Glob(filepath.Join(out, "*", "*.md"))
	if len(generated) == 0 {
		t.Fatal("docs wrote nothing")
	}
	for _, g := range generated {
		rel, _ := filepath.Rel(out, g)
		want, _ := os.ReadFile(g)
		got, err := os.ReadFile(filepath.Join("../../docs/components", rel))
		if err != nil || string(got) != string(want) {
			t.Errorf("docs/components/%s is stale or missing: run `go tool task docs`", rel)
		}
	}
}

// API keys are secret fields: `echo` shows the config without them.
func TestEchoScrubsProviderKeys(t *testing.T) {
	cmd := exec.Command(binary, "echo", "../../config/pipeline.yaml")
	cmd.Env = append(os.Environ(), "DECNET_ABUSEIPDB_API_KEY=sekrit-abuse-123", "DECNET_GREYNOISE_API_KEY=sekrit-gn-456", "DECNET_THREATFOX_API_KEY=sekrit-tf-789")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("echo: %v\n%s", err, out)
	}
	if strings.Contains(string(out), "sekrit") {
		t.Fatalf("echo printed an API key:\n%s", out)
	}
	if !strings.Contains(string(out), "SECRET_SCRUBBED") {
		t.Fatalf("echo shows no scrubbed key: the test proves nothing\n%s", out)
	}
}

// Streams mode takes every stream config as shipped, with the
// observability file: a stream config holding a service-wide field (as
// pipeline.yaml once did with metrics) stops streams mode at start.
func TestStreamsModeTakesEveryStreamConfig(t *testing.T) {
	files, err := filepath.Glob("../../config/streams/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var streams []string
	for _, f := range files {
		if !strings.HasSuffix(f, "_benthos_test.yaml") {
			streams = append(streams, f)
		}
	}
	args := append([]string{"streams", "-o", "../../config/observability.yaml"}, streams...)
	cmd := exec.Command(binary, args...)
	// Nothing listens on port 1: the streams start, then fail to connect.
	cmd.Env = append(os.Environ(), "KAFKA_SEED_BROKERS=127.0.0.1:1", "HTTP_ADDRESS=127.0.0.1:0",
		"CLICKHOUSE_DSN=clickhouse://127.0.0.1:1/default")
	out, err := cmd.StdoutPipe() // Benthos logs to stdout
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	applied := false
	for sc.Scan() {
		line := sc.Text()
		if strings.Contains(line, "lint") || strings.Contains(line, "shutting down") {
			t.Fatalf("streams mode refused the configs: %s", line)
		}
		// The observability file's runtime section, applied before any stream.
		applied = applied || strings.Contains(line, "gc_min_heap_goal 160 MiB")
		if strings.Contains(line, "Failed to connect to kafka_franz") {
			if !applied {
				t.Fatal("streams mode started its streams without applying the runtime section")
			}
			return // every stream was built and is running
		}
	}
	t.Fatal("streams mode exited without starting its streams")
}

var update = flag.Bool("update", false, "rewrite config/streams/enrich.yaml from config/pipeline.yaml")

// streamCopyHeader opens config/streams/enrich.yaml.
const streamCopyHeader = "# Generated: config/pipeline.yaml without its runtime section, for streams\n" +
	"# mode (a stream takes no service-wide fields). Edit pipeline.yaml, then\n" +
	"# go test ./cmd/decnet-stream -run TestStreamsEnrichIsThePipeline -update\n"

// withoutRuntime is a main config with its top-level runtime section (and
// the comment above it, and the blank line after it) left out.
func withoutRuntime(main string) string {
	lines := strings.Split(main, "\n")
	i := slices.Index(lines, "runtime:")
	if i < 0 {
		return main
	}
	from, to := i, i+1
	for from > 0 && strings.HasPrefix(lines[from-1], "#") {
		from--
	}
	for to < len(lines) && strings.HasPrefix(lines[to], " ") {
		to++
	}
	if to < len(lines) && lines[to] == "" {
		to++
	}
	return strings.Join(slices.Concat(lines[:from], lines[to:]), "\n")
}

// The streams-mode copy of the enrichment job is pipeline.yaml as shipped,
// all but the runtime section, which streams mode takes from
// config/observability.yaml.
func TestStreamsEnrichIsThePipelineWithoutItsRuntime(t *testing.T) {
	main, err := os.ReadFile("../../config/pipeline.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(main), "\nruntime:\n") {
		t.Fatal("pipeline.yaml has no runtime section")
	}
	want := streamCopyHeader + withoutRuntime(string(main))
	const path = "../../config/streams/enrich.yaml"
	if *update {
		if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Fatalf("%s is not config/pipeline.yaml without its runtime section: run\n  go test ./cmd/decnet-stream -run TestStreamsEnrichIsThePipeline -update", path)
	}
	if strings.Contains(string(got), "\nruntime:") {
		t.Fatalf("%s holds a runtime section", path)
	}
}
