// Package clickhouse adds the clickhouse output: batches of rows into a
// ClickHouse table over the native protocol (clickhouse-go v2), one INSERT
// per Benthos batch, acknowledged only once ClickHouse accepted it.
package clickhouse

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/cenkalti/backoff/v4"
	"github.com/redpanda-data/benthos/v4/public/bloblang"
	"github.com/redpanda-data/benthos/v4/public/service"
	"github.com/tidwall/gjson"

	"github.com/decnet/decnet-stream/internal/chschema"
)

const (
	fDSN           = "dsn"
	fTable         = "table"
	fColumns       = "columns"
	fArgsMapping   = "args_mapping"
	fInitStatement = "init_statement"
	fAutoCreate    = "auto_create"
	fUsername      = "username"
	fPassword      = "password"
	fDialTimeout   = "dial_timeout"
	fCompression   = "compression"
	fTLS           = "tls"
	fBatching      = "batching"
	fRetention     = "retention_days"
	fCluster       = "cluster"
	fRetry         = "retry"
)

func spec() *service.ConfigSpec {
	return service.NewConfigSpec().
		Beta().
		Categories("Services").
		Summary("Inserts rows into a ClickHouse table over the native protocol, one INSERT per batch.").
		Description(`
Fields follow Redpanda Connect's `+"`sql_insert`"+` where the meaning is the same. `+"`args_mapping`"+` returns,
per message, either an array of values in `+"`columns`"+` order or an object whose keys are the column
names (missing keys are NULL, or an empty array for array columns).

### Delivery guarantees

A batch is acknowledged only after ClickHouse accepted its INSERT. If the server is unreachable (down,
the connection dropped) the output reconnects with backoff and writes the same batch again, however long
that takes: an outage never reaches a `+"`fallback`"+` output. An INSERT the server refuses fails the batch
with the server's reason. A message whose row cannot be
converted to the table's column types is reported failed alone, with the reason, so the pipeline's
dead-letter route can take it while the rest of its batch commits. Re-delivered rows are inserted again:
the `+"`attacker_intel`"+` table is a ReplacingMergeTree, so they collapse (query with `+"`FINAL`"+`).

A server that answers with an exception about its own state (TOO_MANY_PARTS, MEMORY_LIMIT_EXCEEDED,
TIMEOUT_EXCEEDED, TABLE_IS_READ_ONLY, a quota, …) gets the same batch again after `+"`retry`"+`'s backoff,
for as long as it takes: those are counted by `+"`clickhouse_insert_retries`"+` (label `+"`code`"+`), never sent to
a fallback. Only an exception that blames the data (a value that does not parse or fit) is the rows'
fault: the batch is split until the rows at fault are found, and they fail alone.

Each insert the server accepts is timed by `+"`clickhouse_insert_latency_ns`"+` and its rows counted by
`+"`clickhouse_rows_inserted`"+`.

### The attacker_intel table

With `+"`auto_create: true`"+` the output creates `+"`table`"+` as DECNET's `+"`attacker_intel`"+` table when it does
not exist, with the types the server accepts: LowCardinality where it has it (around Nullable, never
inside it), no LowCardinality and no TTL on Debian's ClickHouse 18.16. `+"`columns`"+` then defaults to all of its
columns. Rows are kept, as DECNET keeps them; `+"`retention_days`"+` deletes a row that many days after it
expired (a TTL, on servers that have TTL).

An existing table of an older shape (made by 18.16 before the server was upgraded, or by an older
release) is brought up to date on connect: missing columns are added, types that widen without
rewriting data are modified, the TTL is set when retention is enabled. A difference that cannot be
changed safely stops the output with a message that names each column and the ALTER that would fix
it (checked again every 30 seconds), rather than writing into a table it does not understand.

### A ClickHouse cluster

`+"`cluster: <name>`"+` makes `+"`<table>_local`"+` on every node of that cluster (ON CLUSTER,
ReplicatedReplacingMergeTree with the `+"`{shard}`"+` and `+"`{replica}`"+` macros) and `+"`<table>`"+` as a Distributed
table over it, sharded by `+"`cityHash64(attacker_ip)`"+` so that every version of an IP lands on one
shard and FINAL collapses them there. Inserts and reads (warm start, shared lookups, the refresh
stream) all go through `+"`<table>`"+`.

ClickHouse wants 1k–100k rows per insert and about one insert a second: the default batching policy
flushes at 10,000 rows or every second.
`).
		Fields(
			service.NewStringField(fDSN).
				Description("The ClickHouse native DSN.").
				Example("clickhouse://127.0.0.1:9000/default").
				Example("${CLICKHOUSE_DSN:clickhouse://127.0.0.1:9000}"),
			service.NewStringField(fTable).Description("The table to insert into.").Example("attacker_intel").
				LintRule(`root = if !this.re_match("^[A-Za-z_][A-Za-z0-9_]*(\\.[A-Za-z_][A-Za-z0-9_]*)?$") { [ "table: %q is not a plain [database.]identifier".format(this) ] }`),
			service.NewStringListField(fColumns).Description("The columns to insert, in the order of an array from `args_mapping`. Optional with `auto_create`: all attacker_intel columns.").Default([]string{}),
			service.NewBloblangField(fArgsMapping).Description("A mapping returning the row: an array in `columns` order, or an object keyed by column name.").
				Example(`root = [ this.attacker_ip, this.aggregate_verdict ]`).
				Example(`root = this.intel`),
			service.NewStringField(fInitStatement).Description("A statement run once on connect (e.g. a CREATE TABLE of your own).").Optional().Advanced(),
			service.NewBoolField(fAutoCreate).Description("Create `table` as the attacker_intel table when it does not exist, and bring an older one up to date.").Default(false),
			service.NewIntField(fRetention).Description("With `auto_create`: delete a row this many days after it expired (a TTL). 0 keeps rows.").Default(0).
				LintRule(`root = if this < 0 { [ "retention_days must not be negative" ] }`),
			service.NewStringField(fCluster).Description("With `auto_create`: make the table on this ClickHouse cluster (replicated shards behind a Distributed table).").Default("").Advanced().
				LintRule(`root = if this != "" && !this.re_match("^[A-Za-z_][A-Za-z0-9_-]*$") { [ "cluster: %q is not a plain identifier".format(this) ] }`),
			service.NewStringField(fUsername).Description("A username, overriding the DSN's.").Default(""),
			service.NewStringField(fPassword).Description("A password, overriding the DSN's. Set it from the environment.").Default("").Secret(),
			service.NewDurationField(fDialTimeout).Description("How long a connection attempt may take.").Default("10s").Advanced(),
			service.NewStringEnumField(fCompression, "lz4", "zstd", "none").Description("Block compression on the wire.").Default("lz4").Advanced(),
			service.NewTLSToggledField(fTLS),
			service.NewBackOffField(fRetry, true, nil).Description("How long to wait before writing a batch again after the server refused it for its own state. `max_elapsed_time: 0s` retries for as long as it takes.").
				Default(map[string]any{"initial_interval": "500ms", "max_interval": "10s", "max_elapsed_time": "0s"}).Advanced(),
			service.NewOutputMaxInFlightField().Default(4),
			// Nested defaults of a default object are not filled in: spell out all.
			service.NewBatchPolicyField(fBatching).Default(map[string]any{"count": 10000, "byte_size": 0, "period": "1s", "check": "", "processors": []any{}}),
		).
		Example("attacker_intel rows", "Enriched events carry their row at `intel` (intel_enrich with `include_raw: true`).", `
output:
  clickhouse:
    dsn: ${CLICKHOUSE_DSN:clickhouse://127.0.0.1:9000/default}
    table: attacker_intel
    auto_create: true
    args_mapping: root = this.intel
`)
}

