package intel_processor

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"
	"github.com/redpanda-data/benthos/v4/public/service"
	"github.com/tidwall/gjson"

	"github.com/decnet/decnet-stream/internal/enrich"
	"github.com/decnet/decnet-stream/internal/fixtures"
	"github.com/decnet/decnet-stream/internal/providersim"
)

// fixtureProviders serves the shared recorded responses by scenario IP, as
// the four providers would answer, and counts requests per provider.
type fixtureProviders struct {
	*httptest.Server
	*fixtures.ProviderServer
}

func newFixtureProviders(t testing.TB) *fixtureProviders {
	ps := fixtures.NewProviderServer(fixtures.FS())
	srv := httptest.NewServer(ps.Handler())
	t.Cleanup(srv.Close)
	return &fixtureProviders{Server: srv, ProviderServer: ps}
}

func (fp *fixtureProviders) count(p string) int { return fp.Calls(p) }

func processorYAML(base, extra string) string {
	return fmt.Sprintf(`
allow_documentation_ranges_for_testing: true
max_wait: 10s
providers:
  - name: greynoise
    base_url: %[1]s
  - name: abuseipdb
    base_url: %[1]s
    api_key: test-abuseipdb-key
  - name: feodo
    url: %[1]s/ipblocklist.json
  - name: threatfox
    base_url: %[1]s
    api_key: test-threatfox-key
%[2]s`, base, extra)
}

func newTestProcessor(t testing.TB, yaml string) *processor {
	t.Helper()
	conf, err := spec().ParseYAML(yaml, nil)
	if err != nil {
		t.Fatal(err)
	}
	p, err := newProcessor(conf, service.MockResources())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close(context.Background()) })
	return p
}

func event(ip string) string {
	return fmt.Sprintf(`{"v":1,"id":"e","topic":"attacker.observed","type":"observed","ts":1750000000,"payload":{"attacker_ip":%s,"attacker_uuid":"u-1","decky":"decky-01"}}`, ip)
}

func msgAt(body string, offset int) *service.Message {
	m := service.NewMessage([]byte(body))
	m.MetaSetMut("kafka_topic", "attacker.observed")
	m.MetaSetMut("kafka_partition", 0)
	m.MetaSetMut("kafka_offset", offset)
	return m
}

func run(t testing.TB, p *processor, batch service.MessageBatch) service.MessageBatch {
	t.Helper()
	out, err := p.ProcessBatch(context.Background(), batch)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) == 0 {
		return nil
	}
	return out[0]
}

type intelView struct {
	AttackerIP       string            `json:"attacker_ip"`
	AttackerUUID     string            `json:"attacker_uuid"`
	AggregateVerdict string            `json:"aggregate_verdict"`
	Providers        []string          `json:"providers"`
	AbuseIPDBScore   *int              `json:"abuseipdb_score"`
	GreyNoiseClass   *string           `json:"greynoise_classification"`
	FeodoListed      *bool             `json:"feodo_listed"`
	FeodoFamily      *string           `json:"feodo_malware_family"`
	ThreatFoxListed  *bool             `json:"threatfox_listed"`
	ThreatFoxFams    []string          `json:"threatfox_malware_families"`
	Status           map[string]string `json:"provider_status"`
}

func intelOf(t testing.TB, m *service.Message) intelView {
	t.Helper()
	b, _ := m.AsBytes()
	var ev struct {
		Intel   *intelView     `json:"intel"`
		Payload map[string]any `json:"payload"`
	}
	if err := json.Unmarshal(b, &ev); err != nil || ev.Intel == nil || ev.Payload == nil {
		t.Fatalf("no intel in %s: %v", b, err)
	}
	return *ev.Intel
}

func meta(m *service.Message, k string) string {
	v, _ := m.MetaGet(k)
	return v
}

