// Package dead_letter adds the dead_letter processor: it makes a refused
// event fit a dead-letter record, so that the dead letters can always be
// written and one oversized event never stalls its partition.
package dead_letter

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"

	"github.com/redpanda-data/benthos/v4/public/service"
)

const (
	fMaxBytes         = "max_bytes"
	fKeepBytes        = "keep_bytes"
	fMaxMetadataBytes = "max_metadata_bytes"

	// Metadata keys written on a record whose body was cut.
	MetaTruncated     = "decnet_dlq_truncated"
	MetaOriginalBytes = "decnet_dlq_original_bytes"
	MetaSHA256        = "decnet_dlq_sha256"
)

func spec() *service.ConfigSpec {
	return service.NewConfigSpec().
		Beta().
		Categories("Utility").
		Summary("Makes a refused event fit a dead-letter record: the full body where it fits, else its first bytes with its size and hash.").
		Description(`
Sensors forward attacker-controlled bytes. An event refused for being too large (or a large event refused
for any other reason) must still reach the dead letters: if its record cannot be written, the output
retries it for ever, its partition's offset never commits, and everything behind it stalls.

Put this processor on the dead-letter output. A record whose body and metadata would exceed `+"`max_bytes`"+`
keeps only the first `+"`keep_bytes`"+` of its body, and gets `+"`decnet_dlq_truncated: true`"+`,
`+"`decnet_dlq_original_bytes`"+` and `+"`decnet_dlq_sha256`"+` (of the whole original body) so the event can be
recognised and found at its sensor. Metadata values longer than `+"`max_metadata_bytes`"+` are cut too. Anything
that fits is left exactly as it is.

`+"`max_bytes`"+` must stay below what the brokers take for one record (Kafka's default `+"`message.max.bytes`"+` is
1,048,588) and the output's `+"`max_message_bytes`"+`.

`+"`dead_letters{reason}`"+` counts the records it prepares by their `+"`decnet_error`"+` (`+"`unknown`"+` without one).`).
		Fields(
			service.NewIntField(fMaxBytes).Description("The largest record (body, key and metadata) left whole.").Default(1_000_000).
				LintRule(`root = if this < 1024 { [ "max_bytes must be at least 1024" ] }`),
			service.NewIntField(fKeepBytes).Description("How much of a body that does not fit is kept.").Default(64<<10).
				LintRule(`root = if this < 0 { [ "keep_bytes must not be negative" ] }`),
			service.NewIntField(fMaxMetadataBytes).Description("The longest metadata value kept whole.").Default(4096).Advanced().
				LintRule(`root = if this < 64 { [ "max_metadata_bytes must be at least 64" ] }`),
		).
		LintRule(`root = if this.keep_bytes.or(65536) >= this.max_bytes.or(1000000) { [ "keep_bytes must be below max_bytes" ] }`).
		Example("The dead-letter output", "", `
output:
  kafka_franz:
    seed_brokers: [ "${KAFKA_SEED_BROKERS:127.0.0.1:9092}" ]
    topic: decnet.dlq
    metadata:
      include_prefixes: [ decnet_ ]
  processors:
    - dead_letter: {}
`)
}

func init() {
	err := service.RegisterProcessor("dead_letter", spec(),
		func(conf *service.ParsedConfig, mgr *service.Resources) (service.Processor, error) {
			return newProcessor(conf, mgr)
		})
	if err != nil {
		panic(err)
	}
}

type processor struct {
	maxBytes, keepBytes, maxMeta int
	// letters counts dead letters by their decnet_error reason.
	letters *service.MetricCounter
}

func newProcessor(conf *service.ParsedConfig, mgr *service.Resources) (*processor, error) {
	p := &processor{letters: mgr.Metrics().NewCounter("dead_letters", "reason")}
	var err error
	if p.maxBytes, err = conf.FieldInt(fMaxBytes); err != nil {
		return nil, err
	}
	if p.keepBytes, err = conf.FieldInt(fKeepBytes); err != nil {
		return nil, err
	}
	if p.maxMeta, err = conf.FieldInt(fMaxMetadataBytes); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *processor) Process(_ context.Context, msg *service.Message) (service.MessageBatch, error) {
	reason, ok := msg.MetaGet("decnet_error")
	if !ok || reason == "" {
		reason = "unknown"
	}
	p.letters.Incr(1, reason)
	body, err := msg.AsBytes()
	if err != nil {
		return service.MessageBatch{msg}, nil
	}
	size := len(body)
	long := map[string]string{}
	_ = msg.MetaWalkMut(func(k string, v any) error {
		s := fmt.Sprint(v)
		if len(s) > p.maxMeta {
			s = s[:p.maxMeta] + "…"
			long[k] = s
		}
		size += len(k) + len(s)
		return nil
	})
	for k, s := range long {
		msg.MetaSetMut(k, s)
	}
	if size <= p.maxBytes {
		return service.MessageBatch{msg}, nil
	}
	sum := sha256.Sum256(body)
	keep := min(p.keepBytes, len(body))
	cut := make([]byte, keep)
	copy(cut, body)
	msg.SetBytes(cut)
	msg.MetaSetMut(MetaTruncated, "true")
	msg.MetaSetMut(MetaOriginalBytes, strconv.Itoa(len(body)))
	msg.MetaSetMut(MetaSHA256, hex.EncodeToString(sum[:]))
	return service.MessageBatch{msg}, nil
}

func (p *processor) Close(context.Context) error { return nil }
