package topics

import "testing"

// BenchmarkMatch20Routes is first-match routing over a realistic table of
// 20 routes, most subjects matching late: subjects matched per second.
//
//	go test ./internal/topics -run '^$' -bench Match20 -cpu 1
func BenchmarkMatch20Routes(b *testing.B) {
	patterns := []string{
		"topology.*.mutation.enqueued", "topology.*.mutation.applying", "topology.*.mutation.applied",
		"topology.*.mutation.failed", "topology.*.status", "decky.*.state", "decky.*.traffic",
		"decky.*.mutate_request", "decky.*.mutation", "credential.captured", "credential.reuse.detected",
		"system.log", "system.bus.health", "system.*.health", "system.*.control",
		"system.webhook.subscriptions_changed", "attacker.session.>", "attacker.intel.enriched",
		"attacker.scored", "attacker.>",
	}
	routes := make([]Pattern, len(patterns))
	for i, s := range patterns {
		routes[i] = MustPattern(s)
	}
	subjects := []string{"attacker.observed", "attacker.scored", "decky.decky-07.traffic", "system.intel.health",
		"topology.t-1.mutation.applied", "attacker.session.ended", "credential.captured", "unknown.subject"}
	table := NewTable(routes)
	b.ReportAllocs()
	b.ResetTimer()
	matched := 0
	for i := 0; i < b.N; i++ {
		if _, ok := table.First(subjects[i%len(subjects)]); ok {
			matched++
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "subjects/s")
	if matched == 0 {
		b.Fatal("nothing matched")
	}
}

// BenchmarkParseEnvelope validates one 351-byte DECNET envelope.
func BenchmarkParseEnvelope(b *testing.B) {
	body := []byte(`{"v":1,"id":"6513270e269e0d37f2a74de452e6b438","topic":"attacker.observed","type":"observed","ts":1750000000.0,"payload":{"attacker_ip":"203.0.113.45","decky":"decky-01","service":"ssh","event_type":"login_attempt","first_seen":"2025-06-15T08:00:00+00:00","attacker_uuid":"0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0","sensor":"edge-1"}}`)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := ParseEnvelope(body, "attacker.observed"); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "envelopes/s")
}
