// Package topic_router adds the topic_router processor: it validates DECNET
// events and maps their NATS-style subjects onto a sane set of Kafka topics
// and keys.
package topic_router

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/redpanda-data/benthos/v4/public/service"
	"github.com/tidwall/gjson"

	"github.com/decnet/decnet-stream/internal/recordmeta"
	"github.com/decnet/decnet-stream/internal/topics"
)

const (
	fieldSubject   = "subject"
	fieldRoutes    = "routes"
	fieldMatch     = "match"
	fieldTopic     = "topic"
	fieldKey       = "key"
	fieldKeyPath   = "key_path"
	fieldKeyFormat = "key_format"
	fieldDrop      = "drop"
	fieldMetadata  = "metadata"

	keyFormatAny = "any"
	keyFormatIP  = "ip"

	metaSubject = "subject"
	metaTopic   = "topic"
	metaKey     = "key"

	// Metadata keys this processor writes.
	MetaSubject = "decnet_subject"
	MetaTopic   = "decnet_topic"
	MetaKey     = "decnet_key"
	MetaError   = "decnet_error"
	// MetaErrorDetail says, for people, what exactly was wrong.
	MetaErrorDetail = "decnet_error_detail"
)

// patternLint accepts a NATS pattern: dot-separated non-empty tokens that
// are whole `*` or literal, with `>` only last.
const patternLint = `root = if !this.string().re_match("^((\\*|[^.*>\\s]+)\\.)*(\\*|>|[^.*>\\s]+)$") { [ "match: %q is not a valid subject pattern (non-empty tokens; * and > only as whole tokens; > only last)".format(this.string()) ] }`

// topicLint refuses a topic template whose literal part can only produce an
// illegal Kafka topic name.
const topicLint = `root = if this.string().re_replace_all("\\$\\{![^}]*\\}", "").re_replace_all("\\$[0-9]+", "").re_match("[^a-zA-Z0-9._-]") { [ "topic: %q can only produce an illegal Kafka topic name (allowed: a-z A-Z 0-9 . _ -)".format(this.string()) ] } else if this.string().length() > 249 { [ "topic: longer than Kafka's 249 characters" ] } else if this.string() == "" { [ "topic: must not be empty" ] }`

// defaultRoutes is DECNET's hierarchy mapped onto Kafka, documented in the
// spec as a table. Nested defaults are not applied to a list default, so
// every field is spelt out.
var defaultRoutes = []any{
	defaultRoute("attacker.>", "$0", "", "payload.attacker_ip", keyFormatIP),
	defaultRoute("decky.*.*", "decky.$2", "$1", "", keyFormatAny),
	defaultRoute("topology.*.mutation.*", "topology.mutation", "$1", "", keyFormatAny),
	defaultRoute("topology.*.status", "topology.status", "$1", "", keyFormatAny),
	defaultRoute("credential.>", "$0", "", "payload.attacker_ip", keyFormatAny),
	defaultRoute("system.*.health", "system.health", "$1", "", keyFormatAny),
	defaultRoute("system.*.control", "system.control", "$1", "", keyFormatAny),
	defaultRoute("system.>", "$0", "", "", keyFormatAny),
	// Roots DECNET added after its first release: each its own topic, keyed
	// by attacker when the event names one.
	defaultRoute("identity.>", "$0", "", "payload.attacker_ip", keyFormatAny),
	defaultRoute("campaign.>", "$0", "", "payload.attacker_ip", keyFormatAny),
	defaultRoute("attribution.>", "$0", "", "payload.attacker_ip", keyFormatAny),
	defaultRoute("ttp.>", "$0", "", "payload.attacker_ip", keyFormatAny),
	defaultRoute("canary.>", "$0", "", "payload.attacker_ip", keyFormatAny),
	defaultRoute("email.>", "$0", "", "payload.attacker_ip", keyFormatAny),
	defaultRoute("smtp.>", "$0", "", "payload.attacker_ip", keyFormatAny),
	defaultRoute("orchestrator.>", "$0", "", "", keyFormatAny),
}

