package clickhouse

import (
	"context"
	"flag"
	"testing"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/redpanda-data/benthos/v4/public/service"
	"github.com/tidwall/gjson"

	"github.com/decnet/decnet-stream/internal/chtest"
)

var benchRows = flag.Int("bench.rows", 100_000, "rows inserted per benchmark iteration")

// BenchmarkClickHouseOutput inserts the same attacker_intel rows through the
// clickhouse output (args_mapping from each message, conversion, one INSERT
// per 10,000-row batch) and, in the same run on the same server, through a
// bare clickhouse-go loop appending already-typed rows: the ceiling.
//
//	go test ./plugins/clickhouse -run '^$' -bench ClickHouseOutput -benchtime 1x
func BenchmarkClickHouseOutput(b *testing.B) {
	srv := chtest.Start(b)
	o := newTestOutput(b, srv.DSN(), "")
	ctx := context.Background()
	n, chunk := *benchRows, 10_000

	msgs := make(service.MessageBatch, n)
	for i := range msgs {
		msgs[i] = row(ipN(i), "malicious", 1)
	}
	// The bare loop's rows: what the output's conversion produces, made once.
	exec := msgs.BloblangExecutor(o.mapping)
	typed := make([][]any, n)
	for i := range typed {
		r, err := o.row(exec, msgs, i, o.convs, make([]gjson.Result, len(o.columns)))
		if err != nil {
			b.Fatal(err)
		}
		typed[i] = r
	}
	opts, _ := ch.ParseDSN(srv.DSN())
	opts.Compression = &ch.Compression{Method: ch.CompressionLZ4}
	conn, err := ch.Open(opts)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()

	var bare, ours time.Duration
	for it := 0; it < b.N; it++ {
		start := time.Now()
		for s := 0; s < n; s += chunk {
			if err := o.send(ctx, conn, o.insert, typed[s:min(s+chunk, n)]); err != nil {
				b.Fatal(err)
			}
		}
		bare += time.Since(start)

		start = time.Now()
		for s := 0; s < n; s += chunk {
			if err := o.WriteBatch(ctx, msgs[s:min(s+chunk, n)]); err != nil {
				b.Fatal(err)
			}
		}
		ours += time.Since(start)
	}
	rate := func(d time.Duration) float64 { return float64(n*b.N) / d.Seconds() }
	b.ReportMetric(rate(bare), "bare_rows/s")
	b.ReportMetric(rate(ours), "output_rows/s")
	b.ReportMetric(rate(ours)/rate(bare), "ratio")
	b.ReportMetric(0, "ns/op")
}
