package kafka

import (
	"fmt"
	"slices"

	"github.com/redpanda-data/benthos/v4/public/service"
)

// The redpanda input and output are kafka_franz under the names current
// Redpanda Connect configs use (upstream deprecates kafka_franz for them),
// with upstream's field names where they differ from ours, so a config
// copied from upstream's docs lints and runs. Fields upstream has and this
// build has no use for are accepted and reported at start, never silently.

const (
	fieldRegexpInclude   = "regexp_topics_include"
	fieldRegexpExclude   = "regexp_topics_exclude"
	fieldIsolation       = "transaction_isolation_level"
	fieldFetchMinBytes   = "fetch_min_bytes"
	fieldInstanceID      = "instance_id"
	fieldLagRefresh      = "topic_lag_refresh_period"
	fieldReqTimeout      = "request_timeout_overhead"
	fieldConnIdle        = "conn_idle_timeout"
	fieldTCP             = "tcp"
	fieldPartitionBuffer = "partition_buffer_bytes"
	fieldMaxYieldBytes   = "max_yield_batch_bytes"
	fieldTimelyNacks     = "timely_nacks_maximum_wait"
	fieldTimestampMS     = "timestamp_ms"
	fieldAutoCreate      = "allow_auto_topic_creation"
	fieldBrokerWriteMax  = "broker_write_max_bytes"

	isolationUncommitted = "read_uncommitted"
	isolationCommitted   = "read_committed"
)

// upstreamClientFields are the connection fields upstream's redpanda
// components have beyond ours.
func upstreamClientFields() []*service.ConfigField {
	return []*service.ConfigField{
		service.NewDurationField(fieldReqTimeout).
			Description("Added to each request's own timeout to bound how long the client waits for the broker.").
			Default("10s").Advanced(),
		service.NewDurationField(fieldConnIdle).
			Description("How long an unused connection is kept.").
			Default("20s").Advanced(),
		tcpField(),
	}
}

func parseUpstreamClient(conf *service.ParsedConfig, c *clientConfig) (err error) {
	if conf.Contains(fieldReqTimeout) {
		if c.requestTimeoutOverhead, err = conf.FieldDuration(fieldReqTimeout); err != nil {
			return err
		}
	}
	if conf.Contains(fieldConnIdle) {
		if c.connIdleTimeout, err = conf.FieldDuration(fieldConnIdle); err != nil {
			return err
		}
	}
	c.tcp, err = parseTCP(conf)
	return err
}

func redpandaInputSpec() *service.ConfigSpec {
	return inputSpec().
		Summary("The kafka_franz input under the name current Redpanda Connect configs use, with upstream's field names too.").
		Description(`
Everything [` + "`kafka_franz`" + `](kafka_franz.md) does (subjects, checkpoint_limit, ordered_topics, the
` + "`kafka_*`" + ` metadata including ` + "`kafka_lag`" + `, the ` + "`kafka_consumer_lag`" + ` gauge), plus the fields of
upstream's ` + "`redpanda`" + ` input that ours names differently or lacks: ` + "`regexp_topics_include`" + ` /
` + "`regexp_topics_exclude`" + `, ` + "`transaction_isolation_level`" + `, ` + "`fetch_min_bytes`" + `, ` + "`instance_id`" + ` (static
membership), ` + "`topic_lag_refresh_period`" + `, ` + "`request_timeout_overhead`" + `, ` + "`conn_idle_timeout`" + `.

The ` + "`tcp`" + ` object (connect timeout, keep-alive probes, TCP_USER_TIMEOUT on Linux) applies as upstream's does.
Accepted but without effect here, and reported at start: ` + "`partition_buffer_bytes`" + ` and
` + "`max_yield_batch_bytes`" + ` (` + "`checkpoint_limit`" + ` bounds what a partition holds) and
` + "`timely_nacks_maximum_wait`" + `.`).
		Fields(slices.Concat(upstreamClientFields(), []*service.ConfigField{
			service.NewStringListField(fieldRegexpInclude).
				Description("Regular expressions of topics to consume (consumed as with `regexp_topics`).").
				Optional(),
			service.NewStringListField(fieldRegexpExclude).
				Description("Regular expressions of topics not to consume, though included.").
				Optional(),
			service.NewStringEnumField(fieldIsolation, isolationUncommitted, isolationCommitted).
				Description("Whether records of transactions not yet committed are read.").
				Default(isolationUncommitted),
			service.NewStringField(fieldFetchMinBytes).
				Description("The least a fetch waits for (up to `fetch_max_wait`).").
				Default("1B").LintRule(byteSizeLint(fieldFetchMinBytes)).Advanced(),
			service.NewStringField(fieldInstanceID).
				Description("A static group membership id: a restart within the session timeout keeps the member's partitions.").
				Default("").Advanced(),
			service.NewDurationField(fieldLagRefresh).
				Description("How often the group's lag is read for `kafka_consumer_lag`.").
				Default("5s").Advanced(),
			service.NewStringField(fieldPartitionBuffer).Description("Upstream's; no effect here (see above).").Optional().Advanced(),
			service.NewStringField(fieldMaxYieldBytes).Description("Upstream's; no effect here (see above).").Optional().Advanced(),
			service.NewDurationField(fieldTimelyNacks).Description("Upstream's; no effect here (see above).").Optional().Advanced(),
		})...)
}

