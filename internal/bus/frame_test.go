package bus

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
)

func raw(header string, body []byte) []byte {
	b := []byte(header + "\n")
	b = binary.BigEndian.AppendUint32(b, uint32(len(body)))
	return append(b, body...)
}

func TestFramesRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	for _, f := range []Frame{{Verb: Hello, Arg: "decnet-stream"}, {Verb: Sub, Arg: "attacker.>"},
		{Verb: Pub, Arg: "attacker.intel.enriched", Body: []byte(`{"payload":{"attacker_ip":"8.8.8.8"},"type":"intel.enriched"}`)}, {Verb: Bye}} {
		if err := WriteFrame(&buf, f); err != nil {
			t.Fatal(err)
		}
		got, err := ReadFrame(bufio.NewReader(bytes.NewReader(buf.Bytes())))
		if err != nil || got.Verb != f.Verb || got.Arg != f.Arg || !bytes.Equal(got.Body, f.Body) {
			t.Fatalf("%+v came back as %+v (%v)", f, got, err)
		}
		buf.Reset()
	}
	// A \r before the \n is tolerated.
	if f, err := ReadFrame(bufio.NewReader(bytes.NewReader(raw("EVT a.b\r", []byte(`{}`))))); err != nil || f.Arg != "a.b" {
		t.Fatalf("%+v %v", f, err)
	}
}

// What DECNET's bus drops a peer for is refused, never half-read.
func TestHostileFramesAreRefused(t *testing.T) {
	for name, b := range map[string][]byte{
		"oversized header":        raw("EVT "+strings.Repeat("a", MaxHeaderBytes), []byte(`{}`)),
		"header without end":      []byte(strings.Repeat("a", 3*MaxHeaderBytes)),
		"oversized body":          binary.BigEndian.AppendUint32([]byte("EVT a.b\n"), MaxBodyBytes+1),
		"unknown verb":            raw("HACK a.b", nil),
		"lowercase verb":          raw("evt a.b", []byte(`{}`)),
		"a body that is an array": raw("EVT a.b", []byte(`[1,2]`)),
		"a body that is no JSON":  raw("EVT a.b", []byte(`{"a":`)),
		"a string body":           raw("PUB a.b", []byte(`"payload"`)),
		"EVT without its topic":   raw("EVT", []byte(`{}`)),
		"a trailing space":        raw("SUB a.> ", nil),
	} {
		_, err := ReadFrame(bufio.NewReader(bytes.NewReader(b)))
		if !errors.Is(err, ErrProtocol) {
			t.Errorf("%s: %v, want a protocol violation", name, err)
		}
	}
	if err := WriteFrame(&bytes.Buffer{}, Frame{Verb: Pub, Arg: "a.b", Body: []byte(`[1]`)}); err == nil {
		t.Error("wrote a body that is not an object")
	}
	if err := WriteFrame(&bytes.Buffer{}, Frame{Verb: Pub, Arg: "a.b\nEVT x"}); err == nil {
		t.Error("wrote a header with a newline in it")
	}
}
