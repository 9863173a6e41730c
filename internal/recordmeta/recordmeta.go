// Package recordmeta names the Kafka record a message was read from: the
// kafka_topic, kafka_partition and kafka_offset metadata the kafka_franz
// input writes on every message (as Redpanda Connect's does). The input
// reads them back to trace a failed message to its record, and
// intel_enrich to know which record carried a change; both read them here,
// the same way.
package recordmeta

import (
	"math"
	"strconv"
)

// The metadata keys of a message's record.
const (
	Topic     = "kafka_topic"
	Partition = "kafka_partition"
	Offset    = "kafka_offset"
)

// Record is the record a message was read from.
type Record struct {
	Topic     string
	Partition int32
	Offset    int64
}

// Meta is a message's metadata (Benthos' *service.Message has it).
type Meta interface {
	MetaGetMut(key string) (any, bool)
}

// Of is the record m was read from, and false when any of its three keys
// is missing or holds what neither the input writes nor a mapping could
// have rewritten it to (a processor removed it, or made a new message).
func Of(m Meta) (Record, bool) {
	tv, _ := m.MetaGetMut(Topic)
	topic, ok := tv.(string)
	if !ok || topic == "" {
		return Record{}, false
	}
	pv, _ := m.MetaGetMut(Partition)
	part, ok := integer(pv)
	if !ok || part < 0 || part > math.MaxInt32 {
		return Record{}, false
	}
	ov, _ := m.MetaGetMut(Offset)
	off, ok := integer(ov)
	if !ok {
		return Record{}, false
	}
	return Record{Topic: topic, Partition: int32(part), Offset: off}, true
}

// integer reads an integer metadata value as the input writes it (int) or as a
// mapping may have rewritten it (another integer type, a whole float, a
// string of digits).
func integer(v any) (int64, bool) {
	switch n := v.(type) {
	case int:
		return int64(n), true
	case int64:
		return n, true
	case int32:
		return int64(n), true
	case float64:
		if n != math.Trunc(n) || math.Abs(n) > 1<<53 {
			return 0, false
		}
		return int64(n), true
	case string:
		i, err := strconv.ParseInt(n, 10, 64)
		return i, err == nil
	}
	return 0, false
}
