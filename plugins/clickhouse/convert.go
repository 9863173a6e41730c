package clickhouse

import (
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// converter turns a Bloblang value into what clickhouse-go appends to a
// column of one type. Converting before appending means a row that does not
// fit is refused alone, before it can misalign the batch's columns.
type converter func(v any) (any, error)

// converterFor builds the converter of a ClickHouse type name.
func converterFor(typ string) (converter, error) {
	if inner, ok := unwrap(typ, "LowCardinality"); ok {
		return converterFor(inner)
	}
	if inner, ok := unwrap(typ, "Nullable"); ok {
		conv, err := converterFor(inner)
		if err != nil {
			return nil, err
		}
		return nullable(conv, inner), nil
	}
	if inner, ok := unwrap(typ, "Array"); ok {
		return arrayOf(inner)
	}
	switch typ {
	case "String":
		return toString, nil
	case "UInt8", "UInt16", "UInt32", "UInt64", "Int8", "Int16", "Int32", "Int64":
		return integer(typ), nil
	case "Float32", "Float64":
		return toFloat(typ), nil
	case "DateTime":
		return toTime, nil
	}
	if strings.HasPrefix(typ, "DateTime(") {
		return toTime, nil
	}
	return nil, fmt.Errorf("column type %s is not supported", typ)
}

func unwrap(typ, wrapper string) (string, bool) {
	if strings.HasPrefix(typ, wrapper+"(") && strings.HasSuffix(typ, ")") {
		return typ[len(wrapper)+1 : len(typ)-1], true
	}
	return "", false
}

// nullable maps nil to NULL and a value to a pointer to it, which is how
// clickhouse-go takes Nullable columns.
func nullable(conv converter, inner string) converter {
	return func(v any) (any, error) {
		if v == nil {
			return nil, nil
		}
		out, err := conv(v)
		if err != nil {
			return nil, fmt.Errorf("Nullable(%s): %w", inner, err)
		}
		ptr := reflect.New(reflect.TypeOf(out))
		ptr.Elem().Set(reflect.ValueOf(out))
		return ptr.Interface(), nil
	}
}

func arrayOf(inner string) (converter, error) {
	switch inner {
	case "String", "LowCardinality(String)":
		return func(v any) (any, error) {
			items, err := list(v)
			if err != nil {
				return nil, err
			}
			out := make([]string, len(items))
			for i, it := range items {
				s, err := toString(it)
				if err != nil {
					return nil, fmt.Errorf("[%d]: %w", i, err)
				}
				out[i] = s.(string)
			}
			return out, nil
		}, nil
	case "UInt8":
		return func(v any) (any, error) {
			items, err := list(v)
			if err != nil {
				return nil, err
			}
			out := make([]uint8, len(items))
			for i, it := range items {
				n, err := integer("UInt8")(it)
				if err != nil {
					return nil, fmt.Errorf("[%d]: %w", i, err)
				}
				out[i] = n.(uint8)
			}
			return out, nil
		}, nil
	}
	return nil, fmt.Errorf("column type Array(%s) is not supported", inner)
}

func list(v any) ([]any, error) {
	switch x := v.(type) {
	case nil:
		return nil, nil // NULL lists are empty arrays: ClickHouse has no Nullable(Array)
	case []any:
		return x, nil
	case []string:
		out := make([]any, len(x))
		for i, s := range x {
			out[i] = s
		}
		return out, nil
	}
	return nil, fmt.Errorf("expected an array, got %T", v)
}

func toString(v any) (any, error) {
	switch x := v.(type) {
	case string:
		return x, nil
	case []byte:
		return string(x), nil
	case map[string]any, []any:
		// A JSON document (a provider's raw response) is stored as text.
		b, err := json.Marshal(x)
		return string(b), err
	}
	return nil, fmt.Errorf("expected a string, got %T", v)
}

func number(v any) (float64, error) {
	switch x := v.(type) {
	case int64:
		return float64(x), nil
	case int:
		return float64(x), nil
	case uint64:
		return float64(x), nil
	case float64:
		return x, nil
	case json.Number:
		return x.Float64()
	case bool:
		if x {
			return 1, nil
		}
		return 0, nil
	case string:
		return strconv.ParseFloat(x, 64)
	}
	return 0, fmt.Errorf("expected a number, got %T", v)
}

// maxExactFloat is the largest integer a float64 holds exactly (2^53).
const maxExactFloat = 1 << 53

// exactInt reads v as a whole number without passing it through a float64:
// a row's version is int64 nanoseconds, and two versions 1 ns apart must
// stay apart. Negative values come back in i, others in u.
func exactInt(v any) (i int64, u uint64, neg bool, err error) {
	switch x := v.(type) {
	case int64:
		return x, uint64(x), x < 0, nil
	case int:
		return int64(x), uint64(x), x < 0, nil
	case int32:
		return int64(x), uint64(x), x < 0, nil
	case uint64:
		return int64(x), x, false, nil
	case uint32:
		return int64(x), uint64(x), false, nil
	case bool:
		if x {
			return 1, 1, false, nil
		}
		return 0, 0, false, nil
	case float64:
		if x != math.Trunc(x) || math.IsInf(x, 0) {
			return 0, 0, false, fmt.Errorf("%v is not a whole number", v)
		}
		if math.Abs(x) > maxExactFloat {
			return 0, 0, false, fmt.Errorf("%v is too large to be exact as a floating-point number: send it as an integer", v)
		}
		return int64(x), uint64(int64(x)), x < 0, nil
	case json.Number:
		return exactInt(string(x))
	case string:
		if n, err := strconv.ParseInt(x, 10, 64); err == nil {
			return n, uint64(n), n < 0, nil
		}
		if n, err := strconv.ParseUint(x, 10, 64); err == nil {
			return int64(n), n, false, nil
		}
		return 0, 0, false, fmt.Errorf("%q is not a whole number", x)
	}
	return 0, 0, false, fmt.Errorf("expected a number, got %T", v)
}

func integer(typ string) converter {
	return func(v any) (any, error) {
		i, u, neg, err := exactInt(v)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", typ, err)
		}
		out := func(ok bool, val any) (any, error) {
			if !ok {
				return nil, fmt.Errorf("%v is out of range for %s", v, typ)
			}
			return val, nil
		}
		switch typ {
		case "UInt8":
			return out(!neg && u <= math.MaxUint8, uint8(u))
		case "UInt16":
			return out(!neg && u <= math.MaxUint16, uint16(u))
		case "UInt32":
			return out(!neg && u <= math.MaxUint32, uint32(u))
		case "UInt64":
			return out(!neg, u)
		case "Int8":
			return out((neg || u <= math.MaxInt64) && i >= math.MinInt8 && i <= math.MaxInt8, int8(i))
		case "Int16":
			return out((neg || u <= math.MaxInt64) && i >= math.MinInt16 && i <= math.MaxInt16, int16(i))
		case "Int32":
			return out((neg || u <= math.MaxInt64) && i >= math.MinInt32 && i <= math.MaxInt32, int32(i))
		}
		return out(neg || u <= math.MaxInt64, i)
	}
}

func toFloat(typ string) converter {
	return func(v any) (any, error) {
		f, err := number(v)
		if err != nil {
			return nil, err
		}
		if typ == "Float32" {
			return float32(f), nil
		}
		return f, nil
	}
}

// toTime reads RFC 3339 strings, Benthos timestamps and unix seconds.
func toTime(v any) (any, error) {
	switch x := v.(type) {
	case time.Time:
		return x.UTC(), nil
	case string:
		t, err := time.Parse(time.RFC3339Nano, x)
		if err != nil {
			return nil, fmt.Errorf("%q is not an RFC 3339 time", x)
		}
		return t.UTC(), nil
	}
	f, err := number(v)
	if err != nil {
		return nil, fmt.Errorf("expected a time, got %T", v)
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)).UTC(), nil
}
