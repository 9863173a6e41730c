package e2e

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/decnet/decnet-stream/internal/bus/bustest"
	"github.com/decnet/decnet-stream/internal/chtest"
)

// startBus serves DECNET's bus protocol on a short socket path (a Unix
// socket's path must fit in 108 bytes).
func startBus(t *testing.T) *bustest.Server {
	t.Helper()
	dir, err := os.MkdirTemp("", "bus")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	b, err := bustest.Start(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
}

// waitFor polls cond until it holds, failing after within.
func waitFor(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(within); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// nextEvent waits for a client's publication on topic.
func nextEvent(t *testing.T, watch <-chan bustest.Event, topic string, within time.Duration) bustest.Event {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case ev := <-watch:
			if ev.Topic == topic {
				return ev
			}
		case <-deadline:
			t.Fatalf("nothing published on %s", topic)
		}
	}
}

// endOffsets sums the end offsets of topic (0 when it was never made).
func endOffsets(t *testing.T, adm *kadm.Client, topic string) int64 {
	t.Helper()
	ends, err := adm.ListEndOffsets(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	n := int64(0)
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err == nil {
			n += max(o.Offset, 0)
		}
	})
	return n
}

// DECNET's payload for attacker.intel.enriched (wire facts §5).
type decnetEnriched struct {
	AttackerIP        string   `json:"attacker_ip"`
	AggregateVerdict  *string  `json:"aggregate_verdict"`
	Providers         []string `json:"providers"`
	AbuseIPDBScore    *int     `json:"abuseipdb_score"`
	AbuseIPDBCats     []int    `json:"abuseipdb_categories"`
	GreyNoiseClass    *string  `json:"greynoise_classification"`
	GreyNoiseTags     []string `json:"greynoise_tags"`
	FeodoListed       *bool    `json:"feodo_listed"`
	ThreatFoxListed   *bool    `json:"threatfox_listed"`
	ThreatFoxFamilies []string `json:"threatfox_malware_families"`
}