func defaultRoute(match, topic, key, keyPath, format string) map[string]any {
	r := map[string]any{fieldMatch: match, fieldTopic: topic, fieldKeyFormat: format, fieldDrop: false}
	if key != "" {
		r[fieldKey] = key
	}
	if keyPath != "" {
		r[fieldKeyPath] = keyPath
	}
	return r
}

func spec() *service.ConfigSpec {
	return service.NewConfigSpec().
		Beta().
		Categories("Mapping").
		Summary("Validates DECNET v1 events and routes their NATS-style subjects to Kafka topics and keys.").
		Description(`
Each message's subject is matched against `+"`routes`"+` in order; the first match decides the Kafka
topic and key, written to the metadata keys `+"`decnet_topic`"+` and `+"`decnet_key`"+` (with the subject in
`+"`decnet_subject`"+`), so a `+"`kafka_franz`"+` output writes `+"`topic: ${! @decnet_topic }`"+` and
`+"`key: ${! @decnet_key }`"+`.

In `+"`topic`"+` and `+"`key`"+`, `+"`$0`"+` is the whole subject and `+"`$1`"+`, `+"`$2`"+`, … what each wildcard of
`+"`match`"+` captured (a final `+"`>`"+` captures the dotted rest). Interpolations (`+"`${! … }`"+`) work too, but
cost a Bloblang evaluation per message; `+"`key_path`"+` reads one JSON path without decoding the event.

### Validation and dead letters

Every routed event must be a valid v1 envelope `+"`{\"v\":1,\"id\",\"topic\",\"type\",\"ts\",\"payload\":{…}}`"+` whose
`+"`topic`"+` is the subject it was delivered on: the transport is the truth, and a body claiming another
subject is refused as spoofed. A missing `+"`id`"+` is generated and written into the body. Nothing is
dropped silently: a refused message keeps its original bytes, is flagged with an error, and gets
`+"`decnet_error`"+` metadata with one of these reasons (and `+"`decnet_error_detail`"+` saying exactly what was wrong),
so the pipeline's dead-letter output can take it:

| Reason | When |
|---|---|
| `+"`invalid_json`"+` | the body is not JSON |
| `+"`bad_envelope`"+` | not a v1 envelope: wrong `+"`v`"+`, payload not an object, `+"`ts`"+` neither epoch seconds nor an ISO-8601 time, bad `+"`id`"+`, … |
| `+"`duplicate_key`"+` | a key appears twice in the envelope or its payload (parsers disagree on which one counts) |
| `+"`bad_subject`"+` | the subject is empty, has empty tokens, wildcards or white space |
| `+"`spoofed_topic`"+` | the body's `+"`topic`"+` differs from the subject it arrived on |
| `+"`no_route`"+` | no route matches, or the route produced an illegal Kafka topic |
| `+"`bad_key`"+` | the route's key is missing or, with `+"`key_format: ip`"+`, not a valid IP address |

Only routes with `+"`drop: true`"+` remove messages, and they do so before validation.

### Default routes

| match | topic | key |
|---|---|---|
| `+"`attacker.>`"+` | the subject itself | `+"`payload.attacker_ip`"+` (must be an IP) |
| `+"`decky.*.*`"+` | `+"`decky.<leaf>`"+` | the decky id |
| `+"`topology.*.mutation.*`"+` | `+"`topology.mutation`"+` | the topology id |
| `+"`topology.*.status`"+` | `+"`topology.status`"+` | the topology id |
| `+"`credential.>`"+` | the subject itself | `+"`payload.attacker_ip`"+` when present |
| `+"`system.*.health`"+` | `+"`system.health`"+` | the worker |
| `+"`system.*.control`"+` | `+"`system.control`"+` | the worker |
| `+"`system.>`"+` | the subject itself | none |
| `+"`identity.>`"+`, `+"`campaign.>`"+`, `+"`attribution.>`"+`, `+"`ttp.>`"+`, `+"`canary.>`"+`, `+"`email.>`"+`, `+"`smtp.>`"+` | the subject itself | `+"`payload.attacker_ip`"+` when present |
| `+"`orchestrator.>`"+` | the subject itself | none |

IP keys are canonical (`+"`::ffff:203.0.113.9`"+` becomes `+"`203.0.113.9`"+`) so one attacker always lands on one
partition.

### Metrics

### Metadata and speed

By default every routed message gets all three keys. A pipeline that does not read one of them can
leave it out with `+"`metadata`"+`: kafka_franz hands over six `+"`kafka_*`"+` keys, and a ninth key makes each
message's metadata outgrow Go's small map (a new table per event, a quarter of the router's cost in
the benchmark). A refused message always gets `+"`decnet_subject`"+`, for its dead letter.

`+"`topic_router_routed`"+` counts routed messages by route (`+"`match`"+` label), `+"`topic_router_refused`"+`
refused ones by `+"`reason`"+`, `+"`topic_router_dropped`"+` those a `+"`drop`"+` route removed.
`).
		Fields(
			service.NewInterpolatedStringField(fieldSubject).
				Description("Where each message's subject comes from. By default the `decnet_subject` metadata key (a record header) when present, else the Kafka topic the message arrived on (`kafka_topic`).").
				Example(`${! @nats_subject }`).
				Optional(),
			service.NewObjectListField(fieldRoutes,
				service.NewStringField(fieldMatch).
					Description("A NATS subject pattern: `*` matches one token, a final `>` one or more.").
					Example("attacker.>").Example("decky.*.traffic").
					LintRule(patternLint),
				service.NewStringField(fieldTopic).
					Description("The Kafka topic, with `$N` captures and interpolations.").
					Example("$0").Example("decky.$2").
					Default("$0").
					LintRule(topicLint),
				service.NewStringField(fieldKey).
					Description("The record key, with `$N` captures and interpolations. Exclusive with `key_path`.").
					Example("$1").
					Optional(),
				service.NewStringField(fieldKeyPath).
					Description("A JSON path into the event (`payload.attacker_ip`) whose value is the key; read without decoding the event. Exclusive with `key`.").
					Optional(),
				service.NewStringAnnotatedEnumField(fieldKeyFormat, map[string]string{
					keyFormatAny: "Any string; a missing value means no key.",
					keyFormatIP:  "An IP address, canonicalised; a missing or invalid value refuses the event with `bad_key`.",
				}).Default(keyFormatAny),
				service.NewBoolField(fieldDrop).
					Description("Drop (acknowledge) matching messages instead of routing them.").
					Default(false),
			).
				Description("Routes in order of precedence; the first match wins. Defaults to DECNET's hierarchy (see the table above).").
				Default(defaultRoutes).
				LintRule(`root = if this.key.or("") != "" && this.key_path.or("") != "" { [ "key and key_path are exclusive: set one" ] }`),
			service.NewStringListField(fieldMetadata).
				Description("Which of `decnet_subject`, `decnet_topic` and `decnet_key` a routed message gets: `subject`, `topic`, `key`. Leave out what nothing downstream reads (see above).").
				Example([]string{metaSubject, metaKey}).
				Default([]any{metaSubject, metaTopic, metaKey}).
				// Benthos lints a list field as a whole and item by item: check it once, as a whole.
				LintRule(`root = if this.type() == "array" { this.filter(v -> !["subject", "topic", "key"].contains(v)).map_each(v -> "metadata: %q is not one of subject, topic, key".format(v)) }`),
		).
		Example("Route sensor events onto the hierarchy", "Validate raw sensor events, send each to its hierarchy topic keyed by attacker IP, and everything refused to a dead-letter topic with its reason.", `
pipeline:
  processors:
    - topic_router: {}
output:
  switch:
    cases:
      - check: errored()
        output:
          kafka_franz:
            seed_brokers: [ "${KAFKA_SEED_BROKERS:127.0.0.1:9092}" ]
            topic: decnet.dlq
            metadata:
              include_prefixes: [ decnet_ ]
      - output:
          kafka_franz:
            seed_brokers: [ "${KAFKA_SEED_BROKERS:127.0.0.1:9092}" ]
            topic: ${! @decnet_topic }
            key: ${! @decnet_key }
`)
}

