package decnet_bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/redpanda-data/benthos/v4/public/service"
	"github.com/tidwall/gjson"

	"github.com/decnet/decnet-stream/internal/bus"
	"github.com/decnet/decnet-stream/internal/topics"
)

const (
	fTopic            = "topic"
	fType             = "type"
	fWhenDisconnected = "when_disconnected"

	disconnectedWait = "wait"
	disconnectedDrop = "drop"
)

func outputSpec() *service.ConfigSpec {
	return service.NewConfigSpec().
		Beta().
		Categories("Services").
		Summary("Publishes events on DECNET's Unix-socket bus (PUB), where DECNET's workers, webhooks and panel see them.").
		Description(`
Each message is published on `+"`topic`"+` as DECNET's bus expects it: `+"`{\"payload\": {…}, \"type\": \"…\"}`"+`. A
message that is a v1 envelope gives its `+"`payload`"+` and `+"`type`"+`; any other JSON object is the payload itself,
with `+"`type`"+` from the config. The bus keeps only those two, and assigns its own `+"`id`"+` and `+"`ts`"+`.

DECNET's bus takes the topic from the frame without checking it (`+"`PUB attacker.*`"+` would be delivered as the
literal topic `+"`attacker.*`"+`), so this output refuses, per message, a topic that is not a plain subject:
empty tokens, white space or wildcards.

### Delivery

The bus delivers at most once and acknowledges nothing: a message is done once its frame is written to
the socket. If the bus is not there, `+"`when_disconnected: wait`"+` (the default) holds the messages and
reconnects with backoff; `+"`drop`"+` lets them go at once and counts them (`+"`decnet_bus_unpublished`"+`), for a
mirror that must never hold up the rest of a pipeline.`).
		Fields(connectionFields()...).
		Fields(
			service.NewInterpolatedStringField(fTopic).Description("The subject to publish on.").
				Default("${! @decnet_subject }").Example("system.enrich.health"),
			service.NewInterpolatedStringField(fType).Description("The event's type when the message is not an envelope that has one.").
				Default("").Example("health"),
			service.NewStringAnnotatedEnumField(fWhenDisconnected, map[string]string{
				disconnectedWait: "Hold messages and reconnect until the bus is back.",
				disconnectedDrop: "Let messages go at once while the bus is away, counted.",
			}).Default(disconnectedWait),
			service.NewOutputMaxInFlightField().Default(1),
		)
}

func init() {
	err := service.RegisterBatchOutput("decnet_bus", outputSpec(),
		func(conf *service.ParsedConfig, mgr *service.Resources) (service.BatchOutput, service.BatchPolicy, int, error) {
			mif, err := conf.FieldMaxInFlight()
			if err != nil {
				return nil, service.BatchPolicy{}, 0, err
			}
			o, err := newOutput(conf, mgr)
			return o, service.BatchPolicy{}, mif, err
		})
	if err != nil {
		panic(err)
	}
}

type output struct {
	path, name  string
	topic, typ  *service.InterpolatedString
	drop        bool
	unpublished *service.MetricCounter
	log         *service.Logger

	mu       sync.Mutex
	conn     *bus.Conn
	dialedAt time.Time // the last redial of a dropping output
}

func newOutput(conf *service.ParsedConfig, mgr *service.Resources) (*output, error) {
	o := &output{log: mgr.Logger(), unpublished: mgr.Metrics().NewCounter("decnet_bus_unpublished")}
	var err error
	if o.path, err = conf.FieldString(fSocketPath); err != nil {
		return nil, err
	}
	if o.name, err = conf.FieldString(fClientName); err != nil {
		return nil, err
	}
	if o.topic, err = conf.FieldInterpolatedString(fTopic); err != nil {
		return nil, err
	}
	if o.typ, err = conf.FieldInterpolatedString(fType); err != nil {
		return nil, err
	}
	when, err := conf.FieldString(fWhenDisconnected)
	if err != nil {
		return nil, err
	}
	o.drop = when == disconnectedDrop
	return o, nil
}

func (o *output) Connect(ctx context.Context) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.conn != nil {
		return nil
	}
	c, err := bus.Dial(ctx, o.path, o.name)
	if err != nil {
		if o.drop {
			return nil // writes drop and count until the bus is back
		}
		return fmt.Errorf("connecting to the DECNET bus at %s: %w", o.path, err)
	}
	o.conn = c
	return nil
}