// parseUpstreamReader reads the redpanda input's own fields into rc, whose
// topics are parsed already: regexp_topics_include adds regexps.
func parseUpstreamReader(conf *service.ParsedConfig, rc *readerConfig) (err error) {
	if conf.Contains(fieldRegexpInclude) {
		include, err := conf.FieldStringList(fieldRegexpInclude)
		if err != nil {
			return err
		}
		for _, re := range include {
			rc.addRegexp(re)
		}
	}
	if conf.Contains(fieldRegexpExclude) {
		if rc.excludeTopics, err = conf.FieldStringList(fieldRegexpExclude); err != nil {
			return err
		}
		if len(rc.excludeTopics) > 0 && !rc.regexpTopics {
			return fmt.Errorf("%s needs topics consumed by regular expression (%s)", fieldRegexpExclude, fieldRegexpInclude)
		}
	}
	if conf.Contains(fieldIsolation) {
		iso, err := conf.FieldString(fieldIsolation)
		if err != nil {
			return err
		}
		rc.readCommitted = iso == isolationCommitted
	}
	if conf.Contains(fieldFetchMinBytes) {
		if rc.fetchMinBytes, err = byteField(conf, fieldFetchMinBytes); err != nil {
			return err
		}
	}
	if conf.Contains(fieldInstanceID) {
		if rc.instanceID, err = conf.FieldString(fieldInstanceID); err != nil {
			return err
		}
	}
	if conf.Contains(fieldLagRefresh) {
		if rc.lagPeriod, err = conf.FieldDuration(fieldLagRefresh); err != nil {
			return err
		}
		if rc.lagPeriod <= 0 {
			return fmt.Errorf("%s must be positive", fieldLagRefresh)
		}
	}
	return nil
}

// reportUnused logs, once at start, each upstream field that is set and has
// no effect in this build.
func reportUnused(conf *service.ParsedConfig, log *service.Logger, component string, fields ...string) {
	for _, f := range fields {
		if conf.Contains(f) {
			log.Warnf("%s: %s is accepted for compatibility with Redpanda Connect and has no effect here (see the component's docs)", component, f)
		}
	}
}

func redpandaOutputSpec() *service.ConfigSpec {
	return outputSpec().
		Summary("The kafka_franz output under the name current Redpanda Connect configs use, with upstream's field names too.").
		Description(`
Everything [` + "`kafka_franz`" + `](kafka_franz.md) does, plus the fields of upstream's ` + "`redpanda`" + ` output that ours
lacks: ` + "`timestamp_ms`" + `, ` + "`allow_auto_topic_creation`" + `, ` + "`broker_write_max_bytes`" + `, ` + "`metadata_max_age`" + `,
` + "`request_timeout_overhead`" + `, ` + "`conn_idle_timeout`" + `, ` + "`tcp`" + `.`).
		Fields(slices.Concat(upstreamClientFields(), []*service.ConfigField{
			service.NewInterpolatedStringField(fieldTimestampMS).
				Description("The record's timestamp in milliseconds since the epoch; by default the time it is written.").
				Example(`${! timestamp_unix_milli() }`).Optional().Advanced(),
			service.NewBoolField(fieldAutoCreate).
				Description("Whether a topic that does not exist is created by writing to it (where the cluster allows it).").
				Default(true).Advanced(),
			service.NewStringField(fieldBrokerWriteMax).
				Description("The largest request written to a broker.").
				Default("100MiB").LintRule(byteSizeLint(fieldBrokerWriteMax)).Advanced(),
			service.NewDurationField(fieldMetadataMaxAge).
				Description("How long cluster metadata is trusted before it is refreshed.").
				Default("5m").Advanced(),
		})...)
}

func init() {
	err := service.RegisterBatchInput("redpanda", redpandaInputSpec(),
		func(conf *service.ParsedConfig, mgr *service.Resources) (service.BatchInput, error) {
			rc, err := parseReaderConfig(conf)
			if err != nil {
				return nil, err
			}
			reportUnused(conf, mgr.Logger(), "redpanda input", fieldPartitionBuffer, fieldMaxYieldBytes, fieldTimelyNacks)
			return newFranzReader(rc, mgr), nil
		})
	if err != nil {
		panic(err)
	}
	err = service.RegisterBatchOutput("redpanda", redpandaOutputSpec(),
		func(conf *service.ParsedConfig, mgr *service.Resources) (out service.BatchOutput, pol service.BatchPolicy, maxInFlight int, err error) {
			return newOutput(conf, mgr)
		})
	if err != nil {
		panic(err)
	}
}
