package intel_processor

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/redpanda-data/benthos/v4/public/bloblang"
	_ "github.com/redpanda-data/benthos/v4/public/components/pure"
	"github.com/tidwall/gjson"
)

// shippedMapping is the Bloblang mapping config/pipeline.yaml used to build
// the enriched envelope before envelope() replaced it: the specification
// the Go version must meet, member for member.
const shippedMapping = `
let intel = this.intel
root = {
  "v": 1,
  "id": if $intel.version.or(0) > 0 {
    ($intel.attacker_ip + "/" + $intel.version.string()).hash("sha256").encode("hex").slice(0, 32)
  } else { uuid_v4().replace_all("-", "") },
  "topic": "attacker.intel.enriched",
  "type": "intel.enriched",
  "ts": $intel.cached_at.ts_unix_milli().catch(timestamp_unix_milli()) / 1000,
  "payload": $intel.without(
    "schema_version", "version",
    "greynoise_raw", "abuseipdb_raw", "feodo_raw", "threatfox_raw",
    "abuseipdb_blacklist_raw", "threatfox_export_raw", "spamhaus_drop_raw",
    "greynoise_queried_at", "abuseipdb_queried_at", "feodo_queried_at", "threatfox_queried_at",
    "abuseipdb_blacklist_queried_at", "threatfox_export_queried_at", "spamhaus_drop_queried_at",
    "greynoise_status", "abuseipdb_status", "feodo_status", "threatfox_status",
    "abuseipdb_blacklist_status", "threatfox_export_status", "spamhaus_drop_status",
    "carrier_topic", "carrier_partition", "carrier_offset").assign({
    "providers": $intel.provider_status.or({}).filter(kv -> kv.value == "ok" || kv.value == "stale").keys().sort(),
    "greynoise_tags": $intel.greynoise_tags.or([]),
    "abuseipdb_categories": $intel.abuseipdb_categories.or([]),
    "threatfox_threat_types": $intel.threatfox_threat_types.or([]),
    "threatfox_ioc_types": $intel.threatfox_ioc_types.or([]),
    "threatfox_malware_families": $intel.threatfox_malware_families.or([]),
  }),
}`

func decodeNumbers(t *testing.T, b []byte) any {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	return v
}

// unique fails when an object has a member twice (a decoder keeps the
// last, so comparing decoded values would not see it; DECNET's router
// refuses such an event).
func unique(t *testing.T, b []byte) {
	t.Helper()
	var walk func(v gjson.Result)
	walk = func(v gjson.Result) {
		if !v.IsObject() && !v.IsArray() {
			return
		}
		seen := map[string]bool{}
		v.ForEach(func(k, e gjson.Result) bool {
			if v.IsObject() {
				if seen[k.Str] {
					t.Errorf("member %q twice in %s", k.Str, b)
				}
				seen[k.Str] = true
			}
			walk(e)
			return true
		})
	}
	walk(gjson.ParseBytes(b))
}

// normalise makes numbers comparable whatever wrote them (1.0, 1, 1e0).
func normalise(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = normalise(e)
		}
	case []any:
		for i, e := range x {
			x[i] = normalise(e)
		}
	case json.Number:
		f, _ := x.Float64()
		return f
	}
	return v
}

// fullRow is a row as intel_enrich writes it with include_raw (and the
// attacker_uuid of the sighting put first).
var fullRow = `{"attacker_uuid":"6f1d2c3b","attacker_ip":"203.0.113.45","providers":["greynoise","abuseipdb","feodo","threatfox","spamhaus_drop"],"schema_version":2,"version":1796025600123456789,` +
	`"cached_at":"2026-11-30T08:00:00.123Z","expires_at":"2026-12-01T08:00:00Z","aggregate_verdict":"malicious",` +
	`"greynoise_classification":"malicious","greynoise_tags":["Mirai","<tag> & \"quoted\""],"greynoise_raw":"{\"ip\":\"203.0.113.45\"}",` +
	`"greynoise_queried_at":"2026-11-30T08:00:00Z","abuseipdb_score":87,"abuseipdb_categories":null,"abuseipdb_raw":null,` +
	`"feodo_listed":true,"feodo_malware_family":"QakBot","threatfox_listed":null,"threatfox_threat_types":null,` +
	`"provider_status":{"greynoise":"ok","abuseipdb":"rate_limited","feodo":"stale","threatfox":"covered","spamhaus_drop":"ok"},` +
	`"greynoise_status":"ok","abuseipdb_status":"rate_limited","feodo_status":"stale","threatfox_status":"covered",` +
	`"spamhaus_drop_listed":true,"spamhaus_drop_score":null,"spamhaus_drop_tags":["SBL123"],"spamhaus_drop_raw":"x",` +
	`"spamhaus_drop_queried_at":null,"spamhaus_drop_status":"ok","spamhaus_drop_verdict":"malicious",` +
	`"asn":64500,"as_org":"Example \u00e9","country":null,"carrier_topic":"attacker.intel.lookup","carrier_partition":3,"carrier_offset":42}`

