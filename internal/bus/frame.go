// Package bus speaks DECNET's bus protocol: a Unix socket carrying frames
// of an ASCII header line (verb and argument), a big-endian uint32 body
// length and a body that is a JSON object or empty. It is plain Go; the
// decnet_bus input and output (plugins/decnet_bus) are its Benthos face,
// and bustest serves the same protocol for tests.
//
// The limits and verbs are DECNET's: a header of at most 4096 bytes (\r
// tolerated, no trailing space), a body of at most 1 MiB, HELLO, SUB, UNSUB,
// PUB, EVT and BYE. A peer that breaks them is dropped: the caller closes
// the connection on any error ReadFrame returns.
package bus

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Limits of a frame, as DECNET's bus enforces them.
const (
	MaxHeaderBytes = 4096
	MaxBodyBytes   = 1 << 20
)

// Verbs.
const (
	Hello = "HELLO" // client → server: client name
	Sub   = "SUB"   // client → server: pattern
	Unsub = "UNSUB" // client → server: pattern
	Pub   = "PUB"   // client → server: topic; body {"payload": {...}, "type": "..."}
	Evt   = "EVT"   // server → client: topic; body the full v1 envelope
	Bye   = "BYE"   // either: graceful close
)

var known = map[string]bool{Hello: true, Sub: true, Unsub: true, Pub: true, Evt: true, Bye: true}

// Frame is one message on the bus.
type Frame struct {
	Verb, Arg string
	Body      []byte // a JSON object, or empty
}

// ErrProtocol is wrapped by every violation of the protocol: the
// connection must be dropped.
var ErrProtocol = errors.New("bus protocol violation")

func violation(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrProtocol, fmt.Sprintf(format, args...))
}

// ReadFrame reads one frame. It refuses an oversized header or body, an
// unknown verb, a missing argument and a body that is not a JSON object.
func ReadFrame(r *bufio.Reader) (Frame, error) {
	var f Frame
	line, err := readLine(r)
	if err != nil {
		return f, err
	}
	verb, arg, _ := strings.Cut(line, " ")
	if !known[verb] {
		return f, violation("unknown verb %.40q", verb)
	}
	if strings.HasSuffix(line, " ") {
		return f, violation("trailing space in header %.80q", line)
	}
	switch verb {
	case Sub, Unsub, Pub, Evt:
		if arg == "" {
			return f, violation("%s without its argument", verb)
		}
	}
	var size [4]byte
	if _, err := io.ReadFull(r, size[:]); err != nil {
		return f, fmt.Errorf("reading the body length: %w", err)
	}
	n := binary.BigEndian.Uint32(size[:])
	if n > MaxBodyBytes {
		return f, violation("body of %d bytes, over %d", n, MaxBodyBytes)
	}
	f.Verb, f.Arg = verb, arg
	if n == 0 {
		return f, nil
	}
	f.Body = make([]byte, n)
	if _, err := io.ReadFull(r, f.Body); err != nil {
		return f, fmt.Errorf("reading a body of %d bytes: %w", n, err)
	}
	if !isObject(f.Body) {
		return f, violation("%s body is not a JSON object", verb)
	}
	return f, nil
}

// readLine reads the header line, at most MaxHeaderBytes, without its \n
// (and a \r before it).
func readLine(r *bufio.Reader) (string, error) {
	var b []byte
	for {
		chunk, err := r.ReadSlice('\n')
		b = append(b, chunk...)
		if len(b) > MaxHeaderBytes+1 {
			return "", violation("header line over %d bytes", MaxHeaderBytes)
		}
		if err == nil {
			break
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			if len(b) > 0 && errors.Is(err, io.EOF) {
				return "", io.ErrUnexpectedEOF
			}
			return "", err
		}
	}
	line := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	if len(line) > MaxHeaderBytes {
		return "", violation("header line over %d bytes", MaxHeaderBytes)
	}
	return line, nil
}

// isObject reports whether b is a JSON object (its first and last non-space
// bytes are braces and it parses).
func isObject(b []byte) bool {
	s := strings.TrimSpace(string(b))
	return len(s) >= 2 && s[0] == '{' && s[len(s)-1] == '}' && json.Valid(b)
}

// WriteFrame writes one frame. It refuses what ReadFrame would refuse, so
// this side never sends the other a reason to drop the connection.
func WriteFrame(w io.Writer, f Frame) error {
	if !known[f.Verb] || strings.ContainsAny(f.Arg, "\r\n") || strings.HasSuffix(f.Arg, " ") {
		return violation("not a frame: %q %.80q", f.Verb, f.Arg)
	}
	header := f.Verb
	if f.Arg != "" {
		header += " " + f.Arg
	}
	if len(header) > MaxHeaderBytes {
		return violation("header line over %d bytes", MaxHeaderBytes)
	}
	if len(f.Body) > MaxBodyBytes {
		return violation("body of %d bytes, over %d", len(f.Body), MaxBodyBytes)
	}
	if len(f.Body) > 0 && !isObject(f.Body) {
		return violation("%s body is not a JSON object", f.Verb)
	}
	buf := make([]byte, 0, len(header)+5+len(f.Body))
	buf = append(buf, header...)
	buf = append(buf, '\n')
	buf = binary.BigEndian.AppendUint32(buf, uint32(len(f.Body)))
	buf = append(buf, f.Body...)
	_, err := w.Write(buf)
	return err
}
