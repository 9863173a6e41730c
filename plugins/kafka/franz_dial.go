package kafka

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"time"

	"github.com/redpanda-data/benthos/v4/public/service"
)

// tcpConfig is the redpanda components' tcp object: how connections to
// brokers are dialled and kept alive. Zero values keep the defaults.
type tcpConfig struct {
	set            bool
	connectTimeout time.Duration
	keepAlive      net.KeepAliveConfig
	userTimeout    time.Duration // Linux TCP_USER_TIMEOUT: unacknowledged data this long drops the connection
}

const (
	fieldConnectTimeout = "connect_timeout"
	fieldKeepAlive      = "keep_alive"
	fieldKAIdle         = "idle"
	fieldKAInterval     = "interval"
	fieldKACount        = "count"
	fieldUserTimeout    = "tcp_user_timeout"
)

// tcpField is upstream's tcp object, with its defaults.
func tcpField() *service.ConfigField {
	return service.NewObjectField(fieldTCP,
		service.NewDurationField(fieldConnectTimeout).Description("The longest a connection attempt may take; 0s: no limit of its own (a request's timeout still applies).").Default("0s"),
		service.NewObjectField(fieldKeepAlive,
			service.NewDurationField(fieldKAIdle).Description("Idle time before the first keep-alive probe.").Default("15s"),
			service.NewDurationField(fieldKAInterval).Description("Time between probes.").Default("15s"),
			service.NewIntField(fieldKACount).Description("Unanswered probes before the connection is dropped.").Default(9),
		).Description("TCP keep-alive probes."),
		service.NewDurationField(fieldUserTimeout).Description("How long sent data may stay unacknowledged before the connection is dropped (Linux TCP_USER_TIMEOUT); 0s: the system's default.").Default("0s"),
	).Description("How connections to the brokers are dialled and kept alive.").Optional().Advanced()
}

func parseTCP(conf *service.ParsedConfig) (t tcpConfig, err error) {
	if !conf.Contains(fieldTCP) {
		return t, nil
	}
	n := conf.Namespace(fieldTCP)
	t.set = true
	if t.connectTimeout, err = n.FieldDuration(fieldConnectTimeout); err != nil {
		return t, err
	}
	ka := n.Namespace(fieldKeepAlive)
	t.keepAlive.Enable = true
	if t.keepAlive.Idle, err = ka.FieldDuration(fieldKAIdle); err != nil {
		return t, err
	}
	if t.keepAlive.Interval, err = ka.FieldDuration(fieldKAInterval); err != nil {
		return t, err
	}
	if t.keepAlive.Count, err = ka.FieldInt(fieldKACount); err != nil {
		return t, err
	}
	if t.userTimeout, err = n.FieldDuration(fieldUserTimeout); err != nil {
		return t, err
	}
	if t.connectTimeout < 0 || t.userTimeout < 0 || t.keepAlive.Count < 0 {
		return t, fmt.Errorf("%s: timeouts and counts must not be negative", fieldTCP)
	}
	return t, nil
}

// dial is the franz-go dialer for these settings, doing TLS itself when
// the client has it (franz-go takes a dialer or a TLS config, not both).
func (t tcpConfig) dial(tlsConf *tls.Config) func(ctx context.Context, network, host string) (net.Conn, error) {
	d := &net.Dialer{Timeout: t.connectTimeout, KeepAliveConfig: t.keepAlive, Control: userTimeoutControl(t.userTimeout)}
	if tlsConf == nil {
		return d.DialContext
	}
	return func(ctx context.Context, network, host string) (net.Conn, error) {
		c := tlsConf.Clone()
		if c.ServerName == "" {
			if h, _, err := net.SplitHostPort(host); err == nil {
				c.ServerName = h
			}
		}
		return (&tls.Dialer{NetDialer: d, Config: c}).DialContext(ctx, network, host)
	}
}
