// Package chtest starts a real local ClickHouse server for a test (see
// internal/chserver) with its data in the test's temporary directory, and
// stops it when the test ends.
package chtest

import (
	"context"
	"testing"

	"github.com/decnet/decnet-stream/internal/chserver"
)

// Server is a running test server.
type Server struct {
	*chserver.Server
	t testing.TB
}

// Start starts a server for t and stops it when t ends.
func Start(t testing.TB) *Server {
	t.Helper()
	srv, err := chserver.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Server: srv, t: t}
	s.Start()
	t.Cleanup(s.Stop)
	return s
}

// Start (re)starts the server and waits until it answers.
func (s *Server) Start() {
	s.t.Helper()
	if err := s.Server.Start(); err != nil {
		s.t.Fatal(err)
	}
}

// Stop stops the server; its data stays for a later Start.
func (s *Server) Stop() {
	if err := s.Server.Stop(); err != nil {
		s.t.Error(err)
	}
}

// Query runs q on the server at dsn and returns every row, each value
// printed with fmt (NULL as "NULL").
func Query(t testing.TB, dsn, q string) [][]string {
	t.Helper()
	rows, err := chserver.Query(context.Background(), dsn, q)
	if err != nil {
		t.Fatal(err)
	}
	return rows
}
