package chschema

import (
	"slices"
	"strings"
	"testing"
)

// These check the rendering logic; whether a server accepts what is
// rendered is checked on the real servers (plugins/clickhouse: 18.16 here,
// and a current engine with -tags chdb).

func TestColumnsFollowTheServerVersion(t *testing.T) {
	for _, tc := range []struct {
		version          string
		lowCard, ttlable bool
	}{
		{"18.16.1", false, false},
		{"19.3.4", true, false},
		{"19.6.2.11", true, true},
		{"26.5.1.1", true, true},
	} {
		v, err := ParseVersion(tc.version)
		if err != nil {
			t.Fatal(err)
		}
		stmts, err := CreateStatements(Options{Table: "attacker_intel", RetentionDays: 30}, v)
		if err != nil {
			t.Fatal(err)
		}
		ddl := stmts[0]
		if strings.Contains(ddl, "LowCardinality") != tc.lowCard || strings.Contains(ddl, "TTL expires_at") != tc.ttlable {
			t.Errorf("%s: LowCardinality %v TTL %v in\n%s", tc.version, strings.Contains(ddl, "LowCardinality"), strings.Contains(ddl, "TTL"), ddl)
		}
		if strings.Contains(ddl, "Nullable(LowCardinality") {
			t.Errorf("%s: Nullable around LowCardinality, which current servers refuse:\n%s", tc.version, ddl)
		}
		for _, c := range AttackerIntelColumns {
			if !strings.Contains(ddl, "\n    "+c+" ") {
				t.Errorf("%s: column %s missing from the DDL", tc.version, c)
			}
		}
	}
	if _, err := ParseVersion("banana"); err == nil {
		t.Error("bad version accepted")
	}
	if _, err := CreateStatements(Options{Table: "x; DROP TABLE y"}, Version{18, 16}); err == nil {
		t.Error("an injected table name was accepted")
	}
	if _, err := CreateStatements(Options{Table: "t", Cluster: "c' --"}, Version{18, 16}); err == nil {
		t.Error("an injected cluster name was accepted")
	}
}

func TestRowsAreKeptUnlessRetentionIsSet(t *testing.T) {
	stmts, _ := CreateStatements(Options{Table: "attacker_intel"}, Version{26, 5})
	if strings.Contains(stmts[0], "TTL") {
		t.Errorf("a TTL without retention:\n%s", stmts[0])
	}
}

func TestClusterRendersReplicatedShardsBehindADistributedTable(t *testing.T) {
	stmts, err := CreateStatements(Options{Table: "intel.attacker_intel", Cluster: "decnet"}, Version{26, 5})
	if err != nil {
		t.Fatal(err)
	}
	if len(stmts) != 2 {
		t.Fatalf("want the shard table and the distributed table, got %d statements", len(stmts))
	}
	for _, want := range []string{"CREATE TABLE IF NOT EXISTS intel.attacker_intel_local ON CLUSTER decnet", "ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/intel.attacker_intel_local', '{replica}', version)"} {
		if !strings.Contains(stmts[0], want) {
			t.Errorf("shard table lacks %q:\n%s", want, stmts[0])
		}
	}
	if want := "CREATE TABLE IF NOT EXISTS intel.attacker_intel ON CLUSTER decnet AS intel.attacker_intel_local\nENGINE = Distributed(decnet, intel, attacker_intel_local, cityHash64(attacker_ip))"; stmts[1] != want {
		t.Errorf("distributed table:\n%s\nwant\n%s", stmts[1], want)
	}
}