func (o *output) WriteBatch(ctx context.Context, batch service.MessageBatch) error {
	o.mu.Lock()
	c := o.conn
	o.mu.Unlock()
	if c == nil {
		if o.drop {
			if c = o.redial(ctx, false); c == nil {
				o.unpublished.Incr(int64(len(batch)))
				return nil
			}
		} else {
			return service.ErrNotConnected
		}
	}
	var bErr *service.BatchError
	fail := func(i int, err error) {
		if bErr == nil {
			bErr = service.NewBatchError(batch, err)
		}
		bErr.Failed(i, err)
	}
	for i, msg := range batch {
		f, err := o.frame(batch, i, msg)
		if err != nil {
			fail(i, err)
			continue
		}
		if err := c.Write(f); err != nil {
			// A restarted bus shows as a broken connection on the next
			// write: dial once at once, so a restart costs no event
			// when the bus is already back.
			o.log.Warnf("decnet_bus: publishing to %s failed, reconnecting: %v", o.path, err)
			o.disconnect(c)
			if c = o.redial(ctx, true); c == nil || c.Write(f) != nil {
				if c != nil {
					o.disconnect(c)
				}
				if o.drop {
					o.unpublished.Incr(int64(len(batch) - i))
					return nil
				}
				return service.ErrNotConnected
			}
		}
	}
	if bErr != nil {
		return bErr
	}
	return nil
}

// redialGap keeps a dropping output from dialing an absent bus for every
// message.
const redialGap = time.Second

// redial connects again: at once when asked (a connection just broke), at
// most once per redialGap otherwise.
func (o *output) redial(ctx context.Context, now bool) *bus.Conn {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.conn != nil {
		return o.conn
	}
	if !now && time.Since(o.dialedAt) < redialGap {
		return nil
	}
	o.dialedAt = time.Now()
	c, err := bus.Dial(ctx, o.path, o.name)
	if err != nil {
		return nil
	}
	o.conn = c
	return c
}

// frame is msg as a PUB: its topic checked, its payload and type taken from
// the envelope it is, or the message itself as the payload.
func (o *output) frame(batch service.MessageBatch, i int, msg *service.Message) (bus.Frame, error) {
	topic, err := batch.TryInterpolatedString(i, o.topic)
	if err != nil {
		return bus.Frame{}, fmt.Errorf("topic: %w", err)
	}
	if err := topics.ValidateSubject(topic); err != nil {
		return bus.Frame{}, fmt.Errorf("refusing to publish on %q: %w", topic, err)
	}
	raw, err := msg.AsBytes()
	if err != nil {
		return bus.Frame{}, err
	}
	if !gjson.ValidBytes(raw) || !gjson.ParseBytes(raw).IsObject() {
		return bus.Frame{}, errors.New("the message is not a JSON object")
	}
	payload, typ := raw, ""
	if p := gjson.GetBytes(raw, "payload"); p.IsObject() && gjson.GetBytes(raw, "v").Exists() {
		payload = []byte(p.Raw) // an envelope: the bus makes its own
		typ = gjson.GetBytes(raw, "type").String()
	}
	if typ == "" {
		if typ, err = batch.TryInterpolatedString(i, o.typ); err != nil {
			return bus.Frame{}, fmt.Errorf("type: %w", err)
		}
	}
	if typ == "" {
		typ = topic[strings.LastIndexByte(topic, '.')+1:] // DECNET's leaf
	}
	body, err := json.Marshal(struct {
		Payload json.RawMessage `json:"payload"`
		Type    string          `json:"type"`
	}{payload, typ})
	if err != nil {
		return bus.Frame{}, err
	}
	return bus.Frame{Verb: bus.Pub, Arg: topic, Body: body}, nil
}

func (o *output) disconnect(c *bus.Conn) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.conn == c {
		_ = c.Close()
		o.conn = nil
	}
}

func (o *output) Close(context.Context) error {
	o.mu.Lock()
	c := o.conn
	o.conn = nil
	o.mu.Unlock()
	if c != nil {
		return c.Close()
	}
	return nil
}