func init() {
	err := service.RegisterBatchProcessor("topic_router", spec(),
		func(conf *service.ParsedConfig, mgr *service.Resources) (service.BatchProcessor, error) {
			return newRouter(conf, mgr)
		})
	if err != nil {
		panic(err)
	}
}

type route struct {
	pattern topics.Pattern
	topic   *template
	key     *template
	keyPath string
	// payloadMember is keyPath's member when keyPath is payload.<name>:
	// read while the envelope is validated, not by a second scan.
	payloadMember string
	keyIP         bool
	drop          bool
	routed        *service.MetricCounter
}

type router struct {
	subject *service.InterpolatedString
	routes  []route
	table   *topics.Table
	// Which decnet_* keys a routed message gets.
	writeSubject, writeTopic, writeKey bool

	routed  *service.MetricCounter // by match
	refused *service.MetricCounter // by reason
	dropped *service.MetricCounter
}

func newRouter(conf *service.ParsedConfig, mgr *service.Resources) (*router, error) {
	m := mgr.Metrics()
	r := &router{
		routed:  m.NewCounter("topic_router_routed", "match"),
		refused: m.NewCounter("topic_router_refused", "reason"),
		dropped: m.NewCounter("topic_router_dropped"),
	}
	if conf.Contains(fieldSubject) {
		s, err := conf.FieldInterpolatedString(fieldSubject)
		if err != nil {
			return nil, err
		}
		r.subject = s
	}
	written, err := conf.FieldStringList(fieldMetadata)
	if err != nil {
		return nil, err
	}
	for _, w := range written {
		switch w {
		case metaSubject:
			r.writeSubject = true
		case metaTopic:
			r.writeTopic = true
		case metaKey:
			r.writeKey = true
		default:
			return nil, fmt.Errorf("%s: %q is not one of subject, topic, key", fieldMetadata, w)
		}
	}
	list, err := conf.FieldObjectList(fieldRoutes)
	if err != nil {
		return nil, err
	}
	if len(list) == 0 {
		return nil, errors.New("routes: at least one route is required")
	}
	for i, rc := range list {
		rt, err := parseRoute(rc)
		if err != nil {
			return nil, fmt.Errorf("routes[%d]: %w", i, err)
		}
		r.routes = append(r.routes, rt)
	}
	patterns := make([]topics.Pattern, len(r.routes))
	for i, rt := range r.routes {
		patterns[i] = rt.pattern
	}
	r.table = topics.NewTable(patterns)
	return r, nil
}

