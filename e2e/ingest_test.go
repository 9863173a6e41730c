package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redpanda-data/benthos/v4/public/service"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/decnet/decnet-stream/internal/topics"
)

// Raw events on several sensor topics are routed onto the hierarchy topics
// with the right keys (one IP, one partition); malformed ones reach the
// dead-letter topic with their reason and original bytes; and a consumer
// subscribing with NATS wildcards reads the attacker events back.
func TestIngestRoutesSensorEventsAndDeadLettersTheRest(t *testing.T) {
	addr := startBroker(t)
	valid, invalid := readEvents(t, "valid.jsonl"), readEvents(t, "invalid.jsonl")
	const copies = 20 // many events per IP, to see them share a partition

	prod := client(t, kgo.SeedBrokers(addr), kgo.AllowAutoTopicCreation())
	var recs []*kgo.Record
	for c := 0; c < copies; c++ {
		for i, l := range valid {
			recs = append(recs, &kgo.Record{
				Topic:   fmt.Sprintf("sensor.edge-%d", (c+i)%3),
				Value:   l.Event,
				Headers: []kgo.RecordHeader{{Key: "decnet_subject", Value: []byte(l.Subject)}},
			})
		}
	}
	for i, l := range invalid {
		recs = append(recs, &kgo.Record{
			Topic:   fmt.Sprintf("sensor.edge-%d", i%3),
			Value:   []byte(l.Raw),
			Headers: []kgo.RecordHeader{{Key: "decnet_subject", Value: []byte(l.Subject)}},
		})
	}
	if err := prod.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}

	runConfig(t, "config/streams/ingest.yaml", map[string]string{"KAFKA_SEED_BROKERS": addr})

	out := client(t, kgo.SeedBrokers(addr), kgo.ConsumeRegex(),
		kgo.ConsumeTopics(`^(attacker|decky|topology|credential|system)\..+`, `^decnet\.dlq$`),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.MetadataMinAge(50*time.Millisecond), kgo.MetadataMaxAge(200*time.Millisecond))
	got := consume(t, out, copies*len(valid)+len(invalid), 60*time.Second)

	wantTopic := map[string]string{
		"decky.decky-02.traffic": "decky.traffic", "topology.t-1.mutation.applied": "topology.mutation",
		"system.sniffer.health": "system.health",
	}
	partitionOfKey := map[string]int32{}
	routed, dead := 0, 0
	wantDead := map[string]string{}
	for _, l := range invalid {
		wantDead[l.Raw] = l.Expect
	}
	// Control commands never come from sensor topics: ingest refuses them.
	controls := 0
	for _, l := range valid {
		if topics.MustPattern("system.*.control").Match(l.Subject) {
			wantDead[string(l.Event)] = "no_route"
			controls++
		}
	}
	for _, r := range got {
		if r.Topic == "decnet.dlq" {
			dead++
			reason, ok := wantDead[string(r.Value)]
			if !ok {
				t.Errorf("unexpected dead letter %q", r.Value)
			} else if header(r, "decnet_error") != reason {
				t.Errorf("dead letter %q: decnet_error %q, want %q", r.Value, header(r, "decnet_error"), reason)
			}
			if header(r, "decnet_error_detail") == "" || header(r, "decnet_subject") == "" {
				t.Errorf("dead letter lacks its detail or subject: %v", r.Headers)
			}
			continue
		}
		routed++
		subject := header(r, "decnet_subject")
		want := subject
		if w, ok := wantTopic[subject]; ok {
			want = w
		}
		if r.Topic != want {
			t.Errorf("%s went to %s, want %s", subject, r.Topic, want)
		}
		var ev struct {
			Payload struct {
				IP string `json:"attacker_ip"`
			} `json:"payload"`
		}
		if err := json.Unmarshal(r.Value, &ev); err != nil {
			t.Fatalf("routed record is not the event: %v", err)
		}
		if strings.HasPrefix(subject, "attacker.") && string(r.Key) != ev.Payload.IP {
			t.Errorf("%s keyed %q, want %q", subject, r.Key, ev.Payload.IP)
		}
		k := r.Topic + "|" + string(r.Key)
		if p, seen := partitionOfKey[k]; seen && p != r.Partition && len(r.Key) > 0 {
			t.Errorf("key %s on partitions %d and %d", k, p, r.Partition)
		}
		partitionOfKey[k] = r.Partition
	}
	routedWant := copies * (len(valid) - controls)
	if routed != routedWant || dead != len(invalid)+copies*controls {
		t.Fatalf("routed %d (want %d), dead-lettered %d (want %d)", routed, routedWant, dead, len(invalid)+copies*controls)
	}

	// Subscribing the way DECNET's workers do: every attacker subject, by
	// wildcard, and nothing else.
	attackers := 0
	for _, l := range valid {
		if strings.HasPrefix(l.Subject, "attacker.") {
			attackers += copies
		}
	}
	seen := make(chan string, attackers+1)
	sb := service.NewStreamBuilder()
	must(t, sb.SetLoggerYAML("level: warn"))
	must(t, sb.AddInputYAML(fmt.Sprintf(`
kafka_franz:
  seed_brokers: [ %q ]
  subjects: [ "attacker.>" ]
  consumer_group: wildcard-reader
  metadata_max_age: 200ms
`, addr)))
	must(t, sb.AddConsumerFunc(func(_ context.Context, m *service.Message) error {
		topic, _ := m.MetaGet("kafka_topic")
		seen <- topic
		return nil
	}))
	stream, err := sb.Build()
	must(t, err)
	go func() { _ = stream.Run(context.Background()) }()
	defer func() { _ = stream.StopWithin(10 * time.Second) }()
	deadline := time.After(30 * time.Second)
	for i := 0; i < attackers; i++ {
		select {
		case topic := <-seen:
			if !strings.HasPrefix(topic, "attacker.") {
				t.Fatalf("subjects [attacker.>] delivered %s", topic)
			}
		case <-deadline:
			t.Fatalf("wildcard subscriber read %d of %d attacker events", i, attackers)
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
