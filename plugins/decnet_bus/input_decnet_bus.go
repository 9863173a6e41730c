// Package decnet_bus adds the decnet_bus input and output: DECNET's own
// event bus (a Unix socket; DECNET has no Kafka and no NATS), so that the
// stage can read what a DECNET host publishes and publish back to it.
package decnet_bus

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redpanda-data/benthos/v4/public/service"

	"github.com/decnet/decnet-stream/internal/bus"
	"github.com/decnet/decnet-stream/internal/topics"
)

const (
	fSocketPath = "socket_path"
	fClientName = "client_name"
	fSubjects   = "subjects"
	fBuffer     = "buffer"

	// MetaSubject is where an event's subject goes, as kafka_franz with
	// subjects puts it: topic_router reads it.
	MetaSubject = "decnet_subject"
)

func connectionFields() []*service.ConfigField {
	return []*service.ConfigField{
		service.NewStringField(fSocketPath).Description("The bus's Unix socket (DECNET_BUS_SOCKET on the DECNET host). Access is the socket file's permissions: run as a member of its group (`decnet`).").
			Default("/run/decnet/bus.sock").Example("${DECNET_BUS_SOCKET:/run/decnet/bus.sock}"),
		service.NewStringField(fClientName).Description("The name this client gives the bus in its HELLO.").Default("decnet-stream"),
	}
}

func inputSpec() *service.ConfigSpec {
	return service.NewConfigSpec().
		Beta().
		Categories("Services").
		Summary("Reads events from DECNET's Unix-socket bus: subscribes to subjects (DECNET wildcards) and turns each event into a message.").
		Description(`
The input says HELLO, subscribes (SUB) to each of `+"`subjects`"+` (`+"`*`"+` one token, a final `+"`>`"+` the rest), and emits
each EVT as a message whose body is the event's v1 envelope and whose `+"`decnet_subject`"+` metadata is the
subject it was delivered on, as `+"`kafka_franz`"+` with `+"`subjects`"+` does: `+"`topic_router`"+` routes it.

### Delivery

DECNET's bus delivers at most once, and drops a slow subscriber's oldest frames. So the input reads the
socket as fast as it can into a bounded buffer (`+"`buffer`"+` events) and never makes the bus wait on the
pipeline; when the pipeline falls behind, the buffer lets its oldest events go, as the bus would, and
counts them (`+"`decnet_bus_dropped`"+`). Acknowledgements change nothing: the bus keeps nothing to ask again.

If the bus goes away (a restart: it forgets its subscribers) the input reconnects with backoff and
subscribes again; events published meanwhile were not seen, and the time without a connection is
counted (`+"`decnet_bus_disconnected_seconds`"+`, `+"`decnet_bus_reconnects`"+`). A frame that breaks the protocol
(oversized header or body, unknown verb, a body that is not a JSON object) drops the connection and is
logged, as DECNET does; the input then reconnects.`).
		Fields(connectionFields()...).
		Fields(
			service.NewStringListField(fSubjects).Description("The subject patterns to subscribe to.").
				Example([]string{"attacker.>", "credential.>", "decky.>"}).
				LintRule(`root = if this.length() == 0 { [ "subjects must list at least one pattern" ] }`),
			service.NewIntField(fBuffer).Description("Events held for the pipeline; past it the oldest go.").Default(10000).Advanced().
				LintRule(`root = if this < 1 { [ "buffer must be at least 1" ] }`),
		)
}

func init() {
	err := service.RegisterBatchInput("decnet_bus", inputSpec(),
		func(conf *service.ParsedConfig, mgr *service.Resources) (service.BatchInput, error) {
			return newInput(conf, mgr)
		})
	if err != nil {
		panic(err)
	}
}

type input struct {
	path, name string
	patterns   []string
	log        *service.Logger

	dropped, reconnects *service.MetricCounter
	disconnected        *service.MetricCounter // seconds

	mu        sync.Mutex
	conn      *bus.Conn
	events    chan bus.Frame
	gone      chan struct{} // closed when the connection ends
	lostAt    time.Time     // when the last connection ended
	connected bool
}

