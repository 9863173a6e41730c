package kafka

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/redpanda-data/benthos/v4/public/service"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/decnet/decnet-stream/internal/bytesize"
	"github.com/decnet/decnet-stream/internal/topics"
)

const (
	fieldTopics          = "topics"
	fieldSubjects        = "subjects"
	fieldRegexpTopics    = "regexp_topics"
	fieldConsumerGroup   = "consumer_group"
	fieldCheckpointLimit = "checkpoint_limit"
	fieldCommitPeriod    = "commit_period"
	fieldStartOffset     = "start_offset"
	fieldFetchMaxBytes   = "fetch_max_bytes"
	fieldFetchMaxPart    = "fetch_max_partition_bytes"
	fieldFetchMaxWait    = "fetch_max_wait"
	fieldRackID          = "rack_id"
	fieldOrderedTopics   = "ordered_topics"
	fieldOrderedBatch    = "ordered_batch_size"
	fieldRecordMetadata  = "record_metadata"
	fieldGroupBalancer   = "group_balancer"
	fieldBatching        = "batching"
	fieldAutoReplayNacks = "auto_replay_nacks"
	fieldMetadataMaxAge  = "metadata_max_age"
	fieldSessionTimeout  = "session_timeout"
	fieldHeartbeat       = "heartbeat_interval"
	fieldRebalance       = "rebalance_timeout"

	startEarliest = "earliest"
	startLatest   = "latest"
	// startCommitted refuses to start a partition without a committed
	// offset (upstream's value).
	startCommitted = "committed"
)

