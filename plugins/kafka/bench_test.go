package kafka

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"testing"
	"time"

	"github.com/redpanda-data/benthos/v4/public/service"
	"github.com/twmb/franz-go/pkg/kgo"
)

var benchRecords = flag.Int("bench.records", 200_000, "records moved per benchmark iteration")

// BenchmarkFranzToFranz moves the same records through kafka_franz →
// kafka_franz and, in the same run on the same broker, through a bare
// franz-go consume-and-produce loop: the ceiling for any stage that reads
// and writes every record. It reports both rates and their ratio.
//
//	go test ./plugins/kafka -run '^$' -bench FranzToFranz -benchtime 1x
func BenchmarkFranzToFranz(b *testing.B) {
	n := *benchRecords
	addr := startBroker(b, "bench.in")
	value := bytes.Repeat([]byte("x"), 351) // a DECNET envelope's size
	produceRaw(b, addr, "bench.in", n, value)

	var bare, ours, noReplay time.Duration
	for i := 0; i < b.N; i++ {
		bare += bareLoop(b, addr, "bench.in", fmt.Sprintf("bare.out.%d", i), n)
		ours += pipelineRun(b, addr, "bench.in", fmt.Sprintf("ours.out.%d", i), n, fmt.Sprintf("bench-%d", i), "")
		noReplay += pipelineRun(b, addr, "bench.in", fmt.Sprintf("noreplay.out.%d", i), n, fmt.Sprintf("bench-nr-%d", i), "  auto_replay_nacks: false")
	}
	rate := func(d time.Duration) float64 { return float64(n*b.N) / d.Seconds() }
	b.ReportMetric(rate(bare), "bare_rec/s")
	b.ReportMetric(rate(ours), "kafka_franz_rec/s")
	b.ReportMetric(rate(ours)/rate(bare), "ratio")
	b.ReportMetric(rate(noReplay)/rate(bare), "ratio_no_replay")
	b.ReportMetric(0, "ns/op")
}

func produceRaw(b *testing.B, addr, topic string, n int, value []byte) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.MaxBufferedRecords(100000), kgo.ProducerBatchCompression(kgo.SnappyCompression()))
	must(b, err)
	defer cl.Close()
	for i := 0; i < n; i++ {
		cl.Produce(context.Background(), &kgo.Record{Topic: topic, Key: []byte(fmt.Sprintf("203.0.113.%d", i%250)), Value: value}, func(_ *kgo.Record, err error) {
			if err != nil {
				b.Error(err)
			}
		})
	}
	must(b, cl.Flush(context.Background()))
}

// bareLoop reads n records and writes each to out, one ProduceSync per poll,
// which is what an at-least-once stage must do at minimum.
func bareLoop(b *testing.B, addr, in, out string, n int) time.Duration {
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumeTopics(in),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.MaxBufferedRecords(100000), kgo.AllowAutoTopicCreation(),
		kgo.ProducerBatchCompression(kgo.SnappyCompression()))
	must(b, err)
	defer cl.Close()
	start := time.Now()
	moved := 0
	for moved < n {
		fs := cl.PollRecords(context.Background(), maxPollRecords)
		recs := make([]*kgo.Record, 0, fs.NumRecords())
		fs.EachRecord(func(r *kgo.Record) {
			recs = append(recs, &kgo.Record{Topic: out, Key: r.Key, Value: r.Value})
		})
		must(b, cl.ProduceSync(context.Background(), recs...).FirstErr())
		moved += len(recs)
	}
	return time.Since(start)
}

// pipelineRun runs kafka_franz → kafka_franz as a user would configure it
// and times it until the output topic holds n records.
func pipelineRun(b *testing.B, addr, in, out string, n int, group, inputExtra string) time.Duration {
	sb := service.NewStreamBuilder()
	must(b, sb.SetLoggerYAML("level: warn"))
	must(b, sb.AddInputYAML(inputYAML(addr, in, group, inputExtra)))
	must(b, sb.AddOutputYAML(fmt.Sprintf(`
kafka_franz:
  seed_brokers: [ %q ]
  topic: %s
  key: ${! @kafka_key }
`, addr, out)))
	sb.SetThreads(2)
	s, err := sb.Build()
	must(b, err)

	counter, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumeTopics(out),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.AllowAutoTopicCreation())
	must(b, err)
	defer counter.Close()

	start := time.Now()
	go func() { _ = s.Run(context.Background()) }()
	seen := 0
	for seen < n {
		seen += counter.PollFetches(context.Background()).NumRecords()
	}
	d := time.Since(start)
	must(b, s.StopWithin(10*time.Second))
	if seen != n {
		b.Fatalf("output holds %d records, want %d", seen, n)
	}
	return d
}