func newInput(conf *service.ParsedConfig, mgr *service.Resources) (*input, error) {
	in := &input{log: mgr.Logger(),
		dropped:      mgr.Metrics().NewCounter("decnet_bus_dropped"),
		reconnects:   mgr.Metrics().NewCounter("decnet_bus_reconnects"),
		disconnected: mgr.Metrics().NewCounter("decnet_bus_disconnected_seconds")}
	var err error
	if in.path, err = conf.FieldString(fSocketPath); err != nil {
		return nil, err
	}
	if in.name, err = conf.FieldString(fClientName); err != nil {
		return nil, err
	}
	if in.patterns, err = conf.FieldStringList(fSubjects); err != nil {
		return nil, err
	}
	if len(in.patterns) == 0 {
		return nil, errors.New("subjects: at least one pattern is required")
	}
	for _, p := range in.patterns {
		if _, err := topics.ParsePattern(p); err != nil {
			return nil, fmt.Errorf("subjects: %w", err)
		}
	}
	size, err := conf.FieldInt(fBuffer)
	if err != nil {
		return nil, err
	}
	in.events = make(chan bus.Frame, max(size, 1))
	return in, nil
}

// Connect dials the bus, greets it and subscribes; a goroutine then reads
// the socket into the buffer until the connection ends.
func (in *input) Connect(ctx context.Context) error {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.connected {
		return nil
	}
	c, err := bus.Dial(ctx, in.path, in.name)
	if err != nil {
		return fmt.Errorf("connecting to the DECNET bus at %s: %w", in.path, err)
	}
	for _, p := range in.patterns {
		if err := c.Write(bus.Frame{Verb: bus.Sub, Arg: p}); err != nil {
			_ = c.Close()
			return fmt.Errorf("subscribing to %s: %w", p, err)
		}
	}
	if !in.lostAt.IsZero() {
		in.reconnects.Incr(1)
		in.disconnected.Incr(int64(time.Since(in.lostAt).Seconds()))
		in.log.Infof("decnet_bus: reconnected to %s after %s without it: events published meanwhile were not seen", in.path, time.Since(in.lostAt).Round(time.Millisecond))
	}
	in.conn, in.connected, in.gone = c, true, make(chan struct{})
	go in.read(c, in.gone)
	return nil
}

// read moves EVT frames into the buffer, dropping the oldest when it is
// full: the bus must never wait on the pipeline.
func (in *input) read(c *bus.Conn, gone chan struct{}) {
	defer func() {
		in.mu.Lock()
		if in.conn == c {
			in.connected, in.conn, in.lostAt = false, nil, time.Now()
		}
		in.mu.Unlock()
		_ = c.Close()
		close(gone)
	}()
	for {
		f, err := c.Read()
		if err != nil {
			if errors.Is(err, bus.ErrProtocol) {
				in.log.Errorf("decnet_bus: %v: dropping the connection", err)
			} else {
				in.log.Warnf("decnet_bus: connection to %s lost: %v", in.path, err)
			}
			return
		}
		switch f.Verb {
		case bus.Evt:
			for {
				select {
				case in.events <- f:
				default:
					select {
					case <-in.events: // the oldest goes, as the bus itself would
						in.dropped.Incr(1)
					default:
					}
					continue
				}
				break
			}
		case bus.Bye:
			in.log.Infof("decnet_bus: the bus said goodbye")
			return
		default:
			in.log.Errorf("decnet_bus: the bus sent %s, which only clients send: dropping the connection", f.Verb)
			return
		}
	}
}

// ReadBatch hands the pipeline what is buffered: at least one event, at
// most 500.
func (in *input) ReadBatch(ctx context.Context) (service.MessageBatch, service.AckFunc, error) {
	in.mu.Lock()
	gone := in.gone
	in.mu.Unlock()
	var first bus.Frame
	select {
	case first = <-in.events:
	case <-gone:
		select { // what was read before the loss still goes out
		case first = <-in.events:
		default:
			return nil, nil, service.ErrNotConnected
		}
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	}
	batch := service.MessageBatch{message(first)}
	for len(batch) < 500 {
		select {
		case f := <-in.events:
			batch = append(batch, message(f))
			continue
		default:
		}
		break
	}
	return batch, func(context.Context, error) error { return nil }, nil
}

func message(f bus.Frame) *service.Message {
	m := service.NewMessage(f.Body)
	m.MetaSetMut(MetaSubject, f.Arg)
	return m
}

func (in *input) Close(context.Context) error {
	in.mu.Lock()
	c := in.conn
	in.conn, in.connected = nil, false
	in.mu.Unlock()
	if c != nil {
		return c.Close()
	}
	return nil
}
