package chstore

import (
	"context"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"sort"
	"sync/atomic"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/decnet/decnet-stream/internal/chschema"
)

// Ledger is the daily budget ledger that the replicas of one consumer
// group share in ClickHouse (providers.Ledger): one row per day, provider
// and replica, the newest count winning. It is a small side table.
type Ledger struct {
	conn  driver.Conn
	table string

	ready atomic.Bool // the table exists
}

// ActiveWithin is how recently a replica must have synced to count as
// active, and so to take a share of what is left.
const ActiveWithin = time.Minute

// OpenLedger connects to dsn; table is created on first use.
func OpenLedger(dsn, table string) (*Ledger, error) {
	if err := chschema.CheckTable(table); err != nil {
		return nil, err
	}
	conn, err := connect(dsn)
	if err != nil {
		return nil, err
	}
	return &Ledger{conn: conn, table: table}, nil
}

// Close releases the connections.
func (l *Ledger) Close() error { return l.conn.Close() }

func (l *Ledger) ensure(ctx context.Context) error {
	if l.ready.Load() {
		return nil
	}
	err := l.conn.Exec(ctx, "CREATE TABLE IF NOT EXISTS "+l.table+` (
    day      Date,
    provider String,
    replica  String,
    used     UInt32,
    updated  UInt64
)
ENGINE = ReplacingMergeTree(updated)
ORDER BY (day, provider, replica)`)
	l.ready.Store(err == nil)
	return err
}

// Sync records replica's count and returns the others' total for the day
// and the replicas that synced within ActiveWithin.
func (l *Ledger) Sync(ctx context.Context, provider, day, replica string, used int) (others int, active []string, err error) {
	if err := l.ensure(ctx); err != nil {
		return 0, nil, fmt.Errorf("creating %s: %w", l.table, err)
	}
	d, err := time.Parse("2006-01-02", day)
	if err != nil {
		return 0, nil, err
	}
	now := time.Now()
	b, err := l.conn.PrepareBatch(ctx, "INSERT INTO "+l.table+" (day, provider, replica, used, updated)")
	if err != nil {
		return 0, nil, err
	}
	if err := b.Append(d, provider, replica, uint32(used), uint64(now.UnixNano())); err != nil {
		_ = b.Abort()
		return 0, nil, err
	}
	if err := b.Send(); err != nil {
		return 0, nil, err
	}
	rows, err := l.conn.Query(ctx, "SELECT replica, argMax(used, updated), max(updated) FROM "+l.table+
		" WHERE day = toDate(?) AND provider = ? GROUP BY replica", day, provider)
	if err != nil {
		return 0, nil, err
	}
	defer rows.Close()
	since := uint64(now.Add(-ActiveWithin).UnixNano())
	for rows.Next() {
		var r string
		var u uint32
		var at uint64
		if err := rows.Scan(&r, &u, &at); err != nil {
			return 0, nil, err
		}
		if r != replica {
			others += int(u)
		}
		if at >= since || r == replica {
			active = append(active, r)
		}
	}
	sort.Strings(active)
	return others, active, rows.Err()
}

// ReplicaName is a stable name for the replica whose budget state lives at
// stateFile: its host and a hash of the file's path, so a restart keeps it
// (its earlier spending stays its own) and two replicas never share it.
func ReplicaName(stateFile string) string {
	host, _ := os.Hostname()
	abs, err := filepath.Abs(stateFile)
	if err != nil {
		abs = stateFile
	}
	h := fnv.New32a()
	h.Write([]byte(abs))
	return fmt.Sprintf("%s-%08x", host, h.Sum32())
}
