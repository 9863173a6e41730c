package kafka

import (
	"fmt"
	"slices"
	"time"

	"github.com/redpanda-data/benthos/v4/public/service"
	"github.com/twmb/franz-go/pkg/kgo"
)

const (
	fieldTopic           = "topic"
	fieldKey             = "key"
	fieldPartition       = "partition"
	fieldPartitioner     = "partitioner"
	fieldMetadata        = "metadata"
	fieldCompression     = "compression"
	fieldIdempotentWrite = "idempotent_write"
	fieldTimeout         = "timeout"
	fieldMaxMessageBytes = "max_message_bytes"

	partitionerMurmur2     = "murmur2_hash"
	partitionerRoundRobin  = "round_robin"
	partitionerLeastBackup = "least_backup"
	partitionerManual      = "manual"
)

var compressionCodecs = []string{"none", "gzip", "snappy", "lz4", "zstd"}

func outputSpec() *service.ConfigSpec {
	return service.NewConfigSpec().
		Stable().
		Categories("Services").
		Summary("Writes a batch of messages to Kafka (or Redpanda, or `decnet-stream broker`) with franz-go and waits for the brokers to have every record.").
		Description(`
Fields follow Redpanda Connect's `+"`kafka_franz`"+` output, so existing configs work unchanged.

### Delivery guarantees

A batch is acknowledged only when the brokers have acknowledged every record of it. When some records
fail, only those messages are reported as failed (and retried or routed by the pipeline's error handling);
the rest are not written twice by the retry.

### Metadata

Metadata keys matched by `+"`metadata`"+` become record headers.
`).
		Fields(slices.Concat(
			clientFields(),
			[]*service.ConfigField{
				service.NewInterpolatedStringField(fieldTopic).
					Description("A topic to write messages to.").
					Example("attacker.intel.enriched").
					Example(`${! @decnet_topic }`),
				service.NewInterpolatedStringField(fieldKey).
					Description("An optional key to populate for each message. An empty key means no key: such records are spread over partitions instead of all hashing to one.").
					Example(`${! json("payload.attacker_ip") }`).
					Optional(),
				service.NewInterpolatedStringField(fieldPartition).
					Description("An optional explicit partition to set for each message. Requires `partitioner: manual`.").
					Example(`${! meta("partition") }`).
					Optional(),
				service.NewStringAnnotatedEnumField(fieldPartitioner, map[string]string{
					partitionerMurmur2:     "Kafka's default hash algorithm: a 32-bit murmur2 hash of the key picks the partition, so one key always lands on one partition.",
					partitionerRoundRobin:  "Round-robin's messages through all available partitions.",
					partitionerLeastBackup: "Chooses the least backed up partition (the partition with the fewest amount of buffered records).",
					partitionerManual:      "Manually select a partition for each message, requires the field `partition` to be specified.",
				}).
					Description("Override the default murmur2 hashing partitioner.").
					Default(partitionerMurmur2).
					LintRule(enumLint(fieldPartitioner, partitionerMurmur2, partitionerRoundRobin, partitionerLeastBackup, partitionerManual)).
					Advanced(),
				service.NewMetadataFilterField(fieldMetadata).
					Description("Determine which (if any) metadata values should be added to messages as headers.").
					Optional(),
				service.NewStringEnumField(fieldCompression, compressionCodecs...).
					Description("The compression codec for record batches. snappy or lz4 are cheapest; none costs more broker I/O than it saves CPU.").
					Default("snappy").
					LintRule(enumLint(fieldCompression, compressionCodecs...)).
					Advanced(),
				service.NewBoolField(fieldIdempotentWrite).
					Description("Enable the idempotent write producer option. This requires the `IDEMPOTENT_WRITE` permission on `CLUSTER` and can be disabled if this permission is not available.").
					Default(true).
					Advanced(),
				service.NewOutputMaxInFlightField().Default(10),
				service.NewBatchPolicyField(fieldBatching),
				service.NewDurationField(fieldTimeout).
					Description("The maximum period of time to wait for message sends before abandoning the request and retrying.").
					Default("10s").
					Advanced(),
				service.NewStringField(fieldMaxMessageBytes).
					Description("The maximum space in bytes that an individual message may use. Messages larger than this value will be rejected. This field corresponds to Kafka's `max.message.bytes`.").
					Default("1MiB").
					LintRule(byteSizeLint(fieldMaxMessageBytes)).
					Advanced(),
			},
		)...).
		LintRule(`root = if this.partitioner.or("") == "manual" && this.partition.or("") == "" { [ "partition must be set when partitioner is manual" ] } else if this.partitioner.or("") != "manual" && this.partition.or("") != "" { [ "partition is only used with partitioner: manual" ] }`).
		Example("Publish enriched events", "Write each message to the topic and key chosen upstream, copying the DECNET metadata into headers.", `
output:
  kafka_franz:
    seed_brokers: [ "${KAFKA_SEED_BROKERS:127.0.0.1:9092}" ]
    topic: ${! @decnet_topic }
    key: ${! @decnet_key }
    metadata:
      include_prefixes: [ decnet_ ]
`)
}

