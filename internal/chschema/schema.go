// Package chschema is the attacker_intel table: its columns in one place,
// the DDL a given ClickHouse server accepts (Debian's 18.16 has neither
// LowCardinality nor TTL; current servers refuse LowCardinality inside
// Nullable), the variant for a cluster, and the ALTERs that bring an older
// table to the current shape.
//
// Lists are arrays: ClickHouse has no Nullable(Array), so whether a
// provider answered is in its *_status column ("ok"), never in an empty list.
//
// carrier_* name the Kafka record whose event published the row: after a
// crash between the row landing and the enriched event being written, the
// redelivered record is recognised and publishes the enrichment again.
package chschema

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Version is a server version, major.minor.
type Version struct{ Major, Minor int }

var versionPrefix = regexp.MustCompile(`^(\d+)\.(\d+)`)

// ParseVersion reads what SELECT version() returns ("18.16.1", "24.3.2.23").
func ParseVersion(s string) (Version, error) {
	m := versionPrefix.FindStringSubmatch(s)
	if m == nil {
		return Version{}, fmt.Errorf("unrecognised ClickHouse version %q", s)
	}
	major, _ := strconv.Atoi(m[1])
	minor, _ := strconv.Atoi(m[2])
	return Version{major, minor}, nil
}

func (v Version) String() string { return fmt.Sprintf("%d.%d", v.Major, v.Minor) }

func (v Version) atLeast(major, minor int) bool {
	return v.Major > major || (v.Major == major && v.Minor >= minor)
}

// LowCardinality is GA from 19.0 (experimental, behind a setting, before).
func (v Version) LowCardinality() bool { return v.atLeast(19, 0) }

// TTL clauses arrived in 19.6.
func (v Version) TTL() bool { return v.atLeast(19, 6) }

// Options say which attacker_intel table to make.
type Options struct {
	// Table is [database.]name; it must be a plain identifier.
	Table string
	// RetentionDays > 0 deletes a row that many days after it expired (a
	// TTL, where the server has TTL). 0 keeps rows, as DECNET does.
	RetentionDays int
	// Cluster, when set, makes a replicated table on every node of that
	// cluster (Table + "_local", ReplicatedReplacingMergeTree) and Table as
	// a Distributed table over it, sharded by attacker_ip so every version
	// of an IP lands on one shard (FINAL then collapses them there).
	Cluster string
}

var identifier = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$`)

// CheckTable refuses a table name that is not a plain [database.]identifier:
// table names go into SQL as they are.
func CheckTable(name string) error {
	if !identifier.MatchString(name) {
		return fmt.Errorf("table name %q is not a plain [database.]identifier", name)
	}
	return nil
}

func (o Options) check() error {
	if err := CheckTable(o.Table); err != nil {
		return err
	}
	if o.Cluster != "" && !regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_-]*$`).MatchString(o.Cluster) {
		return fmt.Errorf("cluster name %q is not a plain identifier", o.Cluster)
	}
	if o.RetentionDays < 0 {
		return fmt.Errorf("retention days must not be negative, got %d", o.RetentionDays)
	}
	return nil
}

// LocalTable is the table that holds the rows: Table itself, or on a
// cluster its replicated shard table.
func (o Options) LocalTable() string {
	if o.Cluster == "" {
		return o.Table
	}
	return o.Table + "_local"
}

func (o Options) onCluster() string {
	if o.Cluster == "" {
		return ""
	}
	return " ON CLUSTER " + o.Cluster
}

// Column is one column and its type on a given server.
type Column struct{ Name, Type string }

