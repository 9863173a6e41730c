// Package chstore reads attacker_intel rows back from ClickHouse, so that a
// restarted pipeline, or a new replica, starts with the answers already paid
// for instead of asking the providers again.
package chstore

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/decnet/decnet-stream/internal/aggregate"
	"github.com/decnet/decnet-stream/internal/chschema"
	"github.com/decnet/decnet-stream/internal/providers"
)

// Stored is a row read back, with the Kafka record that published it.
type Stored struct {
	Row       *aggregate.Row
	Topic     string
	Partition int32
	Offset    int64
}

// Store reads rows from one attacker_intel table over one connection pool.
type Store struct {
	conn  driver.Conn
	table string
	// lists: the table has the bulk lists' and the ASN columns (schema 2);
	// a table the output has not upgraded yet is read without them, and
	// looked at again at most once a minute (describedAt, unix ns), not
	// on every shared lookup.
	lists       atomic.Bool
	describedAt atomic.Int64
}

// redescribe is how often a table without schema 2's columns is looked at
// again (the output upgrades it when it connects).
const redescribe = time.Minute

// Open connects to the table's server.
func Open(dsn, table string) (*Store, error) {
	if err := chschema.CheckTable(table); err != nil {
		return nil, err
	}
	conn, err := connect(dsn)
	if err != nil {
		return nil, err
	}
	return &Store{conn: conn, table: table}, nil
}

// learnColumns finds out whether the table has schema 2's columns.
func (s *Store) learnColumns(ctx context.Context) error {
	rows, err := s.conn.Query(ctx, "DESCRIBE TABLE "+s.table)
	if err != nil {
		return fmt.Errorf("describing %s: %w", s.table, err)
	}
	defer rows.Close()
	cols := rows.Columns()
	for rows.Next() {
		dest := make([]any, len(cols))
		var name string
		dest[0] = &name
		for i := 1; i < len(dest); i++ {
			dest[i] = new(string)
		}
		if err := rows.Scan(dest...); err != nil {
			return fmt.Errorf("describing %s: %w", s.table, err)
		}
		if name == "country" {
			s.lists.Store(true)
		}
	}
	s.describedAt.Store(time.Now().UnixNano())
	return rows.Err()
}

// connect opens a connection pool to the server dsn names.
func connect(dsn string) (driver.Conn, error) {
	opts, err := ch.ParseDSN(dsn)
	if err != nil {
		return nil, err
	}
	return ch.Open(opts)
}

// Close releases the connections.
func (s *Store) Close() error { return s.conn.Close() }

// ErrNoTable is Load's answer when the table does not exist yet: a first
// run, with nothing to warm-start from.
var ErrNoTable = errors.New("no such table yet")

// Load returns the newest unexpired rows of table, at most limit, newest
// first, for the configured providers.
func Load(ctx context.Context, dsn, table string, limit int, configured []string) ([]Stored, error) {
	s, err := Open(dsn, table)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	var exists uint8
	if err := s.conn.QueryRow(ctx, "EXISTS TABLE "+table).Scan(&exists); err != nil {
		return nil, fmt.Errorf("checking for %s: %w", table, err)
	}
	if exists == 0 {
		return nil, ErrNoTable
	}
	if err := s.learnColumns(ctx); err != nil {
		return nil, err
	}
	lists := s.lists.Load()
	return s.query(ctx, WarmStartQuery(table, limit, lists), lists, configured)
}

// Get returns ip's unexpired row, or nil when there is none: the cache
// that every replica shares.
func (s *Store) Get(ctx context.Context, ip netip.Addr, configured []string) (*Stored, error) {
	if !s.lists.Load() && time.Since(time.Unix(0, s.describedAt.Load())) >= redescribe {
		if err := s.learnColumns(ctx); err != nil {
			return nil, err
		}
	}
	lists := s.lists.Load()
	rows, err := s.query(ctx, LookupQuery(s.table, ip, lists), lists, configured)
	if err != nil || len(rows) == 0 {
		return nil, err
	}
	return &rows[0], nil
}