func init() {
	err := service.RegisterBatchOutput("kafka_franz", outputSpec(), newOutput)
	if err != nil {
		panic(err)
	}
}

// newOutput builds a kafka_franz (or redpanda) output from its config.
func newOutput(conf *service.ParsedConfig, mgr *service.Resources) (out service.BatchOutput, pol service.BatchPolicy, maxInFlight int, err error) {
	if maxInFlight, err = conf.FieldMaxInFlight(); err != nil {
		return
	}
	if pol, err = conf.FieldBatchPolicy(fieldBatching); err != nil {
		return
	}
	wc, err := parseWriterConfig(conf)
	if err != nil {
		return
	}
	out = newFranzWriter(wc, mgr)
	return
}

// writerConfig is the parsed kafka_franz output config.
type writerConfig struct {
	client          clientConfig
	topic           *outField
	key             *outField // nil: not set
	partition       *outField // nil: not set
	partitioner     kgo.Partitioner
	metadata        *service.MetadataFilter
	compression     kgo.CompressionCodec
	idempotent      bool
	timeout         time.Duration
	maxMessageBytes int32
	// Settable under the redpanda output's names (redpanda.go).
	timestampMS    *outField // nil: not set
	noAutoCreate   bool
	brokerWriteMax int32
}

func parseWriterConfig(conf *service.ParsedConfig) (wc writerConfig, err error) {
	if wc.client, err = parseClientConfig(conf); err != nil {
		return wc, err
	}
	if wc.topic, err = parseOutField(conf, fieldTopic); err != nil {
		return wc, err
	}
	if conf.Contains(fieldKey) {
		if wc.key, err = parseOutField(conf, fieldKey); err != nil {
			return wc, err
		}
	}
	if conf.Contains(fieldPartition) {
		if wc.partition, err = parseOutField(conf, fieldPartition); err != nil {
			return wc, err
		}
	}
	part, err := conf.FieldString(fieldPartitioner)
	if err != nil {
		return wc, err
	}
	switch part {
	case partitionerMurmur2:
		wc.partitioner = kgo.StickyKeyPartitioner(nil)
	case partitionerRoundRobin:
		wc.partitioner = kgo.RoundRobinPartitioner()
	case partitionerLeastBackup:
		wc.partitioner = kgo.LeastBackupPartitioner()
	case partitionerManual:
		wc.partitioner = kgo.ManualPartitioner()
	default:
		return wc, fmt.Errorf("%s: unknown partitioner %q", fieldPartitioner, part)
	}
	if (part == partitionerManual) != (wc.partition != nil) {
		return wc, fmt.Errorf("%s must be set exactly when %s is %s", fieldPartition, fieldPartitioner, partitionerManual)
	}
	if conf.Contains(fieldMetadata) {
		if wc.metadata, err = conf.FieldMetadataFilter(fieldMetadata); err != nil {
			return wc, err
		}
		if wc.metadata.IsEmpty() {
			wc.metadata = nil // skip walking every message's metadata for nothing
		}
	}
	comp, err := conf.FieldString(fieldCompression)
	if err != nil {
		return wc, err
	}
	switch comp {
	case "none":
		wc.compression = kgo.NoCompression()
	case "gzip":
		wc.compression = kgo.GzipCompression()
	case "snappy":
		wc.compression = kgo.SnappyCompression()
	case "lz4":
		wc.compression = kgo.Lz4Compression()
	case "zstd":
		wc.compression = kgo.ZstdCompression()
	default:
		return wc, fmt.Errorf("%s: unknown codec %q", fieldCompression, comp)
	}
	if wc.idempotent, err = conf.FieldBool(fieldIdempotentWrite); err != nil {
		return wc, err
	}
	if wc.timeout, err = conf.FieldDuration(fieldTimeout); err != nil {
		return wc, err
	}
	if wc.maxMessageBytes, err = byteField(conf, fieldMaxMessageBytes); err != nil {
		return wc, err
	}
	if conf.Contains(fieldTimestampMS) {
		if wc.timestampMS, err = parseOutField(conf, fieldTimestampMS); err != nil {
			return wc, err
		}
	}
	if conf.Contains(fieldAutoCreate) {
		auto, err := conf.FieldBool(fieldAutoCreate)
		if err != nil {
			return wc, err
		}
		wc.noAutoCreate = !auto
	}
	if conf.Contains(fieldBrokerWriteMax) {
		if wc.brokerWriteMax, err = byteField(conf, fieldBrokerWriteMax); err != nil {
			return wc, err
		}
	}
	if conf.Contains(fieldMetadataMaxAge) {
		if wc.client.metadataMaxAge, err = conf.FieldDuration(fieldMetadataMaxAge); err != nil {
			return wc, err
		}
	}
	return wc, nil
}