func TestEmitChangesEnrichesOncePerIP(t *testing.T) {
	fp := newFixtureProviders(t)
	p := newTestProcessor(t, processorYAML(fp.URL, ""))
	batch := service.MessageBatch{
		msgAt(event(`"203.0.113.45"`), 1),
		msgAt(event(`"203.0.113.45"`), 2), // a repeat sighting in the same batch
		msgAt(event(`"10.0.0.5"`), 3),
		msgAt(event(`"203.0.113.45/../admin"`), 4),
		msgAt(event(`"203.0.113.99"`), 5),
		msgAt(event(`"::ffff:198.51.100.23"`), 6),
	}
	out := run(t, p, batch)
	if len(out) != 5 {
		t.Fatalf("%d messages out, want 5 (the repeat dropped)", len(out))
	}
	bad := intelOf(t, out[0])
	if bad.AggregateVerdict != "malicious" || bad.AttackerUUID != "u-1" || *bad.AbuseIPDBScore != 100 || *bad.GreyNoiseClass != "malicious" ||
		!*bad.FeodoListed || *bad.FeodoFamily != "QakBot" || !*bad.ThreatFoxListed || len(bad.Providers) != 4 || bad.Status["greynoise"] != "ok" {
		t.Errorf("203.0.113.45: %+v", bad)
	}
	if meta(out[0], MetaVerdict) != "malicious" || meta(out[0], MetaCache) != "miss" {
		t.Errorf("metadata %s %s", meta(out[0], MetaVerdict), meta(out[0], MetaCache))
	}
	if meta(out[1], MetaSkipped) != "private" || out[1].GetError() != nil {
		t.Errorf("private address: skipped=%q err=%v", meta(out[1], MetaSkipped), out[1].GetError())
	}
	if meta(out[2], MetaError) != "invalid_ip" || out[2].GetError() == nil {
		t.Errorf("hostile IP string not refused: %q", meta(out[2], MetaError))
	}
	// DECNET's rules: Feodo listed (offline) is malicious.
	if v := intelOf(t, out[3]); v.AggregateVerdict != "malicious" {
		t.Errorf("203.0.113.99: %+v", v)
	}
	if v := intelOf(t, out[4]); v.AttackerIP != "198.51.100.23" || v.AggregateVerdict != "benign" {
		t.Errorf("mapped IPv4: %+v", v)
	}

	// The same records again (the batch was nacked downstream): the changes
	// are carried again. New sightings of the same IPs are dropped.
	again := run(t, p, service.MessageBatch{msgAt(event(`"203.0.113.45"`), 1), msgAt(event(`"203.0.113.45"`), 2)})
	if len(again) != 1 || intelOf(t, again[0]).AggregateVerdict != "malicious" {
		t.Fatalf("redelivery: %d out", len(again))
	}
	if later := run(t, p, service.MessageBatch{msgAt(event(`"203.0.113.45"`), 77), msgAt(event(`"203.0.113.99"`), 78)}); len(later) != 0 {
		t.Fatalf("repeat sightings emitted %d events", len(later))
	}
	for _, prov := range []string{"greynoise", "abuseipdb", "threatfox"} {
		if fp.count(prov) != 3 {
			t.Errorf("%s asked %d times for 3 unique IPs", prov, fp.count(prov))
		}
	}
	if fp.count("feodo") != 1 {
		t.Errorf("feodo feed fetched %d times", fp.count("feodo"))
	}
}

func TestEmitAllAnnotatesEveryEvent(t *testing.T) {
	fp := newFixtureProviders(t)
	p := newTestProcessor(t, processorYAML(fp.URL, "emit: all\ntarget: enrichment.intel"))
	batch := service.MessageBatch{msgAt(event(`"203.0.113.45"`), 1), msgAt(event(`"203.0.113.45"`), 2)}
	out := run(t, p, batch)
	if len(out) != 2 {
		t.Fatalf("%d out", len(out))
	}
	for _, m := range out {
		b, _ := m.AsBytes()
		var ev struct {
			Enrichment struct {
				Intel intelView `json:"intel"`
			} `json:"enrichment"`
		}
		if err := json.Unmarshal(b, &ev); err != nil || ev.Enrichment.Intel.AggregateVerdict != "malicious" {
			t.Fatalf("event %s", b)
		}
	}
	if meta(out[1], MetaCache) != "hit" {
		t.Errorf("second sighting: %s", meta(out[1], MetaCache))
	}
}

