package clickhouse

import (
	"context"
	"fmt"
	"sync"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/redpanda-data/benthos/v4/public/service"
)

const (
	fQuery        = "query"
	fPollInterval = "poll_interval"
)

func selectSpec() *service.ConfigSpec {
	return service.NewConfigSpec().
		Beta().
		Categories("Services").
		Summary("Runs a ClickHouse query every `poll_interval` and emits each row as a JSON object.").
		Description(`
Each poll is one batch; the next poll starts when the batch is acknowledged (or the interval has passed,
whichever is later), so a slow pipeline is never handed overlapping results. Nothing is tracked between
polls: the query itself says what is due (e.g. expired rows), so a row that was not processed is simply
selected again. DECNET's refresh stream (`+"`config/streams/refresh.yaml`"+`) uses it to feed expired and
partial attacker_intel rows back for re-enrichment.
`).
		Fields(
			service.NewStringField(fDSN).Description("The ClickHouse native DSN.").Example("${CLICKHOUSE_DSN:clickhouse://127.0.0.1:9000/default}"),
			service.NewStringField(fQuery).Description("The query. Columns become the keys of each message.").
				Example("SELECT attacker_ip FROM attacker_intel FINAL WHERE expires_at < now()"),
			service.NewDurationField(fPollInterval).Description("How often to run the query.").Default("60s"),
			service.NewStringField(fUsername).Default(""),
			service.NewStringField(fPassword).Default("").Secret(),
		)
}

func init() {
	err := service.RegisterBatchInput("clickhouse_select", selectSpec(),
		func(conf *service.ParsedConfig, mgr *service.Resources) (service.BatchInput, error) {
			return newSelectInput(conf)
		})
	if err != nil {
		panic(err)
	}
}

type selectInput struct {
	opts     *ch.Options
	query    string
	interval time.Duration

	mu       sync.Mutex
	conn     driver.Conn
	nextPoll time.Time
	acked    chan struct{}
}

func newSelectInput(conf *service.ParsedConfig) (*selectInput, error) {
	dsn, err := conf.FieldString(fDSN)
	if err != nil {
		return nil, err
	}
	in := &selectInput{}
	if in.opts, err = ch.ParseDSN(dsn); err != nil {
		return nil, fmt.Errorf("%s: %w", fDSN, err)
	}
	if user, _ := conf.FieldString(fUsername); user != "" {
		in.opts.Auth.Username = user
	}
	if pass, _ := conf.FieldString(fPassword); pass != "" {
		in.opts.Auth.Password = pass
	}
	if in.query, err = conf.FieldString(fQuery); err != nil {
		return nil, err
	}
	if in.interval, err = conf.FieldDuration(fPollInterval); err != nil {
		return nil, err
	}
	return in, nil
}

func (in *selectInput) Connect(ctx context.Context) error {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.conn != nil {
		return nil
	}
	conn, err := ch.Open(in.opts)
	if err != nil {
		return err
	}
	if err := conn.Ping(ctx); err != nil {
		_ = conn.Close()
		return err
	}
	in.conn = conn
	return nil
}

func (in *selectInput) ReadBatch(ctx context.Context) (service.MessageBatch, service.AckFunc, error) {
	for {
		in.mu.Lock()
		conn, next, acked := in.conn, in.nextPoll, in.acked
		in.mu.Unlock()
		if conn == nil {
			return nil, nil, service.ErrNotConnected
		}
		if acked != nil { // the previous poll's batch is still in flight
			select {
			case <-acked:
			case <-ctx.Done():
				return nil, nil, ctx.Err()
			}
		}
		if wait := time.Until(next); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return nil, nil, ctx.Err()
			}
		}
		in.mu.Lock()
		in.nextPoll = time.Now().Add(in.interval)
		in.acked = nil
		in.mu.Unlock()

		batch, err := in.poll(ctx, conn)
		if _, code := classify(err); code == 60 {
			// UNKNOWN_TABLE: a first run, before the output made the table.
			// Nothing is due yet; not worth an error.
			continue
		}
		if err != nil {
			in.mu.Lock()
			if in.conn != nil {
				_ = in.conn.Close()
				in.conn = nil
			}
			in.mu.Unlock()
			return nil, nil, fmt.Errorf("%w: %v", service.ErrNotConnected, err)
		}
		if len(batch) == 0 {
			continue // nothing due: wait for the next poll
		}
		done := make(chan struct{})
		in.mu.Lock()
		in.acked = done
		in.mu.Unlock()
		var once sync.Once
		return batch, func(context.Context, error) error {
			once.Do(func() { close(done) })
			return nil
		}, nil
	}
}

func (in *selectInput) poll(ctx context.Context, conn driver.Conn) (service.MessageBatch, error) {
	rows, err := conn.Query(ctx, in.query)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	cols := rows.Columns()
	types := rows.ColumnTypes()
	var batch service.MessageBatch
	for rows.Next() {
		vals := make([]any, len(cols))
		for i, ct := range types {
			vals[i] = newScanTarget(ct.ScanType())
		}
		if err := rows.Scan(vals...); err != nil {
			return nil, err
		}
		obj := make(map[string]any, len(cols))
		for i, c := range cols {
			obj[c] = derefScan(vals[i])
		}
		msg := service.NewMessage(nil)
		msg.SetStructuredMut(obj)
		batch = append(batch, msg)
	}
	return batch, rows.Err()
}

func (in *selectInput) Close(context.Context) error {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.conn == nil {
		return nil
	}
	err := in.conn.Close()
	in.conn = nil
	return err
}