func inputSpec() *service.ConfigSpec {
	return service.NewConfigSpec().
		Stable().
		Categories("Services").
		Summary("Consumes records from Kafka (or Redpanda, or `decnet-stream broker`) with franz-go, at least once.").
		Description(`
Fields and metadata follow Redpanda Connect's `+"`kafka_franz`"+` input, so existing configs work unchanged.

### Delivery guarantees

With a `+"`consumer_group`"+`, an offset is committed only when every message of its partition up to it has
been acknowledged by the outputs: a crash or restart may deliver a message twice, never skip one. Order is
kept within a partition. The messages an output nacked are delivered again, rebuilt from their records,
after a backoff that grows to a second (unless `+"`auto_replay_nacks`"+` is false), for as long as it
takes: their batch holds back the commit of everything after it until each of its messages was
delivered. Only the failed messages of a batch are delivered again, however often they fail: a failed
message is traced to its record by its `+"`kafka_topic`"+`, `+"`kafka_partition`"+` and `+"`kafka_offset`"+`
metadata, and when a processor removed or rewrote those (or made a new message) the whole batch is
delivered again.

On a rebalance, revoked partitions wait up to 10s for their batches to be acknowledged and commit what is
done; lost partitions drop their state, and the new owner resumes from the last commit.

### Backpressure

At most `+"`checkpoint_limit`"+` messages of one partition are out with the pipeline at a time: a fetch
larger than that is handed out in batches of the limit (a `+"`batching`"+` policy's batch goes out whole, alone
if it is larger; a partition of `+"`ordered_topics`"+` has one batch out at a time). Fetched records wait
as records and become messages as they are handed out.
Each partition is handed to the pipeline by its own goroutine, so a partition at its limit holds up only
itself: its fetches are paused once 1,000 records (or `+"`checkpoint_limit`"+`, if lower) wait behind it, and
resumed when they drain. A slow output slows the consumer instead of growing memory, and a slow topic (lookups
waiting on providers) never holds up a fast one read by the same input. What the input holds is then, per
partition, `+"`checkpoint_limit`"+` messages out and about one fetched chunk of records
(`+"`fetch_max_partition_bytes`"+`, compressed), plus one buffered fetch (`+"`fetch_max_bytes`"+`): size those
to the partitions a replica reads.

### Metadata

Each message carries (the fields marked * only when `+"`record_metadata`"+` names them, as it does all by
default):

`+"```text"+`
- kafka_key *
- kafka_topic
- kafka_partition
- kafka_offset
- kafka_timestamp_ms *
- kafka_tombstone_message *
- kafka_lag * (records of the partition behind this one when it was fetched, or, for a redelivery, redelivered)
- All record headers
`+"```"+`
`).
		Fields(slices.Concat(
			clientFields(),
			[]*service.ConfigField{
				service.NewStringListField(fieldTopics).
					Description("A list of topics to consume from. Multiple comma separated topics can be listed in a single element.").
					Example([]string{"attacker.observed"}).
					Example([]string{"attacker.observed,attacker.scored"}).
					Default([]string{}),
				service.NewStringListField(fieldSubjects).
					Description("DECNET subject patterns to consume, with NATS wildcards (`*` one token, a final `>` one or more), as DECNET's own workers subscribe. Patterns with wildcards become topic regular expressions and require a `consumer_group`; plain subjects are plain topics. Combines with `topics`.").
					Example([]string{"attacker.>", "credential.captured"}).
					Default([]string{}).
					LintRule(`root = if !this.string().re_match("^((\\*|[^.*>\\s]+)\\.)*(\\*|>|[^.*>\\s]+)$") { [ "subjects: %q is not a valid subject pattern (non-empty tokens; * and > only as whole tokens; > only last)".format(this.string()) ] }`),
				service.NewBoolField(fieldRegexpTopics).
					Description("Whether each topic is a regular expression matching the topics to consume.").
					Default(false),
				service.NewStringField(fieldConsumerGroup).
					Description("A consumer group to consume as. Partitions are shared among members and offsets are committed as messages are acknowledged. Without one, every partition is consumed and nothing is committed.").
					Optional(),
				service.NewIntField(fieldCheckpointLimit).
					Description("The most messages of one partition that may be out with the pipeline at once before the consumer waits for acknowledgements. Lower values reduce duplicates after a crash.").
					Default(1024).
					LintRule(`root = if this < 1 { [ "checkpoint_limit must be at least 1" ] }`).
					Advanced(),
				service.NewStringListField(fieldOrderedTopics).
					Description("Topics whose partitions are handed to the pipeline one batch at a time: the next batch of a partition is read only once every message of the previous one was acknowledged by the outputs. What the pipeline writes for a partition then leaves in the order it was read, whatever `pipeline.threads` and `max_in_flight` allow, at the cost of one batch in flight per partition.").
					Default([]string{}).
					Example([]string{"attacker.intel.lookup"}).
					Advanced(),
				service.NewStringListField(fieldRecordMetadata).
					Description("Which of a record's optional fields each message carries as metadata: `key` (kafka_key), `timestamp` (kafka_timestamp_ms), `tombstone` (kafka_tombstone_message), `lag` (kafka_lag). kafka_topic, kafka_partition and kafka_offset are always written (a failed message is traced to its record by them), and so are the record's headers. Every key written costs each message a map insert (a number, an allocation too), and a message whose processors add keys past eight grows Go's small map into a table: in a storm of new attackers, where each lookup request gains two keys, `[ key ]` lowered the shipped pipeline's peak RSS by ~15 MiB on average (BENCHMARKS.md).").
					Default(allRecordFields).
					Example([]string{"key"}).
					LintRule(recordMetadataLint).
					Advanced(),
				service.NewIntField(fieldOrderedBatch).
					Description("The most messages of an `ordered_topics` partition handed to the pipeline in one batch. A batch that waits on slow work (lookups waiting for rate-limit tokens) writes all its messages' results only when its slowest is done, and its partition's next batch waits for that write: smaller batches keep the slow work going while the last one's results are written. Default: a poll's worth (10,000).").
					Default(maxPollRecords).
					LintRule(`root = if this < 1 { [ "ordered_batch_size must be at least 1" ] }`).
					Advanced(),
				service.NewStringAnnotatedEnumField(fieldGroupBalancer, map[string]string{
					balancerCooperativeSticky: "Incremental rebalances that move as few partitions as possible (franz-go's default).",
					balancerSticky:            "Eager rebalances that move as few partitions as possible.",
					balancerRange:             "Partition N of every topic goes to the same member while the topics have equal partition counts: co-partitioned topics keep a key on one member in all of them.",
					balancerRoundRobin:        "Partitions dealt one by one.",
				}).
					Description("How a consumer group shares partitions among its members.").
					Default(balancerCooperativeSticky).
					LintRule(enumLint(fieldGroupBalancer, balancerCooperativeSticky, balancerSticky, balancerRange, balancerRoundRobin)).
					Advanced(),
				service.NewDurationField(fieldCommitPeriod).
					Description("The period of time between each commit of acknowledged offsets.").
					Default("5s").
					Advanced(),
				service.NewStringAnnotatedEnumField(fieldStartOffset, map[string]string{
					startEarliest:  "Start from the earliest offset when the group has no committed offset.",
					startLatest:    "Start from the latest offset when the group has no committed offset.",
					startCommitted: "Consume only partitions with a committed offset; others wait (and log) until one is committed.",
				}).
					Description("Where to start consuming a partition that has no committed offset.").
					Default(startEarliest).
					LintRule(enumLint(fieldStartOffset, startEarliest, startLatest, startCommitted)).
					Advanced(),
				service.NewStringField(fieldFetchMaxBytes).
					Description("The maximum number of bytes a broker returns for one fetch request.").
					Default("50MiB").
					LintRule(byteSizeLint(fieldFetchMaxBytes)).
					Advanced(),
				service.NewStringField(fieldFetchMaxPart).
					Description("The maximum number of bytes a broker returns for one partition in a fetch request.").
					Default("1MiB").
					LintRule(byteSizeLint(fieldFetchMaxPart)).
					Advanced(),
				service.NewDurationField(fieldFetchMaxWait).
					Description("How long a broker may hold a fetch open waiting for data. A partition paused for backpressure is left out of the fetch sent meanwhile, and when it resumes it waits for that fetch to return: if every partition in it is idle (a lookup topic, a quiet subject), that is this long, every time the pipeline catches up with a partition. So it is short here (franz-go's default is 5s, the Java consumer's 500ms): with 500ms the shipped pipeline read a backlog at 284,000-373,000 events/s, with 20ms at 430,000-480,000 (BENCHMARKS.md). An idle consumer then asks each broker about 50 times a second, for nothing, cheaply.").
					Default("20ms").
					Advanced(),
				service.NewStringField(fieldRackID).
					Description("A rack to identify as, letting brokers that support it serve fetches from the closest replica.").
					Default("").
					Advanced(),
				service.NewDurationField(fieldMetadataMaxAge).
					Description("How often to refresh cluster metadata; with `regexp_topics` or `subjects` this is how soon a new matching topic is consumed.").
					Default("5m").
					Advanced(),
				service.NewDurationField(fieldSessionTimeout).
					Description("How long the group waits for a silent member (a crashed consumer) before giving its partitions to the others.").
					Default("45s").
					Advanced(),
				service.NewDurationField(fieldRebalance).
					Description("How long a rebalance waits for every member to rejoin; a member that crashed mid-rebalance holds it up this long.").
					Default("45s").
					Advanced(),
				service.NewDurationField(fieldHeartbeat).
					Description("How often a member tells the group it is alive; well below `session_timeout`.").
					Default("3s").
					Advanced(),
				service.NewBatchPolicyField(fieldBatching).
					Description("Allows you to configure a batching policy that applies to individual topic partitions in order to batch messages together before flushing them for processing. By default each fetch of a partition is one batch.").
					Advanced(),
				service.NewAutoRetryNacksToggleField(),
			},
		)...).
		LintRule(`root = if this.topics.length().or(0) + this.subjects.length().or(0) + this.regexp_topics_include.length().or(0) == 0 { [ "topics or subjects must list at least one topic" ] } else if (this.regexp_topics.or(false) || this.regexp_topics_include.length().or(0) > 0 || this.subjects.filter(s -> s.contains("*") || s.contains(">")).length().or(0) > 0) && this.consumer_group.or("") == "" { [ "regexp_topics and wildcard subjects require a consumer_group" ] }`).
		Example("Consume DECNET attacker events", "Read the attacker subjects in a consumer group, committing as outputs acknowledge.", `
input:
  kafka_franz:
    seed_brokers: [ "${KAFKA_SEED_BROKERS:127.0.0.1:9092}" ]
    topics: [ attacker.observed, attacker.scored ]
    consumer_group: decnet-intel
`)
}

