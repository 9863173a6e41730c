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
	"unsafe"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
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

### The attacker_intel table

With `+"`auto_create: true`"+` the output creates `+"`table`"+` as DECNET's `+"`attacker_intel`"+` table when it does
not exist, from the DDL built into this binary, using LowCardinality and TTL only where the server's
version supports them (Debian's ClickHouse 18.16 has neither). `+"`columns`"+` then defaults to all of its
columns.

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
			service.NewBoolField(fAutoCreate).Description("Create `table` as the attacker_intel table when it does not exist.").Default(false),
			service.NewStringField(fUsername).Description("A username, overriding the DSN's.").Default(""),
			service.NewStringField(fPassword).Description("A password, overriding the DSN's. Set it from the environment.").Default("").Secret(),
			service.NewDurationField(fDialTimeout).Description("How long a connection attempt may take.").Default("10s").Advanced(),
			service.NewStringEnumField(fCompression, "lz4", "zstd", "none").Description("Block compression on the wire.").Default("lz4").Advanced(),
			service.NewTLSToggledField(fTLS),
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
	log        *service.Logger

	mu      sync.RWMutex
	conn    driver.Conn
	convs   []converter
	insert  string
	version chschema.Version
}

func newOutput(conf *service.ParsedConfig, mgr *service.Resources) (*output, error) {
	o := &output{log: mgr.Logger()}
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

// Connect opens the connection, creates the table when asked, and reads the
// table's column types so rows can be converted before they are appended.
func (o *output) Connect(ctx context.Context) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.conn != nil {
		return nil
	}
	conn, err := ch.Open(o.opts)
	if err != nil {
		return err
	}
	if err := o.prepare(ctx, conn); err != nil {
		_ = conn.Close()
		return err
	}
	o.conn = conn
	return nil
}

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
		ddl, err := chschema.AttackerIntelDDL(o.table, o.version)
		if err != nil {
			return err
		}
		if err := conn.Exec(ctx, ddl); err != nil {
			return fmt.Errorf("creating %s: %w", o.table, err)
		}
	}
	if o.initStmt != "" {
		if err := conn.Exec(ctx, o.initStmt); err != nil {
			return fmt.Errorf("%s: %w", fInitStatement, err)
		}
	}
	types, err := columnTypes(ctx, conn, o.table)
	if err != nil {
		return err
	}
	o.convs = make([]converter, len(o.columns))
	for i, c := range o.columns {
		typ, ok := types[c]
		if !ok {
			return fmt.Errorf("%s: table %s has no column %q", fColumns, o.table, c)
		}
		if o.convs[i], err = converterFor(typ); err != nil {
			return fmt.Errorf("column %s: %w", c, err)
		}
	}
	// Naming the columns is what lets 18.16 take native batch inserts.
	o.insert = fmt.Sprintf("INSERT INTO %s (%s)", o.table, strings.Join(o.columns, ", "))
	return nil
}

func columnTypes(ctx context.Context, conn driver.Conn, table string) (map[string]string, error) {
	rows, err := conn.Query(ctx, "DESCRIBE TABLE "+table)
	if err != nil {
		return nil, fmt.Errorf("describing %s: %w", table, err)
	}
	defer rows.Close()
	types := map[string]string{}
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
		types[strs[0]] = strs[1]
	}
	return types, rows.Err()
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
	for i := range batch {
		row, err := o.row(exec, batch, i, convs)
		if err != nil {
			fail(i, fmt.Errorf("row for %s: %w", o.table, err))
			continue
		}
		rows = append(rows, row)
	}
	if len(rows) > 0 {
		if err := o.send(ctx, conn, insert, rows); err != nil {
			if !serverRefused(err) {
				// The server is down or the connection broke: not the rows'
				// fault. Benthos reconnects (with backoff) and writes the same
				// batch again, so a fallback output never sees an outage.
				o.log.Warnf("ClickHouse unreachable, reconnecting: %v", err)
				o.disconnect(conn)
				return service.ErrNotConnected
			}
			return err // refused by the server: the batch fails, with the reason
		}
	}
	if batchErr != nil {
		return batchErr
	}
	return nil
}

var plainSelect = regexp.MustCompile(`^\s*root\s*=\s*this((?:\.[A-Za-z_][A-Za-z0-9_]*)*)\s*$`)

func (o *output) row(exec *service.MessageBatchBloblangExecutor, batch service.MessageBatch, i int, convs []converter) ([]any, error) {
	if o.fastPath != nil {
		return o.fastRow(batch[i], convs)
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
// one pass over the object.
func (o *output) fastRow(msg *service.Message, convs []converter) ([]any, error) {
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
	vals := make([]gjson.Result, len(o.columns))
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
	if err := b.Send(); err != nil {
		return fmt.Errorf("inserting %d rows into %s: %w", len(rows), o.table, err)
	}
	return nil
}

// serverRefused reports whether ClickHouse itself answered err (an
// exception: a schema or data problem), as opposed to being unreachable.
func serverRefused(err error) bool {
	var exc *ch.Exception
	return errors.As(err, &exc)
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
