// Package chserver starts and stops a real local ClickHouse server through
// scripts/clickhouse.sh, on loopback ports of the caller's choice (free ones
// by default) with its data in a folder of the caller's. Tests reach it
// through internal/chtest; the benchmark command uses it directly. The
// server is Debian's clickhouse-server, installed by the script (or .ci/run)
// when missing.
package chserver

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"

	ch "github.com/ClickHouse/clickhouse-go/v2"
)

// Server is a local server managed by scripts/clickhouse.sh.
type Server struct {
	script  string
	env     []string
	dir     string
	TCPPort int
}

// New describes a server with its data under dir, on free loopback ports.
// Nothing starts until Start.
func New(dir string) (*Server, error) {
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	tcp, err := FreePort()
	if err != nil {
		return nil, err
	}
	httpPort, err := FreePort()
	if err != nil {
		return nil, err
	}
	return &Server{
		script:  filepath.Join(root, "scripts", "clickhouse.sh"),
		dir:     dir,
		TCPPort: tcp,
		env: append(os.Environ(),
			"CLICKHOUSE_DIR="+dir,
			fmt.Sprintf("CLICKHOUSE_TCP_PORT=%d", tcp),
			fmt.Sprintf("CLICKHOUSE_HTTP_PORT=%d", httpPort)),
	}, nil
}

// DSN is the clickhouse-go DSN of the server's default database.
func (s *Server) DSN() string { return fmt.Sprintf("clickhouse://127.0.0.1:%d/default", s.TCPPort) }

// Pid is the running server's process id (scripts/clickhouse.sh keeps it
// in server.pid), or 0 when it is not running.
func (s *Server) Pid() int {
	b, err := os.ReadFile(filepath.Join(s.dir, "server.pid"))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// Start (re)starts the server and waits until it answers.
func (s *Server) Start() error { return s.run("start") }

// Stop stops the server; its data stays for a later Start.
func (s *Server) Stop() error { return s.run("stop") }

func (s *Server) run(action string) error {
	cmd := exec.Command("bash", s.script, action)
	cmd.Env = s.env
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("clickhouse.sh %s: %w\n%s", action, err, out)
	}
	return nil
}

// SetProfileSetting overrides a setting of the default user's profile
// (max_memory_usage, readonly, …) through users.d, which the running server
// reloads by itself within a few seconds: fault tests make the server refuse
// queries for its own state this way, as a busy production server would.
// An empty value removes every override.
func (s *Server) SetProfileSetting(name, value string) error {
	d := filepath.Join(s.dir, "users.d")
	if value == "" {
		return os.RemoveAll(d)
	}
	if err := os.MkdirAll(d, 0o755); err != nil {
		return err
	}
	xml := fmt.Sprintf("<?xml version=\"1.0\"?>\n<yandex><profiles><default><%s>%s</%s></default></profiles></yandex>\n", name, value, name)
	return os.WriteFile(filepath.Join(d, "fault.xml"), []byte(xml), 0o644)
}

// FreePort is a loopback TCP port nothing listens on now.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// RepoRoot is the nearest folder above the working directory with a go.mod.
func RepoRoot() (string, error) {
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

// Exec runs a statement that returns no rows (DDL,
// INSERT … SELECT, SYSTEM …) on the server at dsn.
func Exec(ctx context.Context, dsn, q string) error {
	opts, err := ch.ParseDSN(dsn)
	if err != nil {
		return err
	}
	conn, err := ch.Open(opts)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.Exec(ctx, q); err != nil {
		return fmt.Errorf("%s: %w", q, err)
	}
	return nil
}

// Query runs q on the server at dsn and returns every row, each value
// printed with fmt (NULL as "NULL").
func Query(ctx context.Context, dsn, q string) ([][]string, error) {
	opts, err := ch.ParseDSN(dsn)
	if err != nil {
		return nil, err
	}
	conn, err := ch.Open(opts)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	rows, err := conn.Query(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", q, err)
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
			return nil, err
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
	return out, rows.Err()
}