func TestConfigErrors(t *testing.T) {
	for _, yaml := range []string{
		"providers: []",
		"providers: [ { name: greynoise }, { name: greynoise } ]",
		"providers: [ { name: greynoise } ]\nnever_query: [ nonsense ]",
		"providers: [ { name: greynoise } ]\ntarget: ''",
	} {
		conf, err := spec().ParseYAML(yaml, nil)
		if err != nil {
			continue
		}
		if _, err := newProcessor(conf, service.MockResources()); err == nil {
			t.Errorf("accepted %q", yaml)
		}
	}
}

// An event that already has the target key gets it replaced, not doubled.
func TestExistingTargetIsReplaced(t *testing.T) {
	fp := newFixtureProviders(t)
	p := newTestProcessor(t, processorYAML(fp.URL, ""))
	body := `{"v":1,"id":"e","topic":"attacker.observed","ts":1,"intel":{"stale":true},"payload":{"attacker_ip":"203.0.113.45"}}`
	out := run(t, p, service.MessageBatch{msgAt(body, 1)})
	b, _ := out[0].AsBytes()
	if strings.Count(string(b), `"intel"`) != 1 || strings.Contains(string(b), "stale") {
		t.Fatalf("target not replaced: %s", b)
	}
	if v := intelOf(t, out[0]); v.AggregateVerdict != "malicious" {
		t.Fatalf("%+v", v)
	}
}

// The ip mapping sees the event as `this`, and priority reserves budget.
func TestIPMappingAndPriority(t *testing.T) {
	fp := newFixtureProviders(t)
	p := newTestProcessor(t, processorYAML(fp.URL, `ip: 'root = this.payload.src.ip'`+"\n"+`priority: 'root = this.payload.event_count'`))
	body := `{"v":1,"id":"e","topic":"attacker.observed","ts":1,"payload":{"src":{"ip":"203.0.113.45"},"event_count":42}}`
	out := run(t, p, service.MessageBatch{msgAt(body, 1)})
	if len(out) != 1 || intelOf(t, out[0]).AttackerIP != "203.0.113.45" {
		t.Fatalf("ip mapping: %d out", len(out))
	}
	if v, err := queryValue(out[0], p.priority); err != nil || toFloat(v) != 42 {
		t.Fatalf("priority mapping: %v %v", v, err)
	}
}

// Split in two stages: a sighting without a current row leaves as its
// lookup request (untouched, marked), later sightings of the IP do not; the
// request read back from the lookup topic is looked up and emits the row;
// its redelivery emits it again; sightings after that are hits, dropped.
func TestLookupTopicSplitsSightingsFromLookups(t *testing.T) {
	fp := newFixtureProviders(t)
	p := newTestProcessor(t, processorYAML(fp.URL, "lookup_topic: attacker.intel.lookup\nip_metadata: decnet_key"))
	sighting := func(off int) *service.Message {
		m := msgAt(event(`"203.0.113.45"`), off)
		m.MetaSetMut("decnet_key", "203.0.113.45")
		return m
	}
	out := run(t, p, service.MessageBatch{sighting(1), sighting(2)})
	if len(out) != 1 || meta(out[0], MetaLookup) != "request" {
		t.Fatalf("first sightings: %d out", len(out))
	}
	if b, _ := out[0].AsBytes(); string(b) != event(`"203.0.113.45"`) {
		t.Fatalf("the request changed the event: %s", b)
	}
	if fp.count("greynoise") != 0 {
		t.Fatal("a sighting looked its IP up")
	}
	request := func() *service.Message {
		m := sighting(1)
		m.MetaSetMut("kafka_topic", "attacker.intel.lookup")
		m.MetaSetMut("kafka_offset", 7)
		return m
	}
	out = run(t, p, service.MessageBatch{request()})
	if len(out) != 1 || intelOf(t, out[0]).AggregateVerdict != "malicious" || meta(out[0], MetaLookup) != "" {
		t.Fatalf("the lookup request: %d out", len(out))
	}
	if again := run(t, p, service.MessageBatch{request()}); len(again) != 1 {
		t.Fatal("the redelivered request did not emit its row again")
	}
	if later := run(t, p, service.MessageBatch{sighting(3)}); len(later) != 0 {
		t.Fatal("a sighting after the lookup was not a hit")
	}
	if fp.count("greynoise") != 1 {
		t.Fatalf("greynoise asked %d times", fp.count("greynoise"))
	}
}

