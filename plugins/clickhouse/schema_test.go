package clickhouse

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redpanda-data/benthos/v4/public/service"

	"github.com/decnet/decnet-stream/internal/chschema"
	"github.com/decnet/decnet-stream/internal/chserver"
	"github.com/decnet/decnet-stream/internal/chtest"
)

// A table from an older release (no carrier columns, no version) is brought
// up to date on connect, and rows land in it.
func TestAnOlderTableIsBroughtUpToDate(t *testing.T) {
	srv := chtest.Start(t)
	ctx := context.Background()
	cols := chschema.Columns(chschema.Version{Major: 18, Minor: 16})
	var defs []string
	for _, c := range cols[:len(cols)-4] {
		defs = append(defs, c.Name+" "+c.Type)
	}
	if err := chserver.Exec(ctx, srv.DSN(), "CREATE TABLE attacker_intel ("+strings.Join(defs, ", ")+") ENGINE = ReplacingMergeTree(cached_at) ORDER BY attacker_ip"); err != nil {
		t.Fatal(err)
	}
	o := newTestOutput(t, srv.DSN(), "")
	if err := o.WriteBatch(ctx, service.MessageBatch{row("45.3.3.3", "malicious", 1)}); err != nil {
		t.Fatal(err)
	}
	if got := query(t, srv.DSN(), "SELECT carrier_topic, toString(carrier_offset) FROM attacker_intel"); got != "attacker.observed,7" {
		t.Fatalf("the added columns read %q", got)
	}
}

// A table whose columns cannot be changed safely stops the output with the
// columns and the fix named, and is checked again at a walking pace, not in
// a tight connection loop.
func TestATableOfAnotherShapeIsReportedNotLooped(t *testing.T) {
	srv := chtest.Start(t)
	ctx := context.Background()
	if err := chserver.Exec(ctx, srv.DSN(), "CREATE TABLE attacker_intel (attacker_ip String, abuseipdb_score String, version UInt64) ENGINE = ReplacingMergeTree(version) ORDER BY attacker_ip"); err != nil {
		t.Fatal(err)
	}
	conf, err := spec().ParseYAML(fmt.Sprintf("dsn: %s\ntable: attacker_intel\nauto_create: true\nargs_mapping: root = this\n", srv.DSN()), nil)
	if err != nil {
		t.Fatal(err)
	}
	o, err := newOutput(conf, service.MockResources())
	if err != nil {
		t.Fatal(err)
	}
	err = o.Connect(ctx)
	var se *schemaError
	if !errors.As(err, &se) || !strings.Contains(err.Error(), "column abuseipdb_score is String, want Nullable(UInt8)") ||
		!strings.Contains(err.Error(), "MODIFY COLUMN abuseipdb_score Nullable(UInt8)") {
		t.Fatalf("got %v", err)
	}
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := o.Connect(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("the second attempt: %v after %s, want it to wait for the recheck", err, time.Since(start))
	}
}

// Two versions 1 ns apart keep their order: integers never pass through a
// float64 on their way to ClickHouse.
func TestVersionsOneNanosecondApartKeepTheirOrder(t *testing.T) {
	conv := integer("UInt64")
	for _, v := range []any{int64(1795985734123456789), "1795985734123456789", uint64(18446744073709551615)} {
		got, err := conv(v)
		if err != nil || fmt.Sprint(got) != fmt.Sprint(v) {
			t.Errorf("%T %v became %v (%v)", v, v, got, err)
		}
	}
	if _, err := conv(1.795985734123456789e18); err == nil {
		t.Error("a float too large to be exact was accepted")
	}
	for typ, bad := range map[string]any{"UInt8": int64(256), "Int8": int64(-129), "UInt64": int64(-1), "Int64": uint64(1 << 63)} {
		if _, err := integer(typ)(bad); err == nil {
			t.Errorf("%s took %v", typ, bad)
		}
	}

	srv := chtest.Start(t)
	o := newTestOutput(t, srv.DSN(), "")
	older := row("45.4.4.4", "benign", 1)
	newer := row("45.4.4.4", "malicious", 1)
	const v = 1795985734123456789
	older.SetBytes([]byte(strings.Replace(string(mustBytes(older)), fmt.Sprintf(`"version": %d`, rowVersion(1)), fmt.Sprintf(`"version": %d`, v), 1)))
	newer.SetBytes([]byte(strings.Replace(string(mustBytes(newer)), fmt.Sprintf(`"version": %d`, rowVersion(1)), fmt.Sprintf(`"version": %d`, v+1), 1)))
	// The newer arrives first: only the version decides.
	for _, m := range []*service.Message{newer, older} {
		if err := o.WriteBatch(context.Background(), service.MessageBatch{m}); err != nil {
			t.Fatal(err)
		}
	}
	if got := query(t, srv.DSN(), "SELECT aggregate_verdict, toString(version) FROM attacker_intel FINAL"); got != fmt.Sprintf("malicious,%d", v+1) {
		t.Fatalf("FINAL kept %q", got)
	}
}

func mustBytes(m *service.Message) []byte {
	b, err := m.AsBytes()
	if err != nil {
		panic(err)
	}
	return b
}

func rowVersion(version int64) int64 {
	return time.Date(2025, 6, 15, 8, 6, 0, 0, time.UTC).Add(time.Duration(version) * time.Second).UnixNano()
}