func init() {
	err := service.RegisterBatchOutput("clickhouse", spec(),
		func(conf *service.ParsedConfig, mgr *service.Resources) (out service.BatchOutput, pol service.BatchPolicy, mif int, err error) {
			if mif, err = conf.FieldMaxInFlight(); err != nil {
				return
			}
			if pol, err = conf.FieldBatchPolicy(fBatching); err != nil {
				return
			}
			out, err = newOutput(conf, mgr)
			return
		})
	if err != nil {
		panic(err)
	}
}

type output struct {
	opts    *ch.Options
	table   string
	columns []string
	mapping *bloblang.Executor
	// fastPath is set when args_mapping only selects an object (`root =
	// this` or `root = this.intel`): rows are then read from the message
	// with gjson, without a Bloblang run and a full decode per row.
	fastPath   *string
	colIndex   map[string]int
	initStmt   string
	autoCreate bool
	schema     chschema.Options
	retry      *backoff.ExponentialBackOff
	retries    *service.MetricCounter
	// insertLatency times each insert the server accepted; inserted
	// counts its rows.
	insertLatency *service.MetricTimer
	inserted      *service.MetricCounter
	// retried, when set, is told of each retry (tests wait on it).
	retried func(code int32)
	log     *service.Logger

	mu      sync.RWMutex
	conn    driver.Conn
	convs   []converter
	insert  string
	version chschema.Version
	// schemaErrAt is when a table we cannot write into was last reported:
	// Connect says it again only every schemaRecheck.
	schemaErrAt time.Time
}

