package clickhouse

import (
	"errors"

	ch "github.com/ClickHouse/clickhouse-go/v2"
)

// How a failed INSERT is handled depends on whose fault it is. Only the
// rows' own data can be refused for good: everything else the server says
// (busy, out of memory, too many parts, read-only, a timeout, a quota) is
// retried with backoff like an outage, because a batch must never go to the
// dead letters for the server's state.
type failure int

const (
	failTransient  failure = iota // retry the same rows later
	failConnection                // reconnect (and re-create the table) first
	failRows                      // the data: find the rows and refuse them alone
)

// rowFault are the exception codes that blame the data being inserted
// (ClickHouse's ErrorCodes.cpp): bad values, parse failures, type
// mismatches. Any code not listed is retried.
var rowFault = map[int32]string{
	6:   "CANNOT_PARSE_TEXT",
	26:  "CANNOT_PARSE_QUOTED_STRING",
	27:  "CANNOT_PARSE_INPUT_ASSERTION_FAILED",
	38:  "CANNOT_PARSE_DATE",
	41:  "CANNOT_PARSE_DATETIME",
	53:  "TYPE_MISMATCH",
	69:  "ARGUMENT_OUT_OF_BOUND",
	70:  "CANNOT_CONVERT_TYPE",
	72:  "CANNOT_PARSE_NUMBER",
	117: "INCORRECT_DATA",
	131: "TOO_LARGE_STRING_SIZE",
	190: "SIZES_OF_ARRAYS_DONT_MATCH",
	321: "VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE",
	349: "CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN",
}

// reconnectFault are codes that a new connection (which creates the table
// with auto_create) may fix.
var reconnectFault = map[int32]string{
	60:  "UNKNOWN_TABLE",
	81:  "UNKNOWN_DATABASE",
	516: "AUTHENTICATION_FAILED",
}

// classify says whose fault err is, and the exception's code (0 when the
// server did not answer at all: the connection is the problem).
func classify(err error) (failure, int32) {
	var exc *ch.Exception
	if !errors.As(err, &exc) {
		return failConnection, 0
	}
	if _, ok := rowFault[exc.Code]; ok {
		return failRows, exc.Code
	}
	if _, ok := reconnectFault[exc.Code]; ok {
		return failConnection, exc.Code
	}
	return failTransient, exc.Code
}
