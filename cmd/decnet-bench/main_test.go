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
)

// Every scenario runs end to end at toy sizes, so the benchmark cannot rot
// between the runs that produce BENCHMARKS.md: its loss and duplication
// checks run too. The figures at these sizes mean nothing.
func TestEveryScenarioRunsAtToySizes(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "decnet-stream")
	build := exec.Command("go", "build", "-o", bin, "../decnet-stream")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		t.Fatal(err)
	}
	o := options{
		scenarios: "pipeline,stages,stock,storm,storm-paced,scaling,memory,economy,soak", binary: bin,
		events: 5_000, ips: 300, latency: 5 * time.Millisecond, latencyRate: 500, latencyFor: time.Second,
		stageEvents: 2_000, stageIPs: 100, stageRuns: 1,
		stockEvents: 2_000, stockIPs: 100, stockLatencies: "0s,5ms",
		stormIPs: 500, stormHot: 2_000, stormRate: 200, stormProviderLimit: true, stormOffered: 4_000,
		memoryIPs: 2_000, scalingEvents: 4_000, scalingIPs: 200,
		economyIPs: 3_000, economySightings: 9_000, economyListed: "0.4",
		soakFor: 4 * time.Second, soakEvery: 250 * time.Millisecond, soakRate: 500, soakIPs: 200,
		plot: filepath.Join(t.TempDir(), "plot.png"),
	}
	var out bytes.Buffer
	if err := run(context.Background(), o, &out); err != nil {
		// The soak may see the cache still filling at this size; nothing else may fail.
		if !strings.Contains(err.Error(), "soak: memory or goroutines grew") {
			t.Fatalf("%v\n%s", err, out.String())
		}
	}
	for _, want := range []string{"ceiling", "decnet", "stages", "stock", "storm", "scaling", "memory", "economy 40%", "storm-paced"} {
		if !strings.Contains(out.String(), "\n  "+want) {
			t.Errorf("no %s figures in the output:\n%s", want, out.String())
		}
	}
	// The bulk lists' promise holds at any size: no per-IP call wasted.
	if !regexp.MustCompile(`bulk lists: calls wasted\s+0\s+0\s+yes`).MatchString(out.String()) {
		t.Errorf("the bulk lists wasted calls:\n%s", out.String())
	}
	if _, err := os.Stat(o.plot); err != nil {
		t.Errorf("no plot: %v", err)
	}
}
