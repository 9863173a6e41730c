package clickhouse

import (
	"reflect"
	"time"
)

// newScanTarget makes a pointer clickhouse-go can scan a column into.
func newScanTarget(t reflect.Type) any {
	return reflect.New(t).Interface()
}

// derefScan turns a scanned value into what a JSON message holds.
func derefScan(p any) any {
	v := reflect.ValueOf(p)
	for v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return nil
		}
		v = v.Elem()
	}
	switch x := v.Interface().(type) {
	case time.Time:
		return x.UTC().Format(time.RFC3339)
	}
	return v.Interface()
}
