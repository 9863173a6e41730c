package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/decnet/decnet-stream/internal/chserver"
	"github.com/decnet/decnet-stream/internal/chtest"
)

// The shipped pipeline with its bulk lists and an operator's MMDB file: an
// attacker a bulk list has is answered by it, no per-IP call spent on it
// (covered); one no list has is asked as before; every row and event
// carries the ASN and country; the attacker_intel row holds the lists'
// columns.
func TestShippedPipelineAnswersListedAttackersFromBulkLists(t *testing.T) {
	addr := startBroker(t)
	// 203.0.113.200: AbuseIPDB's blacklist and ThreatFox's export;
	// 198.51.100.77: the blacklist; 192.0.2.200: in DROP's 192.0.2.128/25;
	// 192.0.2.77: on no list.
	ips := []string{"203.0.113.200", "198.51.100.77", "192.0.2.200", "192.0.2.77"}
	var in strings.Builder
	for i := 0; i < 40; i++ {
		ip := ips[i%len(ips)]
		fmt.Fprintf(&in, "%s|{\"v\":1,\"id\":\"l%d\",\"topic\":\"attacker.observed\",\"type\":\"observed\",\"ts\":1750000000,\"payload\":{\"attacker_ip\":%q}}\n", ip, i, ip)
	}
	kcat(t, in.String(), "-P", "-b", addr, "-t", "attacker.observed", "-K", "|")

	mmdb := filepath.Join(t.TempDir(), "GeoLite2-ASN.mmdb")
	tree, err := mmdbwriter.New(mmdbwriter.Options{DatabaseType: "GeoLite2-ASN", IncludeReservedNetworks: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, cidr := range []string{"203.0.113.0/24", "198.51.100.0/24", "192.0.2.0/24"} {
		_, n, _ := net.ParseCIDR(cidr)
		if err := tree.Insert(n, mmdbtype.Map{"autonomous_system_number": mmdbtype.Uint32(64496), "autonomous_system_organization": mmdbtype.String("Documentation AS")}); err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.Create(mmdb)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tree.WriteTo(f); err != nil {
		t.Fatal(err)
	}
	f.Close()

	env, ps := pipelineEnv(t, addr)
	env["GEOIP_ASN_FILE"] = mmdb
	chSrv := chtest.Start(t)
	env["CLICKHOUSE_DSN"] = chSrv.DSN()
	runConfigServing(t, "config/pipeline.yaml", env)

	out := client(t, kgo.SeedBrokers(addr), kgo.ConsumeTopics("attacker.intel.enriched"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	type payload struct {
		IP      string            `json:"attacker_ip"`
		Verdict *string           `json:"aggregate_verdict"`
		Status  map[string]string `json:"provider_status"`
		ASN     *int              `json:"asn"`
		ASOrg   *string           `json:"as_org"`
		Black   *bool             `json:"abuseipdb_blacklist_listed"`
		Export  *bool             `json:"threatfox_export_listed"`
		DROP    *bool             `json:"spamhaus_drop_listed"`
		DROPTag []string          `json:"spamhaus_drop_tags"`
		Raw     *string           `json:"spamhaus_drop_raw"`
	}
	got := map[string]payload{}
	for _, r := range consume(t, out, len(ips), 60*time.Second) {
		var ev struct{ Payload payload }
		if err := json.Unmarshal(r.Value, &ev); err != nil {
			t.Fatal(err)
		}
		got[ev.Payload.IP] = ev.Payload
	}
	covered := map[string]bool{"203.0.113.200": true, "198.51.100.77": true, "192.0.2.200": true}
	for _, ip := range ips {
		p := got[ip]
		for _, prov := range []string{"greynoise", "abuseipdb", "threatfox"} {
			want := map[bool]string{true: "covered", false: "ok"}[covered[ip]]
			if p.Status[prov] != want {
				t.Errorf("%s: %s %q, want %q", ip, prov, p.Status[prov], want)
			}
		}
		if covered[ip] && (p.Verdict == nil || *p.Verdict != "malicious") {
			t.Errorf("%s: listed, verdict %v", ip, p.Verdict)
		}
		if p.ASN == nil || *p.ASN != 64496 || p.ASOrg == nil || *p.ASOrg != "Documentation AS" || p.Raw != nil {
			t.Errorf("%s: asn %v org %v, raw in the event %v", ip, p.ASN, p.ASOrg, p.Raw)
		}
	}
	if p := got["203.0.113.200"]; p.Black == nil || !*p.Black || p.Export == nil || !*p.Export || p.DROP == nil || *p.DROP {
		t.Errorf("203.0.113.200: blacklist %v export %v drop %v", p.Black, p.Export, p.DROP)
	}
	if p := got["192.0.2.200"]; p.DROP == nil || !*p.DROP || strings.Join(p.DROPTag, ",") != "SBL000001" {
		t.Errorf("192.0.2.200: drop %v %v", p.DROP, p.DROPTag)
	}
	// One per-IP call per provider: the attacker no list has.
	if g, a, tf := ps.Calls("greynoise"), ps.Calls("abuseipdb"), ps.Calls("threatfox"); g != 1 || a != 1 || tf != 1 {
		t.Errorf("per-IP calls: greynoise %d, abuseipdb %d, threatfox %d; want 1 each", g, a, tf)
	}
	var rows [][]string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		rows, err = chserver.Query(context.Background(), chSrv.DSN(),
			"SELECT attacker_ip, abuseipdb_blacklist_status, threatfox_export_listed, spamhaus_drop_listed, spamhaus_drop_tags, abuseipdb_status, asn FROM attacker_intel FINAL ORDER BY attacker_ip")
		if err == nil && len(rows) >= len(ips) {
			break
		}
	}
	want := "192.0.2.200 ok 0 1 [SBL000001] covered 64496|192.0.2.77 ok 0 0 [] ok 64496|198.51.100.77 ok 0 0 [] covered 64496|203.0.113.200 ok 1 0 [] covered 64496"
	var gotRows []string
	for _, r := range rows {
		gotRows = append(gotRows, strings.Join(r, " "))
	}
	if strings.Join(gotRows, "|") != want {
		t.Errorf("attacker_intel:\n%s\nwant\n%s", strings.Join(gotRows, "\n"), strings.ReplaceAll(want, "|", "\n"))
	}
}
