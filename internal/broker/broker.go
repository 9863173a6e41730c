// Package broker runs an embedded Kafka cluster (franz-go's kfake) for local
// runs, tests and benchmarks. It is a real Kafka wire-protocol server: any
// client, kcat and librdkafka included, can produce, consume and join
// consumer groups against it. It is not a production broker: there is no
// replication, and data lives in memory unless a data directory is given.
package broker

import (
	"fmt"
	"net"
	"strconv"

	"github.com/twmb/franz-go/pkg/kfake"
)

// Config says how to start the embedded broker. The zero value listens on a
// free loopback port with kfake's defaults.
type Config struct {
	// Addr is host:port to listen on; port 0 picks a free one.
	// Default "127.0.0.1:0".
	Addr string
	// Partitions is the partition count of auto-created topics. Default 6.
	Partitions int
	// Topics are created at start with Partitions partitions.
	Topics []string
	// DataDir, when set, persists the log there so a restart keeps it.
	DataDir string
	// Logger receives the broker's own log lines; nil discards them.
	Logger kfake.Logger
}

// Broker is a running embedded cluster of one node.
type Broker struct {
	cluster *kfake.Cluster
	addr    string
}

// Start listens and serves until Close.
func Start(cfg Config) (*Broker, error) {
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	if cfg.Partitions <= 0 {
		cfg.Partitions = 6
	}
	host, portStr, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("broker address %q: %w", cfg.Addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return nil, fmt.Errorf("broker address %q: bad port", cfg.Addr)
	}
	opts := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.AllowAutoTopicCreation(),
		kfake.DefaultNumPartitions(cfg.Partitions),
		// kfake listens on 127.0.0.1 by default; honour the host asked for.
		kfake.ListenFn(func(network, _ string) (net.Listener, error) {
			return net.Listen(network, net.JoinHostPort(host, strconv.Itoa(port)))
		}),
	}
	if len(cfg.Topics) > 0 {
		opts = append(opts, kfake.SeedTopics(int32(cfg.Partitions), cfg.Topics...))
	}
	if cfg.DataDir != "" {
		opts = append(opts, kfake.DataDir(cfg.DataDir))
	}
	if cfg.Logger != nil {
		opts = append(opts, kfake.WithLogger(cfg.Logger))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return nil, fmt.Errorf("starting embedded broker on %s: %w", cfg.Addr, err)
	}
	return &Broker{cluster: c, addr: c.ListenAddrs()[0]}, nil
}

// Addr is the address clients connect to.
func (b *Broker) Addr() string { return b.addr }

// Cluster exposes kfake's control hooks to tests that inject faults.
func (b *Broker) Cluster() *kfake.Cluster { return b.cluster }

// Close stops serving. It is safe to call twice.
func (b *Broker) Close() { b.cluster.Close() }