// A DECNET host's bus feeds the Kafka pipeline through the edge forwarder,
// and the enriched events come back onto the bus with DECNET's payload and
// verdicts; a bus restart mid-run costs nothing that was published after
// it, the stage's own heartbeat is not forwarded, and the newer topic roots
// route instead of being refused.
func TestDECNETBusToKafkaAndBack(t *testing.T) {
	bus := startBus(t)
	addr := startBroker(t)
	watch := bus.Watch()

	runConfig(t, "config/streams/decnet/edge.yaml", map[string]string{"DECNET_BUS_SOCKET": bus.Path, "KAFKA_SEED_BROKERS": addr})
	env, _ := pipelineEnv(t, addr)
	env["CLICKHOUSE_DSN"] = chtest.Start(t).DSN()
	env["DECNET_BUS_PUBLISH"], env["DECNET_BUS_SOCKET"] = "true", bus.Path
	runConfig(t, "config/pipeline.yaml", env)
	runConfig(t, "config/streams/decnet/heartbeat.yaml", map[string]string{"DECNET_BUS_SOCKET": bus.Path, "HEARTBEAT_INTERVAL": "200ms"})
	subscribed := func() bool {
		return bus.Subscribers("attacker.observed") == 1 && bus.Subscribers("identity.formed") == 1
	}
	waitFor(t, "the edge forwarder's subscriptions", 30*time.Second, subscribed)

	// The workers panel: the heartbeat under DECNET's registered name.
	var hb struct {
		Type    string `json:"type"`
		Payload struct {
			Worker   string         `json:"worker"`
			TS       float64        `json:"ts"`
			Counters map[string]any `json:"counters"`
		} `json:"payload"`
	}
	if err := json.Unmarshal(nextEvent(t, watch, "system.enrich.health", 30*time.Second).Envelope, &hb); err != nil ||
		hb.Type != "health" || hb.Payload.Worker != "enrich" || hb.Payload.TS == 0 || hb.Payload.Counters == nil {
		t.Fatalf("heartbeat %+v: %v", hb, err)
	}

	// DECNET's verdict rules for the recorded fixtures (wire facts §6).
	want := map[string]string{"203.0.113.45": "malicious", "203.0.113.99": "malicious", "198.51.100.23": "benign",
		"198.51.100.200": "malicious", "192.0.2.77": "benign"}
	ips := []string{"203.0.113.45", "203.0.113.99", "198.51.100.23", "198.51.100.200", "192.0.2.77"}
	observed := func(ip string) {
		bus.Publish("attacker.observed", "observed", json.RawMessage(fmt.Sprintf(
			`{"attacker_ip":%q,"decky":"decky-01","service":"ssh","event_type":"connect","first_seen":"2026-11-29T10:00:00+00:00"}`, ip)))
	}
	got := map[string]decnetEnriched{}
	receive := func(n int) {
		for range n {
			ev := nextEvent(t, watch, "attacker.intel.enriched", 60*time.Second)
			var env struct {
				Type    string          `json:"type"`
				Payload json.RawMessage `json:"payload"`
			}
			var p decnetEnriched
			if err := json.Unmarshal(ev.Envelope, &env); err != nil || env.Type != "intel.enriched" || json.Unmarshal(env.Payload, &p) != nil {
				t.Fatalf("enriched event on the bus: %s", ev.Envelope)
			}
			if p.AbuseIPDBCats == nil || p.GreyNoiseTags == nil || p.ThreatFoxFamilies == nil || p.Providers == nil {
				t.Errorf("lists DECNET's consumers iterate are missing or null: %s", env.Payload)
			}
			got[p.AttackerIP] = p
		}
	}

	bus.Publish("system.enrich.health", "health", json.RawMessage(`{"worker":"enrich","ts":1}`)) // our own: not forwarded
	bus.Publish("identity.formed", "formed", json.RawMessage(`{"attacker_ip":"203.0.113.45","identity_id":"i-1"}`))
	for _, ip := range ips[:3] {
		observed(ip)
	}
	receive(3)

	// The bus restarts with no memory: the edge reconnects and subscribes
	// again, the pipeline's publisher reconnects on its next event.
	if err := bus.Restart(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the edge forwarder to subscribe again", 30*time.Second, subscribed)
	for _, ip := range ips[3:] {
		observed(ip)
	}
	receive(2)

	for ip, v := range want {
		p, ok := got[ip]
		if !ok || p.AggregateVerdict == nil || *p.AggregateVerdict != v {
			t.Errorf("%s: enriched on the bus %+v, want verdict %s", ip, p, v)
		}
	}
	// Every provider that answered, the bulk lists too (none lists it).
	if p := got["203.0.113.45"]; !slices.Equal(p.Providers, []string{"abuseipdb", "abuseipdb_blacklist", "feodo", "greynoise", "spamhaus_drop", "threatfox", "threatfox_export"}) ||
		p.FeodoListed == nil || !*p.FeodoListed || p.AbuseIPDBScore == nil || *p.AbuseIPDBScore != 100 {
		t.Errorf("203.0.113.45 on the bus: %+v", p)
	}

	cl := client(t, kgo.SeedBrokers(addr), kgo.ConsumeTopics("identity.formed"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if r := consume(t, cl, 1, 30*time.Second)[0]; string(r.Key) != "203.0.113.45" || header(r, "decnet_subject") != "identity.formed" {
		t.Errorf("identity.formed in Kafka: key %s, headers %v", r.Key, r.Headers)
	}
	adm := kadm.NewClient(cl)
	for _, topic := range []string{"system.health", "system.enrich.health", "decnet.dlq"} {
		if n := endOffsets(t, adm, topic); n != 0 {
			t.Errorf("%s holds %d records from the bus, want none", topic, n)
		}
	}
}

// sign is DECNET's webhook signature: HMAC-SHA256 of the exact body.
func sign(secret string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// DECNET's webhook worker posts to the signed ingress: a signed event is
// forwarded once (ts as DECNET's ISO string, routed by its topic), however
// often DECNET retries it; a wrong secret, an altered body or a stale event
// is refused with 401 and nothing reaches Kafka.
func TestWebhookForwardsSignedEventsOnce(t *testing.T) {
	addr := startBroker(t)
	listen := freePort(t)
	const secret = "s3cret-webhook"
	runConfig(t, "config/streams/decnet/webhook.yaml", map[string]string{
		"KAFKA_SEED_BROKERS": addr, "DECNET_WEBHOOK_ADDRESS": listen, "DECNET_WEBHOOK_SECRET": secret})
	url := "http://" + listen + "/decnet/webhook"
	waitFor(t, "the webhook endpoint", 30*time.Second, func() bool {
		r, err := http.Get(url)
		if err == nil {
			r.Body.Close()
		}
		return err == nil
	})

	// As DECNET serializes it: sorted keys, no spaces, ts an ISO string.
	event := func(id, topic string, ts time.Time, payload string) []byte {
		return []byte(fmt.Sprintf(`{"id":%q,"payload":%s,"topic":%q,"ts":%q,"type":"observed","v":1}`,
			id, payload, topic, ts.UTC().Format("2006-01-02T15:04:05.000000+00:00")))
	}
	post := func(body []byte, signature string) int {
		req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("User-Agent", "decnet-webhook/1.0")
		req.Header.Set("X-DECNET-Signature", signature)
		req.Header.Set("X-DECNET-Timestamp", fmt.Sprint(time.Now().Unix()))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}

	now := time.Now()
	good := event("0a1b2c3d4e5f60718293a4b5c6d7e8f9", "attacker.observed", now, `{"attacker_ip":"203.0.113.45","decky":"decky-01","service":"ssh"}`)
	altered := bytes.Replace(good, []byte("203.0.113.45"), []byte("203.0.113.46"), 1)
	stale := event("ffeeddccbbaa99887766554433221100", "attacker.observed", now.Add(-2*time.Hour), `{"attacker_ip":"203.0.113.47"}`)
	for _, c := range []struct {
		name string
		body []byte
		sig  string
		want int
	}{
		{"wrong secret", good, sign("not-the-secret", good), http.StatusUnauthorized},
		{"altered body", altered, sign(secret, good), http.StatusUnauthorized},
		{"no signature", good, "", http.StatusUnauthorized},
		{"stale event", stale, sign(secret, stale), http.StatusUnauthorized},
		{"signed", good, sign(secret, good), http.StatusOK},
		{"DECNET's retry", good, sign(secret, good), http.StatusOK},
		{"a replay", good, sign(secret, good), http.StatusOK},
	} {
		if got := post(c.body, c.sig); got != c.want {
			t.Errorf("%s: %d, want %d", c.name, got, c.want)
		}
	}
	decky := event("11111111111111111111111111111111", "decky.decky-01.traffic", now, `{"bytes":120}`)
	if got := post(decky, sign(secret, decky)); got != http.StatusOK {
		t.Fatalf("a decky event: %d", got)
	}

	// 200 means Kafka has it: what is there now is all there will be.
	adm := kadm.NewClient(client(t, kgo.SeedBrokers(addr)))
	if n := endOffsets(t, adm, "attacker.observed"); n != 1 {
		t.Errorf("attacker.observed holds %d events, want the signed one once", n)
	}
	if n := endOffsets(t, adm, "decky.traffic"); n != 1 {
		t.Errorf("decky.traffic holds %d events, want 1", n)
	}
	if n := endOffsets(t, adm, "decnet.dlq"); n != 0 {
		t.Errorf("decnet.dlq holds %d events, want none", n)
	}
	cl := client(t, kgo.SeedBrokers(addr), kgo.ConsumeTopics("attacker.observed"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if r := consume(t, cl, 1, 30*time.Second)[0]; !bytes.Equal(r.Value, good) || string(r.Key) != "203.0.113.45" {
		t.Errorf("forwarded %s (key %s), want the signed bytes unchanged", r.Value, r.Key)
	}
}