// WarmStartQuery reads the newest unexpired rows of table, at most limit
// (lists: with schema 2's columns).
func WarmStartQuery(table string, limit int, lists bool) string {
	return selectRows(table, fmt.Sprintf("expires_at > now() ORDER BY cached_at DESC LIMIT %d", limit), lists)
}

// LookupQuery reads ip's unexpired row.
func LookupQuery(table string, ip netip.Addr, lists bool) string {
	return selectRows(table, "attacker_ip = '"+ip.String()+"' AND expires_at > now() LIMIT 1", lists)
}

// listColumns are the columns read back per bulk list (raw answers stay in
// the table).
var listColumns = []string{"listed", "score", "tags", "queried_at", "status", "verdict"}

// schema2Columns are the bulk lists' and the ASN columns, in scan order.
func schema2Columns() string {
	var b strings.Builder
	for _, l := range chschema.Lists {
		for _, c := range listColumns {
			b.WriteString(", " + l + "_" + c)
		}
	}
	b.WriteString(", asn, as_org, country")
	return b.String()
}

// selectRows reads the columns a Stored row needs (where is built only
// from validated values).
func selectRows(table, where string, lists bool) string {
	extra := ""
	if lists {
		extra = schema2Columns()
	}
	return fmt.Sprintf(`SELECT attacker_ip,
  greynoise_classification, greynoise_name, greynoise_tags, greynoise_queried_at,
  abuseipdb_score, abuseipdb_categories, abuseipdb_queried_at,
  feodo_listed, feodo_malware_family, feodo_queried_at,
  threatfox_listed, threatfox_threat_types, threatfox_ioc_types, threatfox_malware_families, threatfox_queried_at,
  aggregate_verdict, greynoise_status, abuseipdb_status, feodo_status, threatfox_status, cached_at, expires_at,
  carrier_topic, carrier_partition, carrier_offset,
  greynoise_verdict, abuseipdb_verdict, feodo_verdict, threatfox_verdict%s
FROM %s FINAL WHERE %s`, extra, table, where)
}