func TestIPMetadataMustBeThere(t *testing.T) {
	fp := newFixtureProviders(t)
	p := newTestProcessor(t, processorYAML(fp.URL, "ip_metadata: decnet_key"))
	out := run(t, p, service.MessageBatch{msgAt(event(`"203.0.113.45"`), 1)})
	if len(out) != 1 || meta(out[0], MetaError) != "invalid_ip" {
		t.Fatalf("an event without decnet_key: %d out, %q", len(out), meta(out[0], MetaError))
	}
}

// A stricter verdict table in YAML: a former C2 (Feodo offline only) is
// suspicious, not malicious; and a table that cannot be meant fails.
func TestVerdictPolicyFromYAML(t *testing.T) {
	fp := newFixtureProviders(t)
	p := newTestProcessor(t, processorYAML(fp.URL, "verdicts:\n  feodo:\n    offline: suspicious\n  abuseipdb:\n    no_reports: unknown"))
	out := run(t, p, service.MessageBatch{msgAt(event(`"203.0.113.99"`), 1)})
	if v := intelOf(t, out[0]); v.AggregateVerdict != "suspicious" {
		t.Fatalf("203.0.113.99 under the stricter table: %s", v.AggregateVerdict)
	}
	for _, bad := range []string{"verdicts: { feodo: { offline: evil } }", "verdicts: { abuseipdb: { suspicious_at: 90, malicious_at: 80 } }"} {
		conf, err := spec().ParseYAML(processorYAML(fp.URL, bad), nil)
		if err == nil {
			_, err = newProcessor(conf, service.MockResources())
		}
		if err == nil {
			t.Errorf("accepted %s", bad)
		}
	}
}