// The envelope written in Go is, member for member, what the shipped
// Bloblang mapping made of the same row: DECNET's payload fields, the
// dropped bookkeeping, lists as [], the providers that answered, the row's
// identity as id and its cached_at as ts.
func TestEnvelopeIsTheShippedMappings(t *testing.T) {
	exe, err := bloblang.Parse(shippedMapping)
	if err != nil {
		t.Fatal(err)
	}
	rows := []string{
		// A full row, as intel_enrich writes it with include_raw (and the
		// attacker_uuid of the sighting put first).
		fullRow,
		// A small one: no lists at all, no provider answered.
		`{"attacker_ip":"2001:db8::1","version":7,"cached_at":"2026-11-30T08:00:00Z","aggregate_verdict":"unknown","provider_status":{"greynoise":"timeout"}}`,
	}
	now := time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC)
	for _, row := range rows {
		env := envelope([]byte(row), now)
		unique(t, env)
		got := decodeNumbers(t, env)
		want, err := exe.Query(map[string]any{"intel": decodeNumbers(t, []byte(row))})
		if err != nil {
			t.Fatal(err)
		}
		wantJSON, _ := json.Marshal(want)
		if g, w := normalise(got), normalise(decodeNumbers(t, wantJSON)); !reflect.DeepEqual(g, w) {
			gj, _ := json.Marshal(g)
			t.Errorf("row %s\nGo envelope: %s\nmapping:     %s", row, gj, wantJSON)
		}
	}
}

// A row written without its bookkeeping (include_raw: false) has no
// version, but its cached_at is the version: the same id. With neither, the
// id is random (32 hex characters) and the time now.
func TestEnvelopeWithoutAVersion(t *testing.T) {
	full := decodeNumbers(t, envelope([]byte(`{"attacker_ip":"203.0.113.9","version":1796025600123456789,"cached_at":"2026-11-30T08:00:00.123456789Z"}`), time.Now())).(map[string]any)
	lean := decodeNumbers(t, envelope([]byte(`{"attacker_ip":"203.0.113.9","cached_at":"2026-11-30T08:00:00.123456789Z"}`), time.Now())).(map[string]any)
	if full["id"] != lean["id"] {
		t.Errorf("ids %v with the version, %v from cached_at alone: want the same", full["id"], lean["id"])
	}
	now := time.Date(2026, 11, 30, 9, 0, 0, 500_000_000, time.UTC)
	a := decodeNumbers(t, envelope([]byte(`{"attacker_ip":"203.0.113.9"}`), now)).(map[string]any)
	b := decodeNumbers(t, envelope([]byte(`{"attacker_ip":"203.0.113.9"}`), now)).(map[string]any)
	if id, _ := a["id"].(string); len(id) != 32 || a["id"] == b["id"] {
		t.Errorf("ids %v and %v: want two random 32-character ids", a["id"], b["id"])
	}
	if ts := a["ts"].(json.Number).String(); ts != "1796029200.5" {
		t.Errorf("ts %s, want now", ts)
	}
}

// BenchmarkEnvelope is the envelope of one full row: written once per
// emitted row, so a storm of new attackers pays it per lookup.
func BenchmarkEnvelope(b *testing.B) {
	row, now := []byte(fullRow), time.Now()
	b.ReportAllocs()
	for b.Loop() {
		envelope(row, now)
	}
}