// schemaRecheck is how often a table of a shape we cannot fix is checked
// again (the operator may ALTER it by hand while we wait).
const schemaRecheck = 30 * time.Second

func newOutput(conf *service.ParsedConfig, mgr *service.Resources) (*output, error) {
	o := &output{log: mgr.Logger(), retries: mgr.Metrics().NewCounter("clickhouse_insert_retries", "code"),
		insertLatency: mgr.Metrics().NewTimer("clickhouse_insert_latency_ns"),
		inserted:      mgr.Metrics().NewCounter("clickhouse_rows_inserted")}
	dsn, err := conf.FieldString(fDSN)
	if err != nil {
		return nil, err
	}
	if o.opts, err = ch.ParseDSN(dsn); err != nil {
		return nil, fmt.Errorf("%s: %w", fDSN, err)
	}
	if o.table, err = conf.FieldString(fTable); err != nil {
		return nil, err
	}
	if o.columns, err = conf.FieldStringList(fColumns); err != nil {
		return nil, err
	}
	if o.mapping, err = conf.FieldBloblang(fArgsMapping); err != nil {
		return nil, err
	}
	if src, err := conf.FieldString(fArgsMapping); err == nil {
		if m := plainSelect.FindStringSubmatch(src); m != nil {
			path := strings.TrimPrefix(m[1], ".")
			o.fastPath = &path
		}
	}
	if conf.Contains(fInitStatement) {
		if o.initStmt, err = conf.FieldString(fInitStatement); err != nil {
			return nil, err
		}
	}
	if o.autoCreate, err = conf.FieldBool(fAutoCreate); err != nil {
		return nil, err
	}
	o.schema.Table = o.table
	if o.schema.RetentionDays, err = conf.FieldInt(fRetention); err != nil {
		return nil, err
	}
	if o.schema.Cluster, err = conf.FieldString(fCluster); err != nil {
		return nil, err
	}
	if o.retry, err = conf.FieldBackOff(fRetry); err != nil {
		return nil, err
	}
	if len(o.columns) == 0 {
		if !o.autoCreate {
			return nil, fmt.Errorf("%s: required unless %s is set", fColumns, fAutoCreate)
		}
		o.columns = chschema.AttackerIntelColumns
	}
	o.colIndex = make(map[string]int, len(o.columns))
	for i, c := range o.columns {
		o.colIndex[c] = i
	}
	if user, _ := conf.FieldString(fUsername); user != "" {
		o.opts.Auth.Username = user
	}
	if pass, _ := conf.FieldString(fPassword); pass != "" {
		o.opts.Auth.Password = pass
	}
	if o.opts.DialTimeout, err = conf.FieldDuration(fDialTimeout); err != nil {
		return nil, err
	}
	comp, err := conf.FieldString(fCompression)
	if err != nil {
		return nil, err
	}
	switch comp {
	case "lz4":
		o.opts.Compression = &ch.Compression{Method: ch.CompressionLZ4}
	case "zstd":
		o.opts.Compression = &ch.Compression{Method: ch.CompressionZSTD}
	default:
		o.opts.Compression = nil
	}
	tlsConf, tlsOn, err := conf.FieldTLSToggled(fTLS)
	if err != nil {
		return nil, err
	}
	if tlsOn {
		o.opts.TLS = tlsConf
	}
	return o, nil
}

// Connect opens the connection, creates (or brings up to date) the table
// when asked, and reads the table's column types so rows can be converted
// before they are appended.
func (o *output) Connect(ctx context.Context) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.conn != nil {
		return nil
	}
	if !o.schemaErrAt.IsZero() {
		// A table we cannot write into: say so again at a walking pace.
		if err := sleepCtx(ctx, time.Until(o.schemaErrAt.Add(schemaRecheck))); err != nil {
			return err
		}
	}
	conn, err := ch.Open(o.opts)
	if err != nil {
		return err
	}
	if err := o.prepare(ctx, conn); err != nil {
		_ = conn.Close()
		var se *schemaError
		if errors.As(err, &se) {
			o.schemaErrAt = time.Now()
		}
		return err
	}
	o.schemaErrAt = time.Time{}
	o.conn = conn
	return nil
}

