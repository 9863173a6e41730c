package kafka

import (
	"regexp"

	"github.com/redpanda-data/benthos/v4/public/service"
)

// outField is one of the output's interpolated fields (topic, key,
// partition, timestamp_ms), made per message the cheapest way its text
// allows: a static text as it is; exactly ${! @name } straight from the
// message's metadata, as Benthos' interpolation renders it (the value as a
// string, "null" when absent) but without a Bloblang query per message;
// anything else by Benthos' interpolation over the batch.
type outField struct {
	interp      *service.InterpolatedString
	static      string
	staticBytes []byte
	isStatic    bool
	meta        string // the metadata key of a ${! @name } field
}

// parseOutField is the field name of conf, which must be set.
func parseOutField(conf *service.ParsedConfig, name string) (*outField, error) {
	interp, err := conf.FieldInterpolatedString(name)
	if err != nil {
		return nil, err
	}
	f := &outField{interp: interp}
	if f.static, f.isStatic = interp.Static(); f.isStatic {
		f.staticBytes = []byte(f.static)
		return f, nil
	}
	raw, _ := conf.FieldString(name)
	f.meta = metadataReference(raw)
	return f, nil
}

// metaReference matches an interpolation that is one metadata reference.
var metaReference = regexp.MustCompile(`^\$\{!\s*@([A-Za-z0-9_]+)\s*\}$`)

// metadataReference is the metadata key an interpolated field only reads,
// as in ${! @decnet_key }, or "" when it does anything else.
func metadataReference(raw string) string {
	if m := metaReference.FindStringSubmatch(raw); m != nil {
		return m[1]
	}
	return ""
}

// executor is f's interpolation over batch, or nil when f (which may be
// nil: the field is not set) needs none.
func (f *outField) executor(batch service.MessageBatch) *service.MessageBatchInterpolationExecutor {
	if f == nil || f.isStatic || f.meta != "" {
		return nil
	}
	return batch.InterpolationExecutor(f.interp)
}

// metaValue is what ${! @name } renders for msg.
func (f *outField) metaValue(msg *service.Message) string {
	v, ok := msg.MetaGet(f.meta)
	if !ok {
		return "null"
	}
	return v
}

// str is f's value for message i of the batch ex (f's executor) was made
// over.
func (f *outField) str(ex *service.MessageBatchInterpolationExecutor, i int, msg *service.Message) (string, error) {
	switch {
	case f.isStatic:
		return f.static, nil
	case f.meta != "":
		return f.metaValue(msg), nil
	}
	return ex.TryString(i)
}

// bytes is str as bytes (a static value's are shared: records only read
// them).
func (f *outField) bytes(ex *service.MessageBatchInterpolationExecutor, i int, msg *service.Message) ([]byte, error) {
	switch {
	case f.isStatic:
		return f.staticBytes, nil
	case f.meta != "":
		return []byte(f.metaValue(msg)), nil
	}
	return ex.TryBytes(i)
}
