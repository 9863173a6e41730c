package main

import (
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/twmb/franz-go/pkg/kfake"
	ucli "github.com/urfave/cli/v2"

	"github.com/decnet/decnet-stream/internal/broker"
)

// brokerCommand is `decnet-stream broker`: the embedded Kafka cluster that is
// the default broker for local runs, tests and benchmarks.
func brokerCommand() *ucli.Command {
	return &ucli.Command{
		Name:  "broker",
		Usage: "Run an embedded Kafka broker (franz-go kfake) for local runs and tests",
		Description: `Serves the Kafka wire protocol on a loopback address until SIGINT or SIGTERM.
Topics are created on first use with --partitions partitions. Any Kafka client
(kcat, librdkafka, franz-go, Java) can produce, consume and join groups.
Not for production: one node, no replication, in memory unless --data-dir.`,
		Flags: []ucli.Flag{
			&ucli.StringFlag{Name: "addr", Value: "127.0.0.1:9092", Usage: "host:port to listen on"},
			&ucli.IntFlag{Name: "partitions", Value: 6, Usage: "partitions of each auto-created topic"},
			&ucli.StringSliceFlag{Name: "topic", Usage: "a topic to create at start (repeatable)"},
			&ucli.StringFlag{Name: "data-dir", Usage: "persist the log in this directory"},
			&ucli.StringFlag{Name: "log-level", Value: "info", Usage: "none, error, warn, info or debug"},
		},
		Action: func(c *ucli.Context) error {
			level, err := parseLogLevel(c.String("log-level"))
			if err != nil {
				return err
			}
			b, err := broker.Start(broker.Config{
				Addr:       c.String("addr"),
				Partitions: c.Int("partitions"),
				Topics:     c.StringSlice("topic"),
				DataDir:    c.String("data-dir"),
				Logger:     kfake.BasicLogger(os.Stderr, level),
			})
			if err != nil {
				return err
			}
			defer b.Close()
			fmt.Fprintf(c.App.Writer, "decnet-stream broker: serving Kafka on %s (%d partitions per new topic)\n", b.Addr(), c.Int("partitions"))
			sig := make(chan os.Signal, 1)
			signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
			s := <-sig
			fmt.Fprintf(c.App.Writer, "decnet-stream broker: %v received, stopping\n", s)
			return nil
		},
	}
}

func parseLogLevel(s string) (kfake.LogLevel, error) {
	switch strings.ToLower(s) {
	case "none":
		return kfake.LogLevelNone, nil
	case "error":
		return kfake.LogLevelError, nil
	case "warn":
		return kfake.LogLevelWarn, nil
	case "info":
		return kfake.LogLevelInfo, nil
	case "debug":
		return kfake.LogLevelDebug, nil
	}
	return 0, fmt.Errorf("unknown log level %q", s)
}