func parseRoute(rc *service.ParsedConfig) (route, error) {
	var rt route
	match, err := rc.FieldString(fieldMatch)
	if err != nil {
		return rt, err
	}
	if rt.pattern, err = topics.ParsePattern(match); err != nil {
		return rt, fmt.Errorf("%s: %w", fieldMatch, err)
	}
	caps := rt.pattern.Wildcards()
	topic, err := rc.FieldString(fieldTopic)
	if err != nil {
		return rt, err
	}
	if rt.topic, err = newTemplate(topic, caps); err != nil {
		return rt, fmt.Errorf("%s: %w", fieldTopic, err)
	}
	if rt.topic.literal() {
		// Checked here once, not per message.
		if err := validKafkaTopic(rt.topic.parts[0].lit); err != nil {
			return rt, fmt.Errorf("%s: %w", fieldTopic, err)
		}
	} else if rt.topic.interp == nil {
		// Captures are subject tokens: check the literal text only.
		for _, p := range rt.topic.parts {
			if p.capture < 0 {
				if err := validKafkaTopic(p.lit); err != nil && p.lit != "." {
					return rt, fmt.Errorf("%s: %w", fieldTopic, err)
				}
			}
		}
	}
	if rc.Contains(fieldKey) {
		key, err := rc.FieldString(fieldKey)
		if err != nil {
			return rt, err
		}
		if rt.key, err = newTemplate(key, caps); err != nil {
			return rt, fmt.Errorf("%s: %w", fieldKey, err)
		}
	}
	if rc.Contains(fieldKeyPath) {
		if rt.keyPath, err = rc.FieldString(fieldKeyPath); err != nil {
			return rt, err
		}
		if rt.key != nil {
			return rt, fmt.Errorf("%s and %s are exclusive", fieldKey, fieldKeyPath)
		}
		if name, ok := strings.CutPrefix(rt.keyPath, "payload."); ok && plainMember(name) {
			rt.payloadMember = name
		}
	}
	format, err := rc.FieldString(fieldKeyFormat)
	if err != nil {
		return rt, err
	}
	rt.keyIP = format == keyFormatIP
	if rt.keyIP && rt.key == nil && rt.keyPath == "" {
		return rt, fmt.Errorf("%s: ip needs a key or key_path", fieldKeyFormat)
	}
	if rt.drop, err = rc.FieldBool(fieldDrop); err != nil {
		return rt, err
	}
	return rt, nil
}

