package topic_router

import (
	"context"
	"fmt"
	"testing"

	"github.com/redpanda-data/benthos/v4/public/service"
)

// BenchmarkRouteBatch routes batches of 500 attacker envelopes through the
// processor with the default routes: envelopes routed per second.
//
//	go test ./plugins/topic_router -run '^$' -bench RouteBatch -cpu 1
func BenchmarkRouteBatch(b *testing.B) {
	r := newTestRouter(b, `{}`)
	batch := make(service.MessageBatch, 500)
	for i := range batch {
		body := fmt.Sprintf(`{"v":1,"id":"6513270e269e0d37f2a74de452e6b%03d","topic":"attacker.observed","type":"observed","ts":1750000000.0,"payload":{"attacker_ip":"203.0.113.%d","decky":"decky-01","service":"ssh","event_type":"login_attempt","first_seen":"2025-06-15T08:00:00+00:00"}}`, i, i%250)
		batch[i] = message("attacker.observed", body)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		out, err := r.ProcessBatch(context.Background(), batch)
		if err != nil || len(out[0]) != len(batch) || out[0][0].GetError() != nil {
			b.Fatal("routing failed", err)
		}
	}
	b.ReportMetric(float64(b.N*len(batch))/b.Elapsed().Seconds(), "envelopes/s")
}
