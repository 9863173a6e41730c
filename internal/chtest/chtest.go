// Package chtest starts a real local ClickHouse server for a test, through
// scripts/clickhouse.sh, on free loopback ports with its data in the test's
// temporary directory. The server is Debian's clickhouse-server, installed
// by the script (or .ci/run) when missing.
package chtest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"testing"

	ch "github.com/ClickHouse/clickhouse-go/v2"
)

// Server is a running test server.
type Server struct {
	t       testing.TB
	script  string
	env     []string
	TCPPort int
}

// DSN is the clickhouse-go DSN of the server's default database.
func (s *Server) DSN() string { return fmt.Sprintf("clickhouse://127.0.0.1:%d/default", s.TCPPort) }

// Start starts a server for t and stops it when t ends.
func Start(t testing.TB) *Server {
	t.Helper()
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{t: t, script: filepath.Join(root, "scripts", "clickhouse.sh"), TCPPort: freePort(t)}
	s.env = append(os.Environ(),
		"CLICKHOUSE_DIR="+t.TempDir(),
		fmt.Sprintf("CLICKHOUSE_TCP_PORT=%d", s.TCPPort),
		fmt.Sprintf("CLICKHOUSE_HTTP_PORT=%d", freePort(t)),
	)
	s.Start()
	t.Cleanup(s.Stop)
	return s
}

// Start (re)starts the server and waits until it answers.
func (s *Server) Start() {
	s.t.Helper()
	s.run("start")
}

// Stop stops the server; its data stays for a later Start.
func (s *Server) Stop() { s.run("stop") }

func (s *Server) run(action string) {
	cmd := exec.Command("bash", s.script, action)
	cmd.Env = s.env
	if out, err := cmd.CombinedOutput(); err != nil {
		s.t.Fatalf("clickhouse.sh %s: %v\n%s", action, err, out)
	}
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func repoRoot() (string, error) {
	d, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no go.mod above the working directory")
		}
		d = filepath.Dir(d)
	}
}

// Query runs q on the server at dsn and returns every row, each value
// printed with fmt (NULL as "NULL").
func Query(t testing.TB, dsn, q string) [][]string {
	t.Helper()
	opts, err := ch.ParseDSN(dsn)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := ch.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rows, err := conn.Query(context.Background(), q)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	defer rows.Close()
	var out [][]string
	for rows.Next() {
		types := rows.ColumnTypes()
		vals := make([]any, len(types))
		for i, ct := range types {
			vals[i] = reflect.New(ct.ScanType()).Interface()
		}
		if err := rows.Scan(vals...); err != nil {
			t.Fatal(err)
		}
		row := make([]string, len(vals))
		for i, v := range vals {
			rv := reflect.ValueOf(v)
			for rv.Kind() == reflect.Pointer && !rv.IsNil() {
				rv = rv.Elem()
			}
			if rv.Kind() == reflect.Pointer {
				row[i] = "NULL"
			} else {
				row[i] = fmt.Sprint(rv.Interface())
			}
		}
		out = append(out, row)
	}
	return out
}
