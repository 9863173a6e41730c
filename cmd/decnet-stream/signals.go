package main

import (
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

// holdEarlyTerm keeps a SIGTERM that arrives while streams are starting
// from killing the process. Benthos starts every stream first and only
// then listens for signals, so a stop from the workers panel read in that
// window (worker_control raises SIGTERM), or an orchestrator's, took the
// default action: the process died with nothing drained or committed. The
// signal is held and raised again until Benthos, listening by then, shuts
// down gracefully and the process exits.
func holdEarlyTerm(args []string) {
	if !servesStreams(args) {
		return
	}
	held := make(chan os.Signal, 1)
	signal.Notify(held, syscall.SIGTERM)
	var once sync.Once
	go func() {
		for range held {
			once.Do(func() {
				go func() {
					for {
						time.Sleep(500 * time.Millisecond)
						_ = syscall.Kill(os.Getpid(), syscall.SIGTERM)
					}
				}()
			})
		}
	}()
}

// servesStreams reports whether args run streams (run, streams, or the
// default command given only flags).
func servesStreams(args []string) bool {
	if len(args) < 2 {
		return true
	}
	switch a := args[1]; {
	case a == "run", a == "streams":
		return true
	case len(a) > 0 && a[0] == '-':
		for _, b := range args[1:] {
			if b == "lint" || b == "test" || b == "echo" || b == "list" || b == "blobl" {
				return false
			}
		}
		return true
	}
	return false
}