func init() {
	err := service.RegisterBatchInput("kafka_franz", inputSpec(),
		func(conf *service.ParsedConfig, mgr *service.Resources) (service.BatchInput, error) {
			rc, err := parseReaderConfig(conf)
			if err != nil {
				return nil, err
			}
			return newFranzReader(rc, mgr), nil
		})
	if err != nil {
		panic(err)
	}
}

// readerConfig is the parsed kafka_franz input config.
type readerConfig struct {
	client          clientConfig
	topics          []string
	regexpTopics    bool
	group           string
	checkpointLimit int
	commitPeriod    time.Duration
	startOffset     kgo.Offset
	fetchMaxBytes   int32
	fetchMaxPart    int32
	fetchMaxWait    time.Duration
	rackID          string
	batching        service.BatchPolicy
	metadataMaxAge  time.Duration
	sessionTimeout  time.Duration
	rebalance       time.Duration
	heartbeat       time.Duration
	replayNacks     bool
	orderedTopics   []string
	orderedBatch    int // most messages in one batch of an ordered partition
	recordMeta      recordMetadata
	balancer        kgo.GroupBalancer
	// Settable under the redpanda input's names (redpanda.go).
	excludeTopics []string
	readCommitted bool
	fetchMinBytes int32
	instanceID    string
	lagPeriod     time.Duration
}