// query reads rows with q, built with or without schema 2's columns.
func (s *Store) query(ctx context.Context, q string, lists bool, configured []string) ([]Stored, error) {
	conn, table := s.conn, s.table
	rows, err := conn.Query(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", table, err)
	}
	defer rows.Close()
	var out []Stored
	for rows.Next() {
		var (
			ip                             string
			gnClass, gnName, feodoFam      *string
			gnTags, tfThreat, tfIOC, tfFam []string
			gnAt, abAt, feodoAt, tfAt      *time.Time
			abScore, feodoListed, tfListed *uint8
			abCats                         []uint8
			verdict                        *string
			gnSt, abSt, feodoSt, tfSt      string
			cachedAt, expiresAt            time.Time
			carrierTopic                   string
			carrierPartition               int32
			carrierOffset                  int64
			gnV, abV, feodoV, tfV          *string
			list                           [aggregate.NumLists]storedList
			asn                            *uint32
			asOrg, country                 *string
		)
		dest := []any{&ip, &gnClass, &gnName, &gnTags, &gnAt, &abScore, &abCats, &abAt,
			&feodoListed, &feodoFam, &feodoAt, &tfListed, &tfThreat, &tfIOC, &tfFam, &tfAt,
			&verdict, &gnSt, &abSt, &feodoSt, &tfSt, &cachedAt, &expiresAt,
			&carrierTopic, &carrierPartition, &carrierOffset,
			&gnV, &abV, &feodoV, &tfV}
		if lists {
			for i := range list {
				l := &list[i]
				dest = append(dest, &l.listed, &l.score, &l.tags, &l.at, &l.status, &l.verdict)
			}
			dest = append(dest, &asn, &asOrg, &country)
		}
		if err := rows.Scan(dest...); err != nil {
			return nil, fmt.Errorf("reading %s: %w", table, err)
		}
		r := aggregate.NewRow(ip, configured)
		answered := func(st string) bool { return st == aggregate.StatusOK || st == aggregate.StatusStale }
		if answered(gnSt) {
			r.GreyNoiseClassification, r.GreyNoiseName, r.GreyNoiseTags, r.GreyNoiseQueriedAt = gnClass, gnName, gnTags, utc(gnAt)
		}
		if answered(abSt) {
			if abScore != nil {
				s := int(*abScore)
				r.AbuseIPDBScore = &s
			}
			r.AbuseIPDBCategories = ints(abCats)
			r.AbuseIPDBQueriedAt = utc(abAt)
		}
		if answered(feodoSt) {
			r.FeodoListed, r.FeodoMalwareFamily, r.FeodoQueriedAt = boolOf(feodoListed), feodoFam, utc(feodoAt)
		}
		if answered(tfSt) {
			r.ThreatFoxListed, r.ThreatFoxQueriedAt = boolOf(tfListed), utc(tfAt)
			r.ThreatFoxThreatTypes, r.ThreatFoxIOCTypes, r.ThreatFoxMalwareFamilies = tfThreat, tfIOC, tfFam
		}
		// Each provider's verdict is stored with the row; rows written before
		// it was (the column NULL) derive it from the columns as then.
		r.Restore(providers.NameGreyNoise, gnSt, storedOr(gnV, greyNoiseVerdict(gnClass)))
		r.Restore(providers.NameAbuseIPDB, abSt, storedOr(abV, scoreVerdict(r.AbuseIPDBScore)))
		r.Restore(providers.NameFeodo, feodoSt, storedOr(feodoV, listedVerdict(r.FeodoListed)))
		r.Restore(providers.NameThreatFox, tfSt, storedOr(tfV, listedVerdict(r.ThreatFoxListed)))
		for i, l := range list {
			name := providers.ListNames[i]
			if l.status == nil {
				continue
			}
			if answered(*l.status) {
				la := aggregate.ListAnswer{Listed: boolOf(l.listed), Tags: l.tags, QueriedAt: utc(l.at)}
				if l.score != nil {
					s := int(*l.score)
					la.Score = &s
				}
				r.SetList(i, la)
			}
			r.Restore(name, *l.status, storedOr(l.verdict, providers.VerdictNone))
		}
		r.SetOrigin(asn, asOrg, country)
		if gnV == nil && abV == nil && feodoV == nil && tfV == nil {
			// An older row: its stored aggregate is the truth.
			r.AggregateVerdict = aggregate.VerdictNone
			if verdict != nil && *verdict != "" {
				r.AggregateVerdict = aggregate.Aggregate(*verdict)
			}
		}
		r.CachedAt, r.ExpiresAt = cachedAt.UTC(), expiresAt.UTC()
		out = append(out, Stored{Row: r, Topic: carrierTopic, Partition: carrierPartition, Offset: carrierOffset})
	}
	return out, rows.Err()
}

// storedList is a bulk list's columns as read back.
type storedList struct {
	listed, score *uint8
	tags          []string
	at            *time.Time
	status        *string // NULL: not configured when written
	verdict       *string
}

func utc(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

func ints(b []uint8) []int {
	out := make([]int, len(b))
	for i, v := range b {
		out[i] = int(v)
	}
	return out
}

func boolOf(v *uint8) *bool {
	if v == nil {
		return nil
	}
	b := *v == 1
	return &b
}

func storedOr(v *string, derived providers.Verdict) providers.Verdict {
	if v != nil {
		return providers.Verdict(*v)
	}
	return derived
}

func greyNoiseVerdict(class *string) providers.Verdict {
	if class == nil {
		return providers.VerdictUnknown
	}
	switch *class {
	case "malicious":
		return providers.VerdictMalicious
	case "benign":
		return providers.VerdictBenign
	}
	return providers.VerdictSuspicious
}

func scoreVerdict(score *int) providers.Verdict {
	switch {
	case score == nil:
		return providers.VerdictNone
	case *score >= 75:
		return providers.VerdictMalicious
	case *score >= 25:
		return providers.VerdictSuspicious
	case *score == 0:
		return providers.VerdictUnknown
	}
	return providers.VerdictBenign
}

func listedVerdict(listed *bool) providers.Verdict {
	if listed != nil && *listed {
		return providers.VerdictMalicious
	}
	return providers.VerdictNone
}