// schemaError is a table this output cannot write into as it is.
type schemaError struct{ err error }

func (e *schemaError) Error() string { return e.err.Error() }
func (e *schemaError) Unwrap() error { return e.err }

func (o *output) prepare(ctx context.Context, conn driver.Conn) error {
	if err := conn.Ping(ctx); err != nil {
		return fmt.Errorf("connecting to ClickHouse: %w", err)
	}
	sv, err := conn.ServerVersion()
	if err != nil {
		return err
	}
	o.version = chschema.Version{Major: int(sv.Version.Major), Minor: int(sv.Version.Minor)}
	if o.autoCreate {
		if err := o.ensureTable(ctx, conn); err != nil {
			return err
		}
	}
	if o.initStmt != "" {
		if err := conn.Exec(ctx, o.initStmt); err != nil {
			return fmt.Errorf("%s: %w", fInitStatement, err)
		}
	}
	cols, err := describe(ctx, conn, o.table)
	if err != nil {
		return err
	}
	types := make(map[string]string, len(cols))
	for _, c := range cols {
		types[c.Name] = c.Type
	}
	o.convs = make([]converter, len(o.columns))
	for i, c := range o.columns {
		typ, ok := types[c]
		if !ok {
			return &schemaError{fmt.Errorf("%s: table %s has no column %q", fColumns, o.table, c)}
		}
		if o.convs[i], err = converterFor(typ); err != nil {
			return &schemaError{fmt.Errorf("column %s: %w", c, err)}
		}
	}
	// Naming the columns is what lets 18.16 take native batch inserts.
	o.insert = fmt.Sprintf("INSERT INTO %s (%s)", o.table, strings.Join(o.columns, ", "))
	return nil
}

// ensureTable creates the attacker_intel table when it does not exist and
// brings an existing one to the shape this version writes.
func (o *output) ensureTable(ctx context.Context, conn driver.Conn) error {
	stmts, err := chschema.CreateStatements(o.schema, o.version)
	if err != nil {
		return &schemaError{err}
	}
	for _, q := range stmts {
		if err := conn.Exec(ctx, q); err != nil {
			return fmt.Errorf("creating %s on ClickHouse %s: %w", o.table, o.version, err)
		}
	}
	have, err := describe(ctx, conn, o.schema.LocalTable())
	if err != nil {
		return err
	}
	var engine string
	if err := conn.QueryRow(ctx, "SELECT engine_full FROM system.tables WHERE database = "+databaseOf(o.schema.LocalTable())+
		" AND name = '"+nameOf(o.schema.LocalTable())+"'").Scan(&engine); err != nil {
		return fmt.Errorf("reading the engine of %s: %w", o.schema.LocalTable(), err)
	}
	plan, err := chschema.Upgrade(o.schema, o.version, have, engine)
	if err != nil {
		o.log.Errorf("clickhouse: %v", err)
		return &schemaError{err}
	}
	for _, w := range plan.Warnings {
		o.log.Warnf("clickhouse: %s", w)
	}
	for _, q := range plan.Statements {
		o.log.Infof("clickhouse: bringing %s up to date: %s", o.table, q)
		if err := conn.Exec(ctx, q); err != nil {
			return &schemaError{fmt.Errorf("bringing %s up to date (%s): %w", o.table, q, err)}
		}
	}
	return nil
}

// databaseOf and nameOf split a validated [database.]name for a query on
// system.tables.
func databaseOf(table string) string {
	if i := strings.IndexByte(table, '.'); i >= 0 {
		return "'" + table[:i] + "'"
	}
	return "currentDatabase()"
}

func nameOf(table string) string { return table[strings.IndexByte(table, '.')+1:] }

// describe lists a table's columns and types, in order.
func describe(ctx context.Context, conn driver.Conn, table string) ([]chschema.Column, error) {
	rows, err := conn.Query(ctx, "DESCRIBE TABLE "+table)
	if err != nil {
		return nil, fmt.Errorf("describing %s: %w", table, err)
	}
	defer rows.Close()
	var out []chschema.Column
	cols := rows.Columns()
	for rows.Next() {
		vals := make([]any, len(cols))
		strs := make([]string, len(cols))
		for i := range vals {
			vals[i] = &strs[i]
		}
		if err := rows.Scan(vals...); err != nil {
			return nil, err
		}
		out = append(out, chschema.Column{Name: strs[0], Type: strs[1]})
	}
	return out, rows.Err()
}

