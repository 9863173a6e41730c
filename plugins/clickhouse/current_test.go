//go:build chdb

// These run on a current ClickHouse engine (chDB, the engine as a library:
// `go tool task test` fetches it with scripts/chdb.sh and runs them with
// -tags chdb). Debian's 18.16, the only server here, runs the other tests.
// They check what a current server does with what this project renders:
// every DDL variant is created, rows built by the output's own converters
// are inserted, and FINAL, warm-start, shared-lookup and refresh queries
// are run and their results checked.

package clickhouse

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chdb-io/chdb-go/chdb"
	"github.com/redpanda-data/benthos/v4/public/service"
	"github.com/tidwall/gjson"
	"gopkg.in/yaml.v3"

	"github.com/decnet/decnet-stream/internal/chschema"
	"github.com/decnet/decnet-stream/internal/chserver"
	"github.com/decnet/decnet-stream/internal/chstore"
)

type engine struct {
	t testing.TB
	s *chdb.Session
}

func currentEngine(t testing.TB) (*engine, chschema.Version) {
	t.Helper()
	s, err := chdb.NewSession(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	e := &engine{t: t, s: s}
	v, err := chschema.ParseVersion(strings.TrimSpace(e.query("SELECT version()")))
	if err != nil {
		t.Fatal(err)
	}
	if v.Major < 24 {
		t.Fatalf("chDB reports ClickHouse %s: not a current engine", v)
	}
	return e, v
}

// query runs q and returns its TSV output; a refusal fails the test.
func (e *engine) query(q string) string {
	e.t.Helper()
	out, err := e.try(q)
	if err != nil {
		e.t.Fatalf("ClickHouse refused:\n%s\n%v", q, err)
	}
	return out
}

func (e *engine) try(q string) (string, error) {
	r, err := e.s.Query(q, "TSV")
	if err != nil {
		return "", err
	}
	if r == nil {
		return "", nil
	}
	return r.String(), nil
}

func (e *engine) describe(table string) []chschema.Column {
	var cols []chschema.Column
	for _, line := range strings.Split(strings.TrimSpace(e.query("DESCRIBE TABLE "+table)), "\n") {
		f := strings.Split(line, "\t")
		cols = append(cols, chschema.Column{Name: f[0], Type: f[1]})
	}
	return cols
}

func (e *engine) engineFull(table string) string {
	return strings.TrimSpace(e.query("SELECT engine_full FROM system.tables WHERE database = currentDatabase() AND name = '" + table + "'"))
}

// insert converts each message with the converters the output builds from
// the table's column types (what it appends over the native protocol) and
// inserts the converted values.
func (e *engine) insert(table string, msgs ...*service.Message) {
	e.t.Helper()
	o := &output{table: table, columns: chschema.AttackerIntelColumns, fastPath: new(string)}
	o.colIndex = map[string]int{}
	for i, c := range o.columns {
		o.colIndex[c] = i
	}
	types := map[string]string{}
	for _, c := range e.describe(table) {
		types[c.Name] = c.Type
	}
	convs := make([]converter, len(o.columns))
	for i, c := range o.columns {
		var err error
		if convs[i], err = converterFor(types[c]); err != nil {
			e.t.Fatalf("no converter for %s %s: %v", c, types[c], err)
		}
	}
	var values []string
	members := make([]gjson.Result, len(o.columns)) // shared, as WriteBatch shares it
	for _, m := range msgs {
		row, err := o.fastRow(m, convs, members)
		if err != nil {
			e.t.Fatal(err)
		}
		lits := make([]string, len(row))
		for i, v := range row {
			lits[i] = literal(v)
		}
		values = append(values, "("+strings.Join(lits, ", ")+")")
	}
	e.query(fmt.Sprintf("INSERT INTO %s (%s) VALUES %s", table, strings.Join(o.columns, ", "), strings.Join(values, ", ")))
}

// literal writes a converted value as the SQL literal of what clickhouse-go
// would send for it.
func literal(v any) string {
	if v == nil {
		return "NULL"
	}
	rv := reflect.ValueOf(v)
	if rv.Kind() == reflect.Pointer {
		if rv.IsNil() {
			return "NULL"
		}
		return literal(rv.Elem().Interface())
	}
	switch x := v.(type) {
	case string:
		return quote(x)
	case time.Time:
		return fmt.Sprintf("toDateTime(%d, 'UTC')", x.Unix())
	case []string:
		items := make([]string, len(x))
		for i, s := range x {
			items[i] = quote(s)
		}
		return "[" + strings.Join(items, ", ") + "]"
	case []uint8:
		items := make([]string, len(x))
		for i, n := range x {
			items[i] = fmt.Sprint(n)
		}
		return "[" + strings.Join(items, ", ") + "]"
	case uint8, uint16, uint32, uint64, int8, int16, int32, int64:
		return fmt.Sprint(x)
	}
	panic(fmt.Sprintf("no literal for %T", v))
}

func quote(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

// currentRow is an attacker_intel row as intel_enrich writes it, fetched
// at `at`, living ttl, with the given verdict, version and statuses.
func currentRow(ip, verdict string, at time.Time, ttl time.Duration, version int64, abuseStatus string, tags string) *service.Message {
	ts := at.UTC().Format(time.RFC3339)
	return service.NewMessage([]byte(fmt.Sprintf(`{
 "attacker_ip": %q, "schema_version": 1, "attacker_uuid": null,
 "greynoise_classification": "malicious", "greynoise_name": "it's \\ odd", "greynoise_tags": %s, "greynoise_raw": "{\"ip\":\"x\"}",
 "greynoise_queried_at": %q,
 "abuseipdb_score": 100, "abuseipdb_categories": [14, 18], "abuseipdb_raw": null, "abuseipdb_queried_at": %q,
 "feodo_listed": null, "feodo_malware_family": null, "feodo_raw": null, "feodo_queried_at": null,
 "threatfox_listed": true, "threatfox_threat_types": ["botnet_cc"], "threatfox_ioc_types": ["ip:port"], "threatfox_malware_families": [],
 "threatfox_raw": null, "threatfox_queried_at": %q,
 "aggregate_verdict": %q, "greynoise_status": "ok", "abuseipdb_status": %q, "feodo_status": "ok", "threatfox_status": "ok",
 "cached_at": %q, "expires_at": %q, "version": %d,
 "carrier_topic": "attacker.observed", "carrier_partition": 3, "carrier_offset": 9007199254740993,
 "abuseipdb_blacklist_listed": true, "abuseipdb_blacklist_score": 100, "abuseipdb_blacklist_tags": [], "abuseipdb_blacklist_raw": null,
 "abuseipdb_blacklist_queried_at": %[4]q, "abuseipdb_blacklist_status": "ok", "abuseipdb_blacklist_verdict": "malicious",
 "spamhaus_drop_listed": false, "spamhaus_drop_tags": [], "spamhaus_drop_status": "ok", "spamhaus_drop_verdict": null,
 "asn": 4200000000, "as_org": "Example Hosting", "country": "NL"}`,
		ip, tags, ts, ts, ts, verdict, abuseStatus, ts, at.Add(ttl).UTC().Format(time.RFC3339), version)))
}

func TestCurrentEngineTakesEveryDDLVariantAndItsRows(t *testing.T) {
	e, current := currentEngine(t)
	now := time.Now().Truncate(time.Second)
	const v = int64(1795985734123456789)
	for _, ver := range []chschema.Version{{Major: 18, Minor: 16}, {Major: 19, Minor: 0}, {Major: 19, Minor: 6}, current} {
		for _, retention := range []int{0, 30} {
			table := fmt.Sprintf("intel_%d_%d_r%d", ver.Major, ver.Minor, retention)
			t.Run(table, func(t *testing.T) {
				e.t = t
				stmts, err := chschema.CreateStatements(chschema.Options{Table: table, RetentionDays: retention}, ver)
				if err != nil {
					t.Fatal(err)
				}
				e.query(stmts[0])
				e.insert(table,
					// 45.0.0.1 twice, 1 ns apart, the newer inserted first.
					currentRow("45.0.0.1", "malicious", now, 24*time.Hour, v+1, "ok", `["Mirai", "scanner"]`),
					currentRow("45.0.0.1", "benign", now, 24*time.Hour, v, "ok", `[]`),
					currentRow("45.0.0.2", "suspicious", now.Add(-time.Hour), 24*time.Hour, v, "rate_limited", `[]`),
					currentRow("45.0.0.3", "benign", now.Add(-48*time.Hour), 24*time.Hour, v, "ok", `[]`),
				)
				final := e.query("SELECT attacker_ip, aggregate_verdict, toString(version), greynoise_tags, abuseipdb_categories, feodo_listed, greynoise_name, carrier_offset FROM " + table + " FINAL ORDER BY attacker_ip")
				want := fmt.Sprintf("45.0.0.1\tmalicious\t%d\t['Mirai','scanner']\t[14,18]\t\\N\tit\\'s \\\\ odd\t9007199254740993\n"+
					"45.0.0.2\tsuspicious\t%d\t[]\t[14,18]\t\\N\tit\\'s \\\\ odd\t9007199254740993\n"+
					"45.0.0.3\tbenign\t%d\t[]\t[14,18]\t\\N\tit\\'s \\\\ odd\t9007199254740993\n", v+1, v, v)
				if final != want {
					t.Fatalf("FINAL read\n%s\nwant\n%s", final, want)
				}
				// Schema 2: the bulk lists (NULL where not configured) and the ASN.
				lists := e.query("SELECT abuseipdb_blacklist_listed, abuseipdb_blacklist_score, abuseipdb_blacklist_status, spamhaus_drop_listed, spamhaus_drop_verdict, threatfox_export_status, threatfox_export_tags, asn, as_org, country FROM " + table + " FINAL WHERE attacker_ip = '45.0.0.1'")
				if want := "1\t100\tok\t0\t\\N\t\\N\t[]\t4200000000\tExample Hosting\tNL\n"; lists != want {
					t.Fatalf("list columns\n%q\nwant\n%q", lists, want)
				}
				if ttl := strings.Contains(e.engineFull(table), "TTL"); ttl != (retention > 0 && ver.TTL()) {
					t.Errorf("TTL present: %v, engine %s", ttl, e.engineFull(table))
				}
				// The warm start reads unexpired rows, newest first.
				if got := column(e.query(chstore.WarmStartQuery(table, 10, true)), 0); !slices.Equal(got, []string{"45.0.0.1", "45.0.0.2"}) {
					t.Errorf("warm start read %v", got)
				}
				// A shared lookup reads an IP's unexpired row, nothing for an expired one.
				if got := column(e.query(chstore.LookupQuery(table, netip.MustParseAddr("45.0.0.1"), true)), 16); !slices.Equal(got, []string{"malicious"}) {
					t.Errorf("lookup read %v", got)
				}
				if got := e.query(chstore.LookupQuery(table, netip.MustParseAddr("45.0.0.3"), true)); got != "" {
					t.Errorf("lookup of an expired row read %q", got)
				}
				// The pipeline's refresh query finds the expired and the partial row.
				if got := column(e.query(refreshQuery(t, table)), 0); !slices.Equal(got, []string{"45.0.0.3", "45.0.0.2"}) {
					t.Errorf("refresh read %v", got)
				}
			})
		}
	}
}

func TestCurrentEngineParsesTheClusterDDL(t *testing.T) {
	e, current := currentEngine(t)
	stmts, err := chschema.CreateStatements(chschema.Options{Table: "intel.attacker_intel", Cluster: "decnet", RetentionDays: 30}, current)
	if err != nil {
		t.Fatal(err)
	}
	// Replication needs ZooKeeper/Keeper and a cluster, neither of which can
	// run here: the statements are parsed by the current engine (syntax,
	// engine arguments), and their columns are created for real above.
	for _, q := range stmts {
		if got := e.query("SELECT formatQuery(" + quote(q) + ")"); !strings.Contains(got, "ON CLUSTER decnet") {
			t.Errorf("formatted as %q", got)
		}
	}
	p, err := chschema.Upgrade(chschema.Options{Table: "intel.attacker_intel", Cluster: "decnet"}, current, chschema.Columns(chschema.Version{Major: 18, Minor: 16}), "")
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range p.Statements {
		e.query("SELECT formatQuery(" + quote(q) + ")")
	}
}

// A table made by 18.16 (or by an older release) on a server since upgraded
// is brought to the current shape, and then reads as up to date.
func TestCurrentEngineUpgradesOlderTables(t *testing.T) {
	e, current := currentEngine(t)
	old := chschema.Columns(chschema.Version{Major: 18, Minor: 16})
	// The release before the verdict columns: an aggregate that could not
	// be null, and no per-provider verdicts.
	var lastRelease []chschema.Column
	for _, c := range chschema.Columns(current) {
		switch {
		case c.Name == "aggregate_verdict":
			c.Type = "LowCardinality(String)"
		case strings.HasSuffix(c.Name, "_verdict"):
			continue
		}
		lastRelease = append(lastRelease, c)
	}
	for name, cols := range map[string][]chschema.Column{"from_1816": old, "from_older_release": old[:len(old)-4], "from_last_release": lastRelease} {
		t.Run(name, func(t *testing.T) {
			e.t = t
			defs := make([]string, len(cols))
			for i, c := range cols {
				defs[i] = c.Name + " " + c.Type
			}
			e.query("CREATE TABLE " + name + " (" + strings.Join(defs, ", ") + ") ENGINE = ReplacingMergeTree ORDER BY attacker_ip")
			e.query("INSERT INTO " + name + " (attacker_ip, cached_at, expires_at) VALUES ('45.9.9.9', now(), now() + 3600)")
			opts := chschema.Options{Table: name, RetentionDays: 30}
			p, err := chschema.Upgrade(opts, current, e.describe(name), e.engineFull(name))
			if err != nil {
				t.Fatal(err)
			}
			for _, q := range p.Statements {
				e.query(q)
			}
			if got, want := e.describe(name), chschema.Columns(current); !slices.Equal(got, want) {
				t.Fatalf("after the upgrade:\n%v\nwant\n%v", got, want)
			}
			if p, err := chschema.Upgrade(opts, current, e.describe(name), e.engineFull(name)); err != nil || len(p.Statements)+len(p.Warnings) > 0 {
				t.Fatalf("still to do after the upgrade: %v %v %v", p.Statements, p.Warnings, err)
			}
			e.insert(name, currentRow("45.0.0.1", "malicious", time.Now(), time.Hour, 1, "ok", `[]`))
			if got := e.query("SELECT count() FROM " + name + " FINAL"); got != "2\n" {
				t.Fatalf("%q rows after the upgrade", got)
			}
		})
	}
}

// The old DDL's mistake stays caught: Nullable around LowCardinality is
// refused by every current server.
func TestCurrentEngineRefusesNullableLowCardinality(t *testing.T) {
	e, _ := currentEngine(t)
	if _, err := e.try("CREATE TABLE refused (c Nullable(LowCardinality(String))) ENGINE = MergeTree ORDER BY tuple()"); err == nil {
		t.Fatal("the current engine took Nullable(LowCardinality(String)): this test no longer proves anything")
	}
}

func column(tsv string, i int) []string {
	var out []string
	for _, line := range strings.Split(strings.TrimSpace(tsv), "\n") {
		if line != "" {
			out = append(out, strings.Split(line, "\t")[i])
		}
	}
	return out
}

// refreshQuery is config/pipeline.yaml's refresh query, as its defaults
// render it, on table.
func refreshQuery(t testing.TB, table string) string {
	t.Helper()
	root, err := chserver.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(root, "config", "pipeline.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var conf struct {
		Input struct {
			Broker struct {
				Inputs []struct {
					Select struct {
						Query string `yaml:"query"`
					} `yaml:"clickhouse_select"`
				} `yaml:"inputs"`
			} `yaml:"broker"`
		} `yaml:"input"`
	}
	if err := yaml.Unmarshal(raw, &conf); err != nil {
		t.Fatal(err)
	}
	for _, in := range conf.Input.Broker.Inputs {
		if in.Select.Query != "" {
			return strings.NewReplacer("${CLICKHOUSE_TABLE:attacker_intel}", table, "${REFRESH_BATCH:10000}", "10000").Replace(in.Select.Query)
		}
	}
	t.Fatal("config/pipeline.yaml has no clickhouse_select input")
	return ""
}