// Columns are the table's columns, in order, typed for a server of version
// v. Repeated strings (classifications, statuses, verdicts) are
// LowCardinality where the server has it, wrapped around Nullable where the
// value may be missing: current servers refuse Nullable(LowCardinality(…)).
func Columns(v Version) []Column {
	enum, nullEnum := "String", "Nullable(String)"
	if v.LowCardinality() {
		enum, nullEnum = "LowCardinality(String)", "LowCardinality(Nullable(String))"
	}
	cols := []Column{
		{"attacker_ip", "String"},
		{"attacker_uuid", "Nullable(String)"},
		{"schema_version", "UInt16"},
		{"greynoise_classification", nullEnum},
		{"greynoise_name", "Nullable(String)"},
		{"greynoise_tags", "Array(String)"},
		{"greynoise_raw", "Nullable(String)"},
		{"greynoise_queried_at", "Nullable(DateTime)"},
		{"abuseipdb_score", "Nullable(UInt8)"},
		{"abuseipdb_categories", "Array(UInt8)"},
		{"abuseipdb_raw", "Nullable(String)"},
		{"abuseipdb_queried_at", "Nullable(DateTime)"},
		{"feodo_listed", "Nullable(UInt8)"},
		{"feodo_malware_family", "Nullable(String)"},
		{"feodo_raw", "Nullable(String)"},
		{"feodo_queried_at", "Nullable(DateTime)"},
		{"threatfox_listed", "Nullable(UInt8)"},
		{"threatfox_threat_types", "Array(String)"},
		{"threatfox_ioc_types", "Array(String)"},
		{"threatfox_malware_families", "Array(String)"},
		{"threatfox_raw", "Nullable(String)"},
		{"threatfox_queried_at", "Nullable(DateTime)"},
		{"aggregate_verdict", nullEnum}, // NULL: no provider had an opinion
		{"greynoise_status", enum},
		{"abuseipdb_status", enum},
		{"feodo_status", enum},
		{"threatfox_status", enum},
		// Each provider's own verdict (NULL: no answer), so a row read back
		// reads exactly as it was decoded.
		{"greynoise_verdict", nullEnum},
		{"abuseipdb_verdict", nullEnum},
		{"feodo_verdict", nullEnum},
		{"threatfox_verdict", nullEnum},
		{"cached_at", "DateTime"},
		{"expires_at", "DateTime"},
		{"carrier_topic", "String"},
		{"carrier_partition", "Int32"},
		{"carrier_offset", "Int64"},
		{"version", "UInt64"},
	}
	// The bulk lists (schema 2): each a provider with its own status, and
	// listed/score/tags as every list has them. Added at the end, so that
	// an older table gains them by ALTER … ADD COLUMN in this order.
	for _, l := range Lists {
		cols = append(cols,
			Column{l + "_listed", "Nullable(UInt8)"},
			Column{l + "_score", "Nullable(UInt8)"},
			Column{l + "_tags", "Array(String)"},
			Column{l + "_raw", "Nullable(String)"},
			Column{l + "_queried_at", "Nullable(DateTime)"},
			// NULL: the list is not configured (or the row is older).
			Column{l + "_status", nullEnum},
			Column{l + "_verdict", nullEnum},
		)
	}
	// Where the address is routed from, from the operator's MMDB files.
	return append(cols,
		Column{"asn", "Nullable(UInt32)"},
		Column{"as_org", "Nullable(String)"},
		Column{"country", nullEnum},
	)
}

// Lists are the bulk lists with columns in the table (the providers
// package's list names; chschema does not import it).
var Lists = []string{"abuseipdb_blacklist", "threatfox_export", "spamhaus_drop"}

// ColumnNames are the names of Columns, in order (the same on every server).
func ColumnNames() []string {
	cols := Columns(Version{})
	names := make([]string, len(cols))
	for i, c := range cols {
		names[i] = c.Name
	}
	return names
}

// AttackerIntelColumns are the table's columns, in order.
var AttackerIntelColumns = ColumnNames()

// CreateStatements are the statements that make the table on a server of
// version v, each safe to run again (IF NOT EXISTS).
func CreateStatements(o Options, v Version) ([]string, error) {
	if err := o.check(); err != nil {
		return nil, err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "CREATE TABLE IF NOT EXISTS %s%s (\n", o.LocalTable(), o.onCluster())
	cols := Columns(v)
	for i, c := range cols {
		sep := ","
		if i == len(cols)-1 {
			sep = ""
		}
		fmt.Fprintf(&b, "    %-26s %s%s\n", c.Name, c.Type, sep)
	}
	b.WriteString(")\n")
	if o.Cluster == "" {
		b.WriteString("ENGINE = ReplacingMergeTree(version)\n")
	} else {
		fmt.Fprintf(&b, "ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/%s', '{replica}', version)\n", o.LocalTable())
	}
	b.WriteString("ORDER BY attacker_ip")
	if ttl := o.ttl(v); ttl != "" {
		b.WriteString("\nTTL " + ttl)
	}
	stmts := []string{b.String()}
	if o.Cluster != "" {
		db, local := "currentDatabase()", o.LocalTable()
		if i := strings.IndexByte(local, '.'); i >= 0 {
			db, local = local[:i], local[i+1:]
		}
		stmts = append(stmts, fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s%s AS %s\nENGINE = Distributed(%s, %s, %s, cityHash64(attacker_ip))",
			o.Table, o.onCluster(), o.LocalTable(), o.Cluster, db, local))
	}
	return stmts, nil
}

// ttl is the table's TTL expression, "" when rows are kept.
func (o Options) ttl(v Version) string {
	if o.RetentionDays <= 0 || !v.TTL() {
		return ""
	}
	return fmt.Sprintf("expires_at + INTERVAL %d DAY", o.RetentionDays)
}