// WriteBatch converts every row first; rows that do not fit are failed
// alone and the rest go out in one INSERT.
func (o *output) WriteBatch(ctx context.Context, batch service.MessageBatch) error {
	o.mu.RLock()
	conn, convs, insert := o.conn, o.convs, o.insert
	o.mu.RUnlock()
	if conn == nil {
		return service.ErrNotConnected
	}
	var batchErr *service.BatchError
	fail := func(i int, err error) {
		if batchErr == nil {
			batchErr = service.NewBatchError(batch, errors.New("rows refused"))
		}
		batchErr.Failed(i, err)
	}
	exec := batch.BloblangExecutor(o.mapping)
	rows := make([][]any, 0, len(batch))
	index := make([]int, 0, len(batch)) // rows[k] is batch[index[k]]
	var members []gjson.Result          // the fast path's, row after row
	if o.fastPath != nil {
		members = make([]gjson.Result, len(o.columns))
	}
	for i := range batch {
		row, err := o.row(exec, batch, i, convs, members)
		if err != nil {
			fail(i, fmt.Errorf("row for %s: %w", o.table, err))
			continue
		}
		rows = append(rows, row)
		index = append(index, i)
	}
	retry := *o.retry // this batch's own backoff
	retry.Reset()
	for len(rows) > 0 {
		err := o.sendIsolating(ctx, conn, insert, rows, index, fail)
		if err == nil {
			break
		}
		kind, code := classify(err)
		if kind == failConnection {
			// The server is down, the connection broke, or the table is
			// gone: not the rows' fault. Benthos reconnects (with backoff;
			// Connect re-creates the table) and writes the same batch again,
			// so a fallback output never sees an outage.
			o.log.Warnf("ClickHouse unreachable, reconnecting: %v", err)
			o.disconnect(conn)
			return service.ErrNotConnected
		}
		wait := retry.NextBackOff()
		o.retries.Incr(1, strconv.Itoa(int(code)))
		if o.retried != nil {
			o.retried(code)
		}
		o.log.Warnf("ClickHouse refused %d rows for its own state, writing them again in %s: %v", len(rows), wait, err)
		if wait == backoff.Stop {
			return fmt.Errorf("inserting into %s: giving up after %s: %w", o.table, retry.MaxElapsedTime, err)
		}
		if sleepCtx(ctx, wait) != nil {
			// Stopping: leave the batch unacknowledged, never to a fallback.
			return service.ErrNotConnected
		}
	}
	if batchErr != nil {
		return batchErr
	}
	return nil
}

var plainSelect = regexp.MustCompile(`^\s*root\s*=\s*this((?:\.[A-Za-z_][A-Za-z0-9_]*)*)\s*$`)

// row is batch[i]'s values, one per column; the fast path reads the
// row's members into members (one per column, overwritten).
func (o *output) row(exec *service.MessageBatchBloblangExecutor, batch service.MessageBatch, i int, convs []converter, members []gjson.Result) ([]any, error) {
	if o.fastPath != nil {
		return o.fastRow(batch[i], convs, members)
	}
	// Query (not QueryValue): only Query gives the mapping the message as
	// `this`.
	res, err := exec.Query(i)
	if err != nil {
		return nil, fmt.Errorf("args_mapping: %w", err)
	}
	if res == nil {
		return nil, errors.New("args_mapping deleted the row")
	}
	v, err := res.AsStructured()
	if err != nil {
		return nil, fmt.Errorf("args_mapping result: %w", err)
	}
	raw := make([]any, len(o.columns))
	switch x := v.(type) {
	case []any:
		if len(x) != len(o.columns) {
			return nil, fmt.Errorf("args_mapping returned %d values for %d columns", len(x), len(o.columns))
		}
		copy(raw, x)
	case map[string]any:
		for c, col := range o.columns {
			raw[c] = x[col]
		}
	default:
		return nil, fmt.Errorf("args_mapping returned %T, not an array or object", v)
	}
	row := make([]any, len(raw))
	for c, val := range raw {
		if row[c], err = convs[c](val); err != nil {
			return nil, fmt.Errorf("column %s: %w", o.columns[c], err)
		}
	}
	return row, nil
}