// The bulk lists, skip_when, feed_dir and geoip as a user configures them:
// an IP on AbuseIPDB's blacklist and ThreatFox's export is answered by them,
// no per-IP call spent on it; an IP no list has is asked as before; every
// row carries its ASN and country; the lists' downloads are kept on disk.
func TestBulkListsSkipWhenAndGeoIP(t *testing.T) {
	sim, err := providersim.Start(fixtures.FS(), providersim.Config{AllowDocumentationRanges: true})
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	lists := providersim.DocumentationLists()
	listed := lists.Blacklist[0]
	unlisted := ""
	for i := 1; unlisted == ""; i++ {
		if ip := fmt.Sprint("203.0.113.", i); providersim.StoryOf(ip) == providersim.StoryUnseen {
			unlisted = ip
		}
	}
	dir := t.TempDir()
	mmdb := filepath.Join(dir, "asn.mmdb")
	tree, err := mmdbwriter.New(mmdbwriter.Options{DatabaseType: "GeoLite2-ASN", IncludeReservedNetworks: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, cidr := range []string{"203.0.113.0/24", "198.51.100.0/24", "192.0.2.0/24"} {
		_, n, _ := net.ParseCIDR(cidr)
		if err := tree.Insert(n, mmdbtype.Map{"autonomous_system_number": mmdbtype.Uint32(64500), "autonomous_system_organization": mmdbtype.String("Example Hosting"),
			"country": mmdbtype.Map{"iso_code": mmdbtype.String("NL")}}); err != nil {
			t.Fatal(err)
		}
	}
	f, _ := os.Create(mmdb)
	if _, err := tree.WriteTo(f); err != nil {
		t.Fatal(err)
	}
	f.Close()
	p := newTestProcessor(t, fmt.Sprintf(`
allow_documentation_ranges_for_testing: true
max_wait: 10s
feed_dir: %[2]s/feeds
geoip:
  files: [ %[3]q, "" ]
providers:
  - { name: greynoise, base_url: %[1]s, api_key: k, skip_when: &l [ abuseipdb_blacklist, threatfox_export, spamhaus_drop, feodo ] }
  - { name: abuseipdb, base_url: %[1]s, api_key: k, skip_when: *l }
  - { name: threatfox, base_url: %[1]s, api_key: k, skip_when: *l }
  - { name: feodo, url: %[1]s/ipblocklist.json }
  - { name: abuseipdb_blacklist, base_url: %[1]s, api_key: k }
  - { name: threatfox_export, url: %[1]s/export/json/ip-port/recent/, api_key: k }
  - { name: spamhaus_drop, urls: [ %[1]s/drop/drop_v4.json, %[1]s/drop/drop_v6.json ] }
`, sim.URL, dir, mmdb))
	out := run(t, p, service.MessageBatch{msgAt(event(fmt.Sprintf("%q", listed)), 1), msgAt(event(fmt.Sprintf("%q", unlisted)), 2)})
	if len(out) != 2 {
		t.Fatalf("%d events out", len(out))
	}
	var got [2]map[string]any
	for i, m := range out {
		b, _ := m.AsBytes()
		var ev struct{ Intel map[string]any }
		if err := json.Unmarshal(b, &ev); err != nil {
			t.Fatal(err)
		}
		got[i] = ev.Intel
	}
	status := func(i int, p string) any { return got[i]["provider_status"].(map[string]any)[p] }
	if got[0]["abuseipdb_blacklist_listed"] != true || got[0]["threatfox_export_listed"] != true || got[0]["aggregate_verdict"] != "malicious" ||
		status(0, "abuseipdb") != "covered" || status(0, "greynoise") != "covered" || status(0, "threatfox") != "covered" {
		t.Errorf("listed %s: %v", listed, got[0])
	}
	if got[1]["abuseipdb_blacklist_listed"] != false || got[1]["spamhaus_drop_listed"] != false || status(1, "abuseipdb") != "ok" {
		t.Errorf("unlisted %s: %v", unlisted, got[1])
	}
	for i := range got {
		if got[i]["asn"] != 64500.0 || got[i]["as_org"] != "Example Hosting" || got[i]["country"] != "NL" {
			t.Errorf("geoip of %v: %v %v %v", got[i]["attacker_ip"], got[i]["asn"], got[i]["as_org"], got[i]["country"])
		}
	}
	if n := sim.Counts(providersim.AbuseIPDB).Requests; n != 1 {
		t.Errorf("%d /check calls, want 1 (the unlisted IP)", n)
	}
	// A list is downloaded, never asked per IP: one download per part.
	for list, want := range map[string]int{providersim.ListAbuseIPDBBlacklist: 1, providersim.ListThreatFoxExport: 1, providersim.ListSpamhausDROP: 2} {
		if n := sim.Downloads(list); n != want {
			t.Errorf("%s: %d downloads for two lookups, want %d", list, n, want)
		}
	}
	for _, name := range []string{"abuseipdb_blacklist.feed", "threatfox_export.feed", "spamhaus_drop.feed", "spamhaus_drop.1.feed", "feodo.feed"} {
		if _, err := os.Stat(filepath.Join(dir, "feeds", name)); err != nil {
			t.Errorf("feed_dir: %v", err)
		}
	}
}

// With lookup_subject_metadata a lookup request names the subject it was
// sighted on — its own header when it came with one, else the topic it was
// read from — so the output writing it needs no mapping of its own.
func TestALookupRequestCarriesItsSubject(t *testing.T) {
	fp := newFixtureProviders(t)
	p := newTestProcessor(t, processorYAML(fp.URL, "lookup_topic: attacker.intel.lookup\nip_metadata: decnet_key\nlookup_subject_metadata: decnet_subject"))
	sighting := func(ip string, off int) *service.Message {
		m := msgAt(event(`"`+ip+`"`), off)
		m.MetaSetMut("decnet_key", ip)
		return m
	}
	fromTopic := sighting("203.0.113.45", 1) // msgAt's kafka_topic
	withHeader := sighting("198.51.100.7", 2)
	withHeader.MetaSetMut("decnet_subject", "attacker.scored")
	topic := meta(fromTopic, "kafka_topic")
	out := run(t, p, service.MessageBatch{fromTopic, withHeader})
	if len(out) != 2 {
		t.Fatalf("%d requests out, want 2", len(out))
	}
	if got := meta(out[0], "decnet_subject"); topic == "" || got != topic {
		t.Fatalf("a request without a subject header: decnet_subject %q, want its kafka_topic %q", got, topic)
	}
	if got := meta(out[1], "decnet_subject"); got != "attacker.scored" {
		t.Fatalf("a request with a subject header: decnet_subject %q, want attacker.scored", got)
	}
	if b, _ := out[0].AsBytes(); string(b) != event(`"203.0.113.45"`) {
		t.Fatalf("the request changed the event: %s", b)
	}
}

// An emitted row's message waits for both of its outputs, and a storm's
// lookups hold thousands of them: it keeps its body and its envelope, each
// no larger than its bytes (the envelope's buffer was sized for the whole
// row, raw answers included, for a fraction of it). The body's intel member
// is the row with the sighting's attacker_uuid first and, with include_raw,
// the record that carried it last.
func TestAnEmittedRowKeepsOnlyItsOwnBytes(t *testing.T) {
	p := newTestProcessor(t, feedOnlyYAML(t, "include_raw: true\nenvelope_metadata: intel_enriched_event"))
	out := run(t, p, service.MessageBatch{msgAt(event(`"45.0.0.1"`), 7)})
	if len(out) != 1 {
		t.Fatalf("%d messages out, want the row's", len(out))
	}
	body, err := out[0].AsBytes()
	if err != nil {
		t.Fatal(err)
	}
	v, _ := out[0].MetaGetMut("intel_enriched_event")
	env, _ := v.([]byte)
	if !json.Valid(env) || cap(body) != len(body) || cap(env) != len(env) {
		t.Fatalf("envelope valid: %v; body %d bytes in %d, envelope %d in %d", json.Valid(env), len(body), cap(body), len(env), cap(env))
	}
	intel := gjson.GetBytes(body, "intel")
	if !json.Valid(body) || !intel.IsObject() {
		t.Fatalf("body %s", body)
	}
	var keys []string
	intel.ForEach(func(k, _ gjson.Result) bool { keys = append(keys, k.Str); return true })
	if keys[0] != "attacker_uuid" || intel.Get("attacker_uuid").Str != "u-1" ||
		!slices.Equal(keys[len(keys)-3:], []string{"carrier_topic", "carrier_partition", "carrier_offset"}) || intel.Get("carrier_offset").Int() != 7 {
		t.Fatalf("intel member's keys %v (carrier offset %d)", keys, intel.Get("carrier_offset").Int())
	}
}

// The intel member is the row's object with the attacker_uuid put first and
// the carrier last, whichever of them there is, and valid JSON for an empty
// row too; the cached encoding it is built from is left as it was.
func TestAppendMember(t *testing.T) {
	c := &enrich.Carrier{Topic: "attacker.intel.lookup", Partition: 3, Offset: 42}
	for _, tc := range []struct {
		enc, uuid string
		c         *enrich.Carrier
		want      string
	}{
		{`{"a":1}`, "", nil, `{"a":1}`},
		{`{"a":1}`, "u-1", nil, `{"attacker_uuid":"u-1","a":1}`},
		{`{"a":1}`, "", c, `{"a":1,"carrier_topic":"attacker.intel.lookup","carrier_partition":3,"carrier_offset":42}`},
		{`{"a":1}`, `u"2`, c, `{"attacker_uuid":"u\"2","a":1,"carrier_topic":"attacker.intel.lookup","carrier_partition":3,"carrier_offset":42}`},
		{`{}`, "u-1", c, `{"attacker_uuid":"u-1","carrier_topic":"attacker.intel.lookup","carrier_partition":3,"carrier_offset":42}`},
		{`{}`, "u-1", nil, `{"attacker_uuid":"u-1"}`},
		{`{}`, "", c, `{"carrier_topic":"attacker.intel.lookup","carrier_partition":3,"carrier_offset":42}`},
		{`null`, "u-1", c, `null`},
	} {
		enc := []byte(tc.enc)
		got := appendMember([]byte("prefix:"), enc, tc.uuid, tc.c)
		if string(got) != "prefix:"+tc.want || string(enc) != tc.enc || !json.Valid(got[len("prefix:"):]) {
			t.Errorf("appendMember(%s, %q, %v) = %s (row now %s), want %s", tc.enc, tc.uuid, tc.c != nil, got, enc, tc.want)
		}
	}
}