const (
	balancerCooperativeSticky = "cooperative_sticky"
	balancerSticky            = "sticky"
	balancerRange             = "range"
	balancerRoundRobin        = "round_robin"
)

func parseReaderConfig(conf *service.ParsedConfig) (rc readerConfig, err error) {
	if rc.client, err = parseClientConfig(conf); err != nil {
		return rc, err
	}
	if rc.topics, err = splitList(conf, fieldTopics); err != nil {
		return rc, err
	}
	if rc.regexpTopics, err = conf.FieldBool(fieldRegexpTopics); err != nil {
		return rc, err
	}
	if rc.replayNacks, err = conf.FieldBool(service.AutoRetryNacksToggleFieldName); err != nil {
		return rc, err
	}
	subjects, err := splitList(conf, fieldSubjects)
	if err != nil {
		return rc, err
	}
	var patterns []topics.Pattern
	wild := false
	for _, s := range subjects {
		p, err := topics.ParsePattern(s)
		if err != nil {
			return rc, fmt.Errorf("%s: %w", fieldSubjects, err)
		}
		patterns = append(patterns, p)
		wild = wild || p.Wildcards() > 0
	}
	switch {
	case len(patterns) > 0 && !wild && !rc.regexpTopics:
		// Plain subjects are plain topics: no regexp, so franz-go watches
		// for them to appear instead of waiting for a metadata refresh.
		for _, p := range patterns {
			rc.topics = append(rc.topics, p.String())
		}
	case len(patterns) > 0:
		for _, p := range patterns {
			rc.addRegexp(p.Regexp())
		}
	}
	// The redpanda input's names (regexp_topics_include, …); none in a
	// kafka_franz config.
	if err := parseUpstreamReader(conf, &rc); err != nil {
		return rc, err
	}
	if len(rc.topics) == 0 {
		return rc, fmt.Errorf("%s or %s: at least one topic is required", fieldTopics, fieldSubjects)
	}
	if rc.regexpTopics {
		for _, t := range rc.topics {
			if _, err := regexp.Compile(t); err != nil {
				return rc, fmt.Errorf("%s: %q is not a valid regular expression: %w", fieldTopics, t, err)
			}
		}
	}
	if conf.Contains(fieldConsumerGroup) {
		if rc.group, err = conf.FieldString(fieldConsumerGroup); err != nil {
			return rc, err
		}
	}
	if rc.regexpTopics && rc.group == "" {
		return rc, fmt.Errorf("%s and wildcard %s require a %s", fieldRegexpTopics, fieldSubjects, fieldConsumerGroup)
	}
	if rc.checkpointLimit, err = conf.FieldInt(fieldCheckpointLimit); err != nil {
		return rc, err
	}
	if rc.orderedTopics, err = conf.FieldStringList(fieldOrderedTopics); err != nil {
		return rc, err
	}
	if rc.orderedBatch, err = conf.FieldInt(fieldOrderedBatch); err != nil {
		return rc, err
	}
	if rc.orderedBatch < 1 {
		return rc, fmt.Errorf("%s: must be at least 1, got %d", fieldOrderedBatch, rc.orderedBatch)
	}
	fields, err := conf.FieldStringList(fieldRecordMetadata)
	if err != nil {
		return rc, err
	}
	if rc.recordMeta, err = parseRecordMetadata(fields); err != nil {
		return rc, fmt.Errorf("%s: %w", fieldRecordMetadata, err)
	}
	balancer, err := conf.FieldString(fieldGroupBalancer)
	if err != nil {
		return rc, err
	}
	switch balancer {
	case balancerCooperativeSticky:
		rc.balancer = kgo.CooperativeStickyBalancer()
	case balancerSticky:
		rc.balancer = kgo.StickyBalancer()
	case balancerRange:
		rc.balancer = kgo.RangeBalancer()
	case balancerRoundRobin:
		rc.balancer = kgo.RoundRobinBalancer()
	default:
		return rc, fmt.Errorf("%s: unknown balancer %q", fieldGroupBalancer, balancer)
	}
	if rc.checkpointLimit < 1 {
		return rc, fmt.Errorf("%s: must be at least 1, got %d", fieldCheckpointLimit, rc.checkpointLimit)
	}
	if rc.commitPeriod, err = conf.FieldDuration(fieldCommitPeriod); err != nil {
		return rc, err
	}
	start, err := conf.FieldString(fieldStartOffset)
	if err != nil {
		return rc, err
	}
	switch start {
	case startEarliest:
		rc.startOffset = kgo.NewOffset().AtStart()
	case startLatest:
		rc.startOffset = kgo.NewOffset().AtEnd()
	case startCommitted:
		rc.startOffset = kgo.NoResetOffset()
	default:
		return rc, fmt.Errorf("%s: unknown value %q", fieldStartOffset, start)
	}
	if rc.fetchMaxBytes, err = byteField(conf, fieldFetchMaxBytes); err != nil {
		return rc, err
	}
	if rc.fetchMaxPart, err = byteField(conf, fieldFetchMaxPart); err != nil {
		return rc, err
	}
	if rc.fetchMaxWait, err = conf.FieldDuration(fieldFetchMaxWait); err != nil {
		return rc, err
	}
	if rc.rackID, err = conf.FieldString(fieldRackID); err != nil {
		return rc, err
	}
	if rc.batching, err = conf.FieldBatchPolicy(fieldBatching); err != nil {
		return rc, err
	}
	if rc.metadataMaxAge, err = conf.FieldDuration(fieldMetadataMaxAge); err != nil {
		return rc, err
	}
	if rc.sessionTimeout, err = conf.FieldDuration(fieldSessionTimeout); err != nil {
		return rc, err
	}
	if rc.heartbeat, err = conf.FieldDuration(fieldHeartbeat); err != nil {
		return rc, err
	}
	if rc.rebalance, err = conf.FieldDuration(fieldRebalance); err != nil {
		return rc, err
	}
	if rc.heartbeat >= rc.sessionTimeout {
		return rc, fmt.Errorf("%s (%v) must be below %s (%v)", fieldHeartbeat, rc.heartbeat, fieldSessionTimeout, rc.sessionTimeout)
	}
	return rc, nil
}

