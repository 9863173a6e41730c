package kafka

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redpanda-data/benthos/v4/public/service"
)

// A config as upstream's docs show the redpanda input and output, every
// advanced field spelt out, lints here.
func TestUpstreamRedpandaConfigLints(t *testing.T) {
	conf := `
input:
  redpanda:
    seed_brokers: [ "127.0.0.1:9092" ]
    client_id: redpanda-connect
    tls: { enabled: false, skip_cert_verify: false, enable_renegotiation: false, root_cas: "", root_cas_file: "", client_certs: [] }
    sasl:
      - { mechanism: SCRAM-SHA-256, username: u, password: p }
    metadata_max_age: 1m
    request_timeout_overhead: 10s
    conn_idle_timeout: 20s
    tcp: { connect_timeout: 0s, keep_alive: { idle: 15s, interval: 15s, count: 9 }, tcp_user_timeout: 0s }
    topics: [ attacker.observed ]
    regexp_topics_include: [ "^decky\\..*" ]
    regexp_topics_exclude: [ "^decky\\.internal$" ]
    rack_id: ""
    instance_id: ""
    rebalance_timeout: 45s
    session_timeout: 1m
    heartbeat_interval: 3s
    start_offset: committed
    fetch_max_bytes: 50MiB
    fetch_max_wait: 5s
    fetch_min_bytes: 1B
    fetch_max_partition_bytes: 1MiB
    transaction_isolation_level: read_committed
    consumer_group: cg
    commit_period: 5s
    partition_buffer_bytes: 1MB
    topic_lag_refresh_period: 5s
    max_yield_batch_bytes: 32KB
    auto_replay_nacks: true
output:
  redpanda:
    seed_brokers: [ "127.0.0.1:9092" ]
    client_id: redpanda-connect
    metadata_max_age: 1m
    request_timeout_overhead: 10s
    conn_idle_timeout: 20s
    topic: out
    key: ${! @kafka_key }
    partitioner: murmur2_hash
    metadata: { include_prefixes: [], include_patterns: [] }
    timestamp_ms: ${! timestamp_unix_milli() }
    max_in_flight: 256
    idempotent_write: true
    compression: snappy
    allow_auto_topic_creation: true
    timeout: 10s
    max_message_bytes: 1MiB
    broker_write_max_bytes: 100MiB
    batching: { count: 0, byte_size: 0, period: "", check: "" }
`
	if err := service.NewStreamBuilder().SetYAML(conf); err != nil {
		t.Fatalf("an upstream redpanda config does not lint: %v", err)
	}
	bad := strings.Replace(conf, "transaction_isolation_level: read_committed", "transaction_isolation_level: serializable", 1)
	if err := service.NewStreamBuilder().SetYAML(bad); err == nil {
		t.Fatal("an unknown isolation level linted")
	}
}

// redpanda → redpanda moves records by regular expression, leaves out the
// excluded topic, and stamps the records it writes.
func TestRedpandaInputAndOutputRun(t *testing.T) {
	addr := startBroker(t, "rp.a", "rp.b", "rp.skip", "rp.out")
	produce(t, addr, "rp.a", 0, 30)
	produce(t, addr, "rp.b", 30, 30)
	produce(t, addr, "rp.skip", 60, 30)
	sb := service.NewStreamBuilder()
	must(t, sb.SetYAML(fmt.Sprintf(`
input:
  redpanda:
    seed_brokers: [ %[1]q ]
    regexp_topics_include: [ "^rp\\.[a-z]+$" ]
    regexp_topics_exclude: [ "^rp\\.skip$", "^rp\\.out$" ]
    consumer_group: rp-group
    transaction_isolation_level: read_committed
    topic_lag_refresh_period: 1s
    tcp: { connect_timeout: 5s, keep_alive: { idle: 10s, interval: 5s, count: 3 }, tcp_user_timeout: 30s }
output:
  redpanda:
    seed_brokers: [ %[1]q ]
    tcp: { connect_timeout: 5s, tcp_user_timeout: 30s }
    topic: rp.out
    key: ${! @kafka_key }
    timestamp_ms: "1750000000123"
logger:
  level: warn
`, addr)))
	s, err := sb.Build()
	must(t, err)
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Run(context.Background()) }()
	t.Cleanup(func() { _ = s.StopWithin(20 * time.Second); <-done })

	got := consumeN(t, addr, "rp.out", 60, 30*time.Second)
	seen := map[int]bool{}
	for _, r := range got {
		ev := decode(t, r.Value)
		if ev.Seq >= 60 {
			t.Fatalf("record %d of the excluded topic was consumed", ev.Seq)
		}
		if r.Timestamp.UnixMilli() != 1750000000123 {
			t.Fatalf("timestamp %v, want the timestamp_ms given", r.Timestamp)
		}
		seen[ev.Seq] = true
	}
	if len(seen) != 60 {
		t.Fatalf("moved %d distinct records, want 60", len(seen))
	}
}