func (r *router) ProcessBatch(_ context.Context, batch service.MessageBatch) ([]service.MessageBatch, error) {
	// Filtered in place: Benthos hands each processor a batch slice of its
	// own, and a kept message is written at or before where it was read.
	out := batch[:0]
	last := subjectMatch{caps: make([]string, 0, 8)}
	// Counted per route for the batch, then added once per route: a
	// labelled counter's lookup would otherwise cost every event.
	routed := make([]int64, len(r.routes))
	for _, msg := range batch {
		keep, err := r.route(msg, &last, routed)
		if err != nil {
			var ee *topics.EventError
			if errors.As(err, &ee) {
				r.refused.Incr(1, string(ee.Reason))
				msg.MetaSetMut(MetaError, string(ee.Reason))
				msg.MetaSetMut(MetaErrorDetail, ee.Detail)
			}
			msg.SetError(err)
		}
		if keep {
			out = append(out, msg)
		}
	}
	for i, n := range routed {
		if n > 0 {
			r.routed.Incr(n, r.routes[i].pattern.String())
		}
	}
	if len(out) == 0 {
		return nil, nil
	}
	return []service.MessageBatch{out}, nil
}

// route routes one message, reporting false when a drop route removed it,
// and counts it in routed[route] when routed. The subject is written to
// decnet_subject when metadata asks for it, and always for a refused
// message: its dead letter names what it arrived on.
func (r *router) route(msg *service.Message, last *subjectMatch, routed []int64) (bool, error) {
	subject, fromMeta, err := r.subjectOf(msg)
	if err != nil {
		return true, &topics.EventError{Reason: topics.ReasonBadSubject, Detail: err.Error()}
	}
	keep, err := r.routeSubject(msg, subject, last, routed)
	if !fromMeta && (r.writeSubject || err != nil) {
		msg.MetaSetMut(MetaSubject, subject)
	}
	return keep, err
}

// subjectMatch is a subject's validation and route, kept for the next
// message: a batch is one partition's, so its messages were all delivered
// on one subject, and validating and matching it once per message cost
// more than the match itself.
type subjectMatch struct {
	subject string
	set     bool
	err     error // refused: the subject is invalid or no route matches
	route   int
	caps    []string // the subject, then the route's captures (read only)
}

// match validates subject and finds its route, or reuses last's answer.
func (r *router) match(subject string, last *subjectMatch) {
	if last.set && last.subject == subject {
		return
	}
	*last = subjectMatch{subject: subject, set: true, caps: last.caps[:0]}
	if err := topics.ValidateSubject(subject); err != nil {
		last.err = &topics.EventError{Reason: topics.ReasonBadSubject, Detail: err.Error()}
		return
	}
	var ok bool
	if last.route, last.caps, ok = r.table.FirstCaptures(subject, append(last.caps, subject)); !ok {
		last.err = &topics.EventError{Reason: topics.ReasonNoRoute, Detail: fmt.Sprintf("no route matches subject %q", subject)}
	}
}

