// Package chschema is the attacker_intel table's DDL, in one versioned place,
// and the choice of what a given ClickHouse server can take: Debian's 18.16
// has neither LowCardinality (experimental there) nor TTL (19.6+).
//
// Lists are arrays: ClickHouse has no Nullable(Array), so whether a
// provider answered is in its *_status column ("ok"), never in an empty list.
//
// carrier_* name the Kafka record whose event published the row: after a
// crash between the row landing and the enriched event being written, the
// redelivered record is recognised and publishes the enrichment again.
package chschema

import (
	"bytes"
	_ "embed"
	"fmt"
	"regexp"
	"strconv"
	"text/template"
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

func (v Version) atLeast(major, minor int) bool {
	return v.Major > major || (v.Major == major && v.Minor >= minor)
}

// LowCardinality is GA from 19.0 (experimental, behind a setting, before).
func (v Version) LowCardinality() bool { return v.atLeast(19, 0) }

// TTL clauses arrived in 19.6.
func (v Version) TTL() bool { return v.atLeast(19, 6) }

//go:embed attacker_intel.sql.tmpl
var attackerIntelTmpl string

var attackerIntel = template.Must(template.New("attacker_intel").Parse(attackerIntelTmpl))

var tableName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$`)

// RetentionDays is how long a row outlives its expiry (the refresh stream
// re-enriches expired rows of IPs seen recently) before TTL drops it.
const RetentionDays = 30

// AttackerIntelDDL is the CREATE TABLE IF NOT EXISTS for table on a server
// of version v.
func AttackerIntelDDL(table string, v Version) (string, error) {
	if !tableName.MatchString(table) {
		return "", fmt.Errorf("table name %q is not a plain [database.]identifier", table)
	}
	enum := "String"
	if v.LowCardinality() {
		enum = "LowCardinality(String)"
	}
	var b bytes.Buffer
	err := attackerIntel.Execute(&b, map[string]any{"Table": table, "Enum": enum, "TTL": v.TTL(), "RetentionDays": RetentionDays})
	return b.String(), err
}

// AttackerIntelColumns are the table's columns, in order.
var AttackerIntelColumns = []string{
	"attacker_ip", "attacker_uuid", "schema_version",
	"greynoise_classification", "greynoise_name", "greynoise_tags", "greynoise_raw", "greynoise_queried_at",
	"abuseipdb_score", "abuseipdb_categories", "abuseipdb_raw", "abuseipdb_queried_at",
	"feodo_listed", "feodo_malware_family", "feodo_raw", "feodo_queried_at",
	"threatfox_listed", "threatfox_threat_types", "threatfox_ioc_types", "threatfox_malware_families", "threatfox_raw", "threatfox_queried_at",
	"aggregate_verdict", "greynoise_status", "abuseipdb_status", "feodo_status", "threatfox_status",
	"cached_at", "expires_at", "carrier_topic", "carrier_partition", "carrier_offset", "version",
}