// addRegexp adds a topic regexp. Consuming by regexp is all or nothing, so
// the literal topics listed so far are quoted, to keep meaning what they
// said.
func (rc *readerConfig) addRegexp(re string) {
	if !rc.regexpTopics {
		for i, t := range rc.topics {
			rc.topics[i] = "^" + regexp.QuoteMeta(t) + "$"
		}
		rc.regexpTopics = true
	}
	rc.topics = append(rc.topics, re)
}

// splitList reads a string list whose items may hold comma separated values.
func splitList(conf *service.ParsedConfig, field string) ([]string, error) {
	raw, err := conf.FieldStringList(field)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, item := range raw {
		for _, v := range strings.Split(item, ",") {
			if v = strings.TrimSpace(v); v != "" {
				out = append(out, v)
			}
		}
	}
	return out, nil
}

func byteField(conf *service.ParsedConfig, field string) (int32, error) {
	s, err := conf.FieldString(field)
	if err != nil {
		return 0, err
	}
	n, err := bytesize.Parse(s)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", field, err)
	}
	if n < 1 || n > 1<<31-1 {
		return 0, fmt.Errorf("%s: %q is out of range (1B to 2GiB)", field, s)
	}
	return int32(n), nil
}

// recordMetadata is which of a record's optional fields its message
// carries as metadata (record_metadata).
type recordMetadata struct{ key, timestamp, tombstone, lag bool }

// allRecordFields is record_metadata's default: every field, as Benthos'
// own kafka inputs write them.
var allRecordFields = []string{"key", "timestamp", "tombstone", "lag"}

// notARecordField is the complaint about a record_metadata value; the lint
// rule and the parser make the same. Benthos lints the list and then each
// of its values: the rule speaks of values only.
var notARecordField = "%q is not one of " + strings.Join(allRecordFields, ", ")

var recordMetadataLint = fmt.Sprintf(`root = if this.type() != "array" && ![ "%s" ].contains(this) { [ "%s: " + %q.format(this) ] }`,
	strings.Join(allRecordFields, `", "`), fieldRecordMetadata, notARecordField)

func parseRecordMetadata(fields []string) (recordMetadata, error) {
	var m recordMetadata
	for _, f := range fields {
		switch f {
		case "key":
			m.key = true
		case "timestamp":
			m.timestamp = true
		case "tombstone":
			m.tombstone = true
		case "lag":
			m.lag = true
		default:
			return m, fmt.Errorf(notARecordField, f)
		}
	}
	return m, nil
}