// routeSubject routes msg, delivered on subject.
func (r *router) routeSubject(msg *service.Message, subject string, last *subjectMatch, routed []int64) (bool, error) {
	r.match(subject, last)
	if last.err != nil {
		return true, last.err
	}
	i, caps := last.route, last.caps
	rt := &r.routes[i]
	if rt.drop {
		r.dropped.Incr(1)
		return false, nil
	}
	raw, err := msg.AsBytes()
	if err != nil {
		return true, &topics.EventError{Reason: topics.ReasonInvalidJSON, Detail: err.Error()}
	}
	env, err := topics.ParseEnvelopeMember(raw, subject, rt.payloadMember)
	if err != nil {
		return true, err
	}
	if env.IDGenerated {
		raw = topics.WithID(raw, env.ID)
		msg.SetBytes(raw)
	}
	topic, err := rt.topic.render(msg, caps)
	if err == nil && !rt.topic.literal() {
		err = validKafkaTopic(topic) // a literal one was checked at start
	}
	if err != nil {
		return true, &topics.EventError{Reason: topics.ReasonNoRoute, Detail: fmt.Sprintf("route %s: %v", rt.pattern, err)}
	}
	key, err := rt.keyOf(msg, raw, env.Member, caps)
	if err != nil {
		return true, &topics.EventError{Reason: topics.ReasonBadKey, Detail: fmt.Sprintf("route %s: %v", rt.pattern, err)}
	}
	if r.writeTopic {
		msg.MetaSetMut(MetaTopic, topic)
	}
	if r.writeKey {
		msg.MetaSetMut(MetaKey, key)
	}
	routed[i]++
	return true, nil
}

// plainMember reports whether name is one object key in gjson path syntax:
// no separators, wildcards, modifiers or escapes.
func plainMember(name string) bool {
	return name != "" && !strings.ContainsAny(name, `.*?|#@!\%{}[]`)
}

// subjectOf is msg's subject, and whether it was read from decnet_subject
// (which then needs no writing: a write would only cost a map assignment).
func (r *router) subjectOf(msg *service.Message) (string, bool, error) {
	if r.subject != nil {
		s, err := r.subject.TryString(msg)
		return s, false, err
	}
	if s, ok := msg.MetaGet(MetaSubject); ok && s != "" {
		return s, true, nil
	}
	if s, ok := msg.MetaGet(recordmeta.Topic); ok {
		return s, false, nil
	}
	return "", false, errors.New("no subject: neither decnet_subject nor kafka_topic metadata is set")
}

func (rt *route) keyOf(msg *service.Message, raw []byte, member gjson.Result, caps []string) (string, error) {
	var key string
	switch {
	case rt.keyPath != "":
		v := member
		if rt.payloadMember == "" {
			v = gjson.GetBytes(raw, rt.keyPath)
		}
		if v.Exists() && v.Type != gjson.Null {
			if v.Type != gjson.String && rt.keyIP {
				return "", fmt.Errorf("%s is %s, not an IP address string", rt.keyPath, v.Raw)
			}
			key = v.String()
			if !rt.keyIP {
				key = strings.Clone(key) // may point into the event's bytes
			}
		}
	case rt.key != nil:
		var err error
		if key, err = rt.key.render(msg, caps); err != nil {
			return "", err
		}
	}
	if !rt.keyIP {
		return key, nil
	}
	if key == "" {
		return "", errors.New("no attacker IP to key by")
	}
	addr, err := netip.ParseAddr(key)
	if err != nil || addr.Zone() != "" {
		return "", fmt.Errorf("%q is not an IP address", key)
	}
	return addr.Unmap().String(), nil
}

func (r *router) Close(context.Context) error { return nil }