// fastRow reads the row's object with gjson and converts its members in
// one pass over the object. vals holds a member per column: a batch's rows
// share it (~90 bytes a column, a few KB a row: in a storm of new
// attackers it was most of what the output allocated).
func (o *output) fastRow(msg *service.Message, convs []converter, vals []gjson.Result) ([]any, error) {
	raw, err := msg.AsBytes()
	if err != nil {
		return nil, err
	}
	if len(raw) == 0 {
		return nil, errors.New("args_mapping: empty message")
	}
	// Read in place: every value is converted (copied) before raw goes.
	obj := gjson.Parse(unsafe.String(&raw[0], len(raw)))
	if *o.fastPath != "" {
		obj = obj.Get(*o.fastPath)
	}
	if !obj.IsObject() {
		return nil, fmt.Errorf("args_mapping: %s is not an object", orRoot(*o.fastPath))
	}
	clear(vals)
	obj.ForEach(func(k, v gjson.Result) bool {
		if c, ok := o.colIndex[k.Str]; ok {
			vals[c] = v
		}
		return true
	})
	row := make([]any, len(o.columns))
	for c, v := range vals {
		if row[c], err = convs[c](gjsonValue(v)); err != nil {
			return nil, fmt.Errorf("column %s: %w", o.columns[c], err)
		}
	}
	return row, nil
}

func orRoot(p string) string {
	if p == "" {
		return "the message"
	}
	return p
}

// gjsonValue is a JSON value as the converters take it; integers stay exact
// (a version in nanoseconds does not fit a float64).
func gjsonValue(r gjson.Result) any {
	switch r.Type {
	case gjson.Null:
		return nil
	case gjson.String:
		return r.Str
	case gjson.True:
		return true
	case gjson.False:
		return false
	case gjson.Number:
		if i, err := strconv.ParseInt(r.Raw, 10, 64); err == nil {
			return i
		}
		if u, err := strconv.ParseUint(r.Raw, 10, 64); err == nil {
			return u
		}
		return r.Num
	case gjson.JSON:
		if r.IsArray() {
			items := r.Array()
			out := make([]any, len(items))
			for i, it := range items {
				out[i] = gjsonValue(it)
			}
			return out
		}
		return r.Raw // an object stored as text
	}
	return nil
}

func (o *output) send(ctx context.Context, conn driver.Conn, insert string, rows [][]any) error {
	b, err := conn.PrepareBatch(ctx, insert)
	if err != nil {
		return fmt.Errorf("preparing insert into %s: %w", o.table, err)
	}
	defer b.Close()
	for _, row := range rows {
		if err := b.Append(row...); err != nil {
			_ = b.Abort()
			return fmt.Errorf("appending to %s: %w", o.table, err)
		}
	}
	start := time.Now()
	if err := b.Send(); err != nil {
		return fmt.Errorf("inserting %d rows into %s: %w", len(rows), o.table, err)
	}
	o.insertLatency.Timing(time.Since(start).Nanoseconds())
	o.inserted.Incr(int64(len(rows)))
	return nil
}

// sendIsolating inserts rows, isolating the rows the server refuses for
// their data.
func (o *output) sendIsolating(ctx context.Context, conn driver.Conn, insert string, rows [][]any, index []int, fail func(int, error)) error {
	return o.isolate(rows, index, func(rows [][]any) error { return o.send(ctx, conn, insert, rows) }, fail)
}

// isolate sends rows; when the server blames the data it splits them in
// halves until each row at fault is found, and fails only those
// (fail(index[k], …)). Any other error is returned for the whole batch.
func (o *output) isolate(rows [][]any, index []int, send func([][]any) error, fail func(int, error)) error {
	err := send(rows)
	if err == nil {
		return nil
	}
	if kind, _ := classify(err); kind != failRows {
		return err
	}
	if len(rows) == 1 {
		fail(index[0], fmt.Errorf("ClickHouse refused the row: %w", err))
		return nil
	}
	half := len(rows) / 2
	if err := o.isolate(rows[:half], index[:half], send, fail); err != nil {
		return err
	}
	return o.isolate(rows[half:], index[half:], send, fail)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// disconnect drops conn if it is still the current connection.
func (o *output) disconnect(conn driver.Conn) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.conn == conn {
		_ = o.conn.Close()
		o.conn = nil
	}
}

func (o *output) Close(context.Context) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.conn == nil {
		return nil
	}
	err := o.conn.Close()
	o.conn = nil
	return err
}
