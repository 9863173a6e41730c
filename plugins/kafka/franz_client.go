// Package kafka adds the kafka_franz input and output: Kafka (or Redpanda, or
// the embedded kfake broker) on github.com/twmb/franz-go.
//
// Field names and metadata keys follow Redpanda Connect's kafka_franz
// components so that existing YAML works unchanged. The package is the only
// place that turns Benthos config into franz-go options; nothing outside it
// imports kgo.
package kafka

import (
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redpanda-data/benthos/v4/public/service"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/oauth"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// Field names shared by the input and the output. Spec and parser both use
// these constants so a misspelt name cannot slip in between them.
const (
	fieldSeedBrokers   = "seed_brokers"
	fieldClientID      = "client_id"
	fieldTLS           = "tls"
	fieldSASL          = "sasl"
	fieldSASLMechanism = "mechanism"
	fieldSASLUsername  = "username"
	fieldSASLPassword  = "password"
	fieldSASLToken     = "token"
	fieldSASLExt       = "extensions"
)

// SASL mechanisms this build supports.
const (
	saslNone        = "none"
	saslPlain       = "PLAIN"
	saslScramSHA256 = "SCRAM-SHA-256"
	saslScramSHA512 = "SCRAM-SHA-512"
	saslOAuthBearer = "OAUTHBEARER"
)

// clientFields are the connection fields every kafka_franz component has.
func clientFields() []*service.ConfigField {
	return []*service.ConfigField{
		service.NewStringListField(fieldSeedBrokers).
			Description("A list of broker addresses to connect to in order to establish connections. If an item of the list contains commas it will be expanded into multiple addresses.").
			Example([]string{"localhost:9092"}).
			Example([]string{"foo:9092", "bar:9092"}).
			Example([]string{"foo:9092,bar:9092"}).
			LintRule(`root = if this.length() == 0 { [ "seed_brokers must list at least one broker address" ] }`),
		service.NewStringField(fieldClientID).
			Description("An identifier for the client connection.").
			Default("decnet-stream").
			Advanced(),
		service.NewTLSToggledField(fieldTLS),
		service.NewObjectListField(fieldSASL,
			service.NewStringAnnotatedEnumField(fieldSASLMechanism, map[string]string{
				saslNone:        "Default, no SASL authentication.",
				saslPlain:       "Plain text authentication.",
				saslScramSHA256: "SCRAM based authentication as specified in RFC5802.",
				saslScramSHA512: "SCRAM based authentication as specified in RFC5802.",
				saslOAuthBearer: "OAuth Bearer based authentication (RFC 7628), with `token`.",
			}).Description("The SASL mechanism to use."),
			service.NewStringField(fieldSASLUsername).
				Description("A username to provide for PLAIN or SCRAM-* authentication.").
				Default(""),
			service.NewStringField(fieldSASLPassword).
				Description("A password to provide for PLAIN or SCRAM-* authentication.").
				Default("").
				Secret(),
			service.NewStringField(fieldSASLToken).
				Description("The token for OAUTHBEARER authentication.").
				Default("").
				Secret(),
			service.NewStringMapField(fieldSASLExt).
				Description("Key/value pairs sent with an OAUTHBEARER token (RFC 7628's extensions).").
				Optional(),
		).
			Description("Specify one or more methods of SASL authentication. SASL is tried in order; if the broker supports the first mechanism, all connections will use that mechanism. If the first mechanism fails, the client will pick the first supported mechanism. If the broker does not support any client mechanisms, connections will fail.").
			Example([]any{map[string]any{"mechanism": saslScramSHA512, "username": "foo", "password": "${KAFKA_PASSWORD}"}}).
			Optional().
			Advanced(),
	}
}

// clientConfig is the connection part of a kafka_franz config, parsed into
// plain Go before any client is built.
type clientConfig struct {
	seedBrokers []string
	clientID    string
	tls         *tls.Config
	sasl        []sasl.Mechanism
	// Settable under the redpanda components' names (redpanda.go); zero
	// keeps franz-go's default.
	requestTimeoutOverhead, connIdleTimeout, metadataMaxAge time.Duration
	tcp                                                     tcpConfig
}

func parseClientConfig(conf *service.ParsedConfig) (clientConfig, error) {
	var c clientConfig
	raw, err := conf.FieldStringList(fieldSeedBrokers)
	if err != nil {
		return c, err
	}
	for _, b := range raw {
		for _, addr := range strings.Split(b, ",") {
			if addr = strings.TrimSpace(addr); addr != "" {
				c.seedBrokers = append(c.seedBrokers, addr)
			}
		}
	}
	if len(c.seedBrokers) == 0 {
		return c, fmt.Errorf("%s: at least one broker address is required", fieldSeedBrokers)
	}
	if c.clientID, err = conf.FieldString(fieldClientID); err != nil {
		return c, err
	}
	tlsConf, tlsOn, err := conf.FieldTLSToggled(fieldTLS)
	if err != nil {
		return c, err
	}
	if tlsOn {
		c.tls = tlsConf
	}
	if conf.Contains(fieldSASL) {
		if c.sasl, err = parseSASL(conf); err != nil {
			return c, err
		}
	}
	if err := parseUpstreamClient(conf, &c); err != nil {
		return c, err
	}
	return c, nil
}

func parseSASL(conf *service.ParsedConfig) ([]sasl.Mechanism, error) {
	list, err := conf.FieldObjectList(fieldSASL)
	if err != nil {
		return nil, err
	}
	var mechs []sasl.Mechanism
	for i, sc := range list {
		mech, err := sc.FieldString(fieldSASLMechanism)
		if err != nil {
			return nil, err
		}
		user, err := sc.FieldString(fieldSASLUsername)
		if err != nil {
			return nil, err
		}
		pass, err := sc.FieldString(fieldSASLPassword)
		if err != nil {
			return nil, err
		}
		token, err := sc.FieldString(fieldSASLToken)
		if err != nil {
			return nil, err
		}
		var ext map[string]string
		if sc.Contains(fieldSASLExt) {
			if ext, err = sc.FieldStringMap(fieldSASLExt); err != nil {
				return nil, err
			}
		}
		m, err := saslMechanism(mech, user, pass, token, ext)
		if err != nil {
			return nil, fmt.Errorf("%s[%d]: %w", fieldSASL, i, err)
		}
		if m != nil {
			mechs = append(mechs, m)
		}
	}
	return mechs, nil
}

func saslMechanism(mech, user, pass, token string, ext map[string]string) (sasl.Mechanism, error) {
	switch mech {
	case saslNone, "":
		return nil, nil
	case saslPlain:
		return plain.Auth{User: user, Pass: pass}.AsMechanism(), nil
	case saslScramSHA256:
		return scram.Auth{User: user, Pass: pass}.AsSha256Mechanism(), nil
	case saslScramSHA512:
		return scram.Auth{User: user, Pass: pass}.AsSha512Mechanism(), nil
	case saslOAuthBearer:
		if token == "" {
			return nil, errors.New("OAUTHBEARER needs a token")
		}
		return oauth.Auth{Token: token, Extensions: ext}.AsMechanism(), nil
	}
	return nil, errors.New("unsupported sasl mechanism: " + mech)
}

// opts are the franz-go options for the connection part of the config.
func (c clientConfig) opts(log *service.Logger) []kgo.Opt {
	opts := []kgo.Opt{
		kgo.SeedBrokers(c.seedBrokers...),
		kgo.ClientID(c.clientID),
		kgo.WithLogger(&kgoLogger{log: log}),
	}
	switch {
	case c.tcp.set:
		opts = append(opts, kgo.Dialer(c.tcp.dial(c.tls)))
	case c.tls != nil:
		opts = append(opts, kgo.DialTLSConfig(c.tls))
	}
	if len(c.sasl) > 0 {
		opts = append(opts, kgo.SASL(c.sasl...))
	}
	if c.requestTimeoutOverhead > 0 {
		opts = append(opts, kgo.RequestTimeoutOverhead(c.requestTimeoutOverhead))
	}
	if c.connIdleTimeout > 0 {
		opts = append(opts, kgo.ConnIdleTimeout(c.connIdleTimeout))
	}
	if c.metadataMaxAge > 0 {
		opts = append(opts, kgo.MetadataMaxAge(c.metadataMaxAge))
	}
	return opts
}

// kgoLogger forwards franz-go's logs to the Benthos logger. Debug is dropped
// at the source: franz-go is chatty there and formatting it costs CPU.
type kgoLogger struct{ log *service.Logger }

func (l *kgoLogger) Level() kgo.LogLevel {
	return kgo.LogLevelInfo
}

func (l *kgoLogger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	if l.log == nil {
		return
	}
	lg := l.log
	for i := 0; i+1 < len(keyvals); i += 2 {
		if k, ok := keyvals[i].(string); ok {
			lg = lg.With(k, keyvals[i+1])
		}
	}
	switch level {
	case kgo.LogLevelError:
		lg.Error(msg)
	case kgo.LogLevelWarn:
		lg.Warn(msg)
	default:
		lg.Debug(msg)
	}
}
