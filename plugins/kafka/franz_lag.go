package kafka

import (
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/redpanda-data/benthos/v4/public/service"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// lagPeriod is how often a group member asks the cluster for its lag, by
// default (the redpanda input's topic_lag_refresh_period sets it): a
// stalled partition returns no records, so lag read from fetches alone
// would stop growing exactly when it matters.
const lagPeriod = 15 * time.Second

// lags keeps each partition's lag: the gauge kafka_consumer_lag{topic,
// partition} (records not yet consumed), from each fetch's high watermark
// and, for a consumer group, from the group's commits every lagPeriod; and
// the last high watermark fetched, for the kafka_lag of a redelivery.
type lags struct {
	g  *service.MetricGauge
	mu sync.Mutex
	hw map[topicPartition]int64
}

func newLags(m *service.Metrics) *lags {
	return &lags{g: m.NewGauge("kafka_consumer_lag", "topic", "partition"), hw: map[topicPartition]int64{}}
}

// fetched records a fetch of a partition: its high watermark, and the lag
// behind its last record.
func (l *lags) fetched(p kgo.FetchTopicPartition) {
	if n := len(p.Records); n > 0 {
		l.mu.Lock()
		l.hw[topicPartition{p.Topic, p.Partition}] = p.HighWatermark
		l.mu.Unlock()
		l.set(p.Topic, p.Partition, p.HighWatermark-p.Records[n-1].Offset-1)
	}
}

// highWatermark is the partition's high watermark as last fetched.
func (l *lags) highWatermark(topic string, partition int32) int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.hw[topicPartition{topic, partition}]
}

func (l *lags) set(topic string, partition int32, lag int64) {
	l.g.Set(max(lag, 0), topic, strconv.Itoa(int(partition)))
}

// pollGroup sets the lag of this member's partitions from the group's
// commits and the partitions' end offsets until ctx ends.
func (l *lags) pollGroup(ctx context.Context, cl *kgo.Client, group string, every time.Duration, log *service.Logger) {
	adm := kadm.NewClient(cl)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		member, _ := cl.GroupMetadata()
		lags, err := adm.Lag(ctx, group)
		if err != nil {
			if ctx.Err() == nil {
				log.Debugf("Reading the lag of group %s: %v", group, err)
			}
			continue
		}
		lag, ok := lags[group]
		if !ok || lag.Error() != nil {
			continue
		}
		for topic, parts := range lag.Lag {
			for partition, pl := range parts {
				if pl.Err == nil && pl.Member != nil && pl.Member.MemberID == member {
					l.set(topic, partition, pl.Lag)
				}
			}
		}
	}
}