func TestUpgradeFrom1816AddsAndWidens(t *testing.T) {
	old := Columns(Version{18, 16})
	old = old[:slices.IndexFunc(old, func(c Column) bool { return c.Name == "version" })+1]
	old = old[:len(old)-4] // an older release: no carrier columns, no version, no lists, no ASN
	current := Version{26, 5}
	p, err := Upgrade(Options{Table: "attacker_intel", RetentionDays: 30}, current, old, "ReplacingMergeTree(version) ORDER BY attacker_ip SETTINGS index_granularity = 8192")
	if err != nil {
		t.Fatal(err)
	}
	joined := strings.Join(p.Statements, "\n")
	for _, want := range []string{
		"ALTER TABLE attacker_intel MODIFY COLUMN greynoise_classification LowCardinality(Nullable(String))",
		"ALTER TABLE attacker_intel MODIFY COLUMN aggregate_verdict LowCardinality(Nullable(String))",
		"ALTER TABLE attacker_intel MODIFY COLUMN greynoise_verdict LowCardinality(Nullable(String))",
		"ALTER TABLE attacker_intel ADD COLUMN carrier_topic String AFTER expires_at",
		"ALTER TABLE attacker_intel ADD COLUMN version UInt64 AFTER carrier_offset",
		"ALTER TABLE attacker_intel ADD COLUMN abuseipdb_blacklist_listed Nullable(UInt8) AFTER version",
		"ALTER TABLE attacker_intel ADD COLUMN spamhaus_drop_status LowCardinality(Nullable(String)) AFTER spamhaus_drop_queried_at",
		"ALTER TABLE attacker_intel ADD COLUMN country LowCardinality(Nullable(String)) AFTER as_org",
		"ALTER TABLE attacker_intel MODIFY TTL expires_at + INTERVAL 30 DAY",
	} {
		if !strings.Contains(joined, want) {
			t.Errorf("plan lacks %q:\n%s", want, joined)
		}
	}
	// Brought up to date, nothing is left to do: the TTL as a current
	// server prints it compares equal to the one rendered.
	p, err = Upgrade(Options{Table: "attacker_intel", RetentionDays: 30}, current, Columns(current),
		"ReplacingMergeTree(version) ORDER BY attacker_ip TTL expires_at + toIntervalDay(30) SETTINGS index_granularity = 8192")
	if err != nil || len(p.Statements) != 0 || len(p.Warnings) != 0 {
		t.Fatalf("an up-to-date table: %v %v %v", p.Statements, p.Warnings, err)
	}
}

func TestUpgradeRefusesWhatItCannotChangeSafely(t *testing.T) {
	cols := Columns(Version{26, 5})
	for i := range cols {
		if cols[i].Name == "abuseipdb_score" {
			cols[i].Type = "String"
		}
	}
	_, err := Upgrade(Options{Table: "attacker_intel"}, Version{26, 5}, cols, "")
	if err == nil || !strings.Contains(err.Error(), "column abuseipdb_score is String, want Nullable(UInt8)") ||
		!strings.Contains(err.Error(), "MODIFY COLUMN abuseipdb_score Nullable(UInt8)") {
		t.Fatalf("got %v", err)
	}
}

func TestUpgradeLeavesAnUnaskedTTLAndSaysSo(t *testing.T) {
	v := Version{26, 5}
	p, err := Upgrade(Options{Table: "attacker_intel"}, v, Columns(v), "ReplacingMergeTree(version) ORDER BY attacker_ip TTL expires_at + toIntervalDay(30)")
	if err != nil || len(p.Statements) != 0 || len(p.Warnings) != 1 || !strings.Contains(p.Warnings[0], "REMOVE TTL") {
		t.Fatalf("got %v %v %v", p.Statements, p.Warnings, err)
	}
}

func TestUpgradeOnAClusterAltersShardsAndTheDistributedTable(t *testing.T) {
	v := Version{26, 5}
	cols := Columns(v)
	p, err := Upgrade(Options{Table: "attacker_intel", Cluster: "decnet"}, v, cols[:len(cols)-1], "")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"ALTER TABLE attacker_intel_local ON CLUSTER decnet ADD COLUMN country LowCardinality(Nullable(String)) AFTER as_org",
		"ALTER TABLE attacker_intel ON CLUSTER decnet ADD COLUMN country LowCardinality(Nullable(String)) AFTER as_org",
	}
	if strings.Join(p.Statements, "\n") != strings.Join(want, "\n") {
		t.Fatalf("got %q", p.Statements)
	}
}
