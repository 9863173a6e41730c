package clickhouse

import (
	"context"
	"errors"
	"fmt"
	"testing"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/redpanda-data/benthos/v4/public/service"

	"github.com/decnet/decnet-stream/internal/chschema"
	"github.com/decnet/decnet-stream/internal/chserver"
	"github.com/decnet/decnet-stream/internal/chtest"
)

// A server that refuses inserts for its own state gets the same batch again
// with backoff until it takes it: WriteBatch does not return an error, which
// would send a fallback output (the dead letters) 10,000 rows that did
// nothing wrong. The fault is real: merges stopped on a table that throws at
// 3 parts, so the server answers TOO_MANY_PARTS (252) until they resume.
func TestBusyServerIsRetriedNotDeadLettered(t *testing.T) {
	srv := chtest.Start(t)
	ctx := context.Background()
	stmts, err := chschema.CreateStatements(chschema.Options{Table: "attacker_intel"}, chschema.Version{Major: 18, Minor: 16})
	if err != nil {
		t.Fatal(err)
	}
	exec := func(q string) {
		t.Helper()
		if err := chserver.Exec(ctx, srv.DSN(), q); err != nil {
			t.Fatal(err)
		}
	}
	exec(stmts[0] + "\nSETTINGS parts_to_delay_insert = 2, parts_to_throw_insert = 3")
	o := newTestOutput(t, srv.DSN(), "retry: { initial_interval: 50ms, max_interval: 200ms }")
	retries := make(chan int32, 1000)
	o.retried = func(code int32) { retries <- code }

	exec("SYSTEM STOP MERGES")
	for i := 0; i < 3; i++ {
		exec(fmt.Sprintf("INSERT INTO attacker_intel (attacker_ip, cached_at, expires_at, version) SELECT '45.200.0.%d', now(), now(), 1", i))
	}
	const n = 10_000
	batch := make(service.MessageBatch, 0, n)
	for i := 0; i < n; i++ {
		batch = append(batch, row(ipN(i), "malicious", 1))
	}
	done := make(chan error, 1)
	go func() { done <- o.WriteBatch(ctx, batch) }()
	for seen := 0; seen < 3; seen++ {
		select {
		case code := <-retries:
			if code != 252 {
				t.Fatalf("retried on code %d, want 252 (TOO_MANY_PARTS)", code)
			}
		case err := <-done:
			t.Fatalf("the write returned %v while the server refused it", err)
		}
	}
	exec("SYSTEM START MERGES")
	exec("OPTIMIZE TABLE attacker_intel FINAL")
	if err := <-done; err != nil {
		t.Fatalf("after the server recovered: %v, want every row written", err)
	}
	if got := query(t, srv.DSN(), "SELECT count() FROM attacker_intel FINAL WHERE attacker_ip LIKE '45.0.%'"); got != fmt.Sprint(n) {
		t.Fatalf("%s rows, want %d", got, n)
	}
}

// Rows that the server itself refuses for their data (an exception that
// blames the values) are found by splitting the batch, and fail alone;
// the others land. The server here cannot be made to refuse a value our
// converters let through, so send is replaced by one that refuses two rows
// as ClickHouse does (TYPE_MISMATCH, 53).
func TestRowsTheServerRefusesFailAlone(t *testing.T) {
	o := &output{table: "t"}
	var landed []string
	bad := map[string]bool{"45.0.0.3": true, "45.0.0.6": true}
	send := func(rows [][]any) error {
		for _, r := range rows {
			if bad[r[0].(string)] {
				return &ch.Exception{Code: 53, Name: "TYPE_MISMATCH", Message: "cannot convert"}
			}
		}
		for _, r := range rows {
			landed = append(landed, r[0].(string))
		}
		return nil
	}
	var rows [][]any
	var index []int
	for i := 0; i < 8; i++ {
		rows = append(rows, []any{fmt.Sprintf("45.0.0.%d", i)})
		index = append(index, i)
	}
	failed := map[int]error{}
	if err := o.isolate(rows, index, send, func(i int, err error) { failed[i] = err }); err != nil {
		t.Fatal(err)
	}
	if len(failed) != 2 || failed[3] == nil || failed[6] == nil || len(landed) != 6 {
		t.Fatalf("failed %v, landed %v", failed, landed)
	}
	// Anything else the server says is not the rows' fault: returned whole.
	busy := func([][]any) error { return &ch.Exception{Code: 252, Name: "TOO_MANY_PARTS"} }
	if err := o.isolate(rows, index, busy, func(int, error) { t.Fatal("a busy server failed a row") }); err == nil {
		t.Fatal("a busy server's answer was swallowed")
	}
}

func TestExceptionsAreClassified(t *testing.T) {
	for code, want := range map[int32]failure{241: failTransient, 252: failTransient, 159: failTransient, 242: failTransient, 53: failRows, 60: failConnection} {
		if got, _ := classify(fmt.Errorf("wrapped: %w", &ch.Exception{Code: code})); got != want {
			t.Errorf("code %d: %v, want %v", code, got, want)
		}
	}
	if got, _ := classify(errors.New("connection refused")); got != failConnection {
		t.Errorf("a network error: %v", got)
	}
}
