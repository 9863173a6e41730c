package decnet_bus

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redpanda-data/benthos/v4/public/service"

	"github.com/decnet/decnet-stream/internal/bus/bustest"
)

func newTestInput(t *testing.T, socket string, subjects ...string) *input {
	t.Helper()
	quoted := make([]string, len(subjects))
	for i, s := range subjects {
		quoted[i] = fmt.Sprintf("%q", s)
	}
	conf, err := inputSpec().ParseYAML(fmt.Sprintf("socket_path: %s\nsubjects: [ %s ]\n", socket, strings.Join(quoted, ", ")), nil)
	if err != nil {
		t.Fatal(err)
	}
	in, err := newInput(conf, service.MockResources())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = in.Close(context.Background()) })
	return in
}

// connect does what Benthos does with an input: Connect until it works.
func connect(t *testing.T, in *input) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for in.Connect(context.Background()) != nil {
		if time.Now().After(deadline) {
			t.Fatal("never connected")
		}
		time.Sleep(20 * time.Millisecond) // Benthos' backoff between attempts
	}
}

func read(t *testing.T, in *input) service.MessageBatch {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		b, _, err := in.ReadBatch(ctx)
		if errors.Is(err, service.ErrNotConnected) {
			connect(t, in)
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
}

// waitSubscribed waits until the bus has a subscriber for topic: events
// published before the SUB reached it are not delivered (at most once).
func waitSubscribed(t *testing.T, srv *bustest.Server, topic string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); srv.Subscribers(topic) == 0; {
		if time.Now().After(deadline) {
			t.Fatalf("nobody subscribed to %s", topic)
		}
		time.Sleep(5 * time.Millisecond) // polling the bus's subscriptions
	}
}

func TestInputReadsWhatItSubscribedTo(t *testing.T) {
	srv, err := bustest.Start(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	in := newTestInput(t, srv.Path, "attacker.>", "decky.*.traffic")
	connect(t, in)
	waitSubscribed(t, srv, "attacker.observed")
	srv.Publish("system.sniffer.health", "health", json.RawMessage(`{"worker":"sniffer"}`)) // not subscribed
	ev := srv.Publish("attacker.observed", "observed", json.RawMessage(`{"attacker_ip":"203.0.113.45"}`))
	b := read(t, in)
	if len(b) != 1 {
		t.Fatalf("%d events, want the subscribed one", len(b))
	}
	body, _ := b[0].AsBytes()
	if subject, _ := b[0].MetaGet(MetaSubject); subject != "attacker.observed" || string(body) != string(ev.Envelope) {
		t.Fatalf("subject %q, body %s", subject, body)
	}
	if hellos := srv.Hellos(); len(hellos) != 1 || hellos[0] != "decnet-stream" {
		t.Fatalf("hellos %v", hellos)
	}
}

// A bus restart forgets its subscribers: the input reconnects, subscribes
// again, counts the gap, and reads what is published after.
func TestInputSurvivesABusRestart(t *testing.T) {
	srv, err := bustest.Start(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	in := newTestInput(t, srv.Path, "attacker.>")
	connect(t, in)
	waitSubscribed(t, srv, "attacker.observed")
	srv.Publish("attacker.observed", "observed", json.RawMessage(`{"n":1}`))
	read(t, in)

	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	srv.Publish("attacker.observed", "observed", json.RawMessage(`{"n":2}`)) // nobody hears this one
	// ReadBatch sees the connection gone and asks for a reconnect.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, _, err := in.ReadBatch(ctx); !errors.Is(err, service.ErrNotConnected) {
		t.Fatalf("after the restart: %v, want not connected", err)
	}
	connect(t, in)
	waitSubscribed(t, srv, "attacker.observed")
	srv.Publish("attacker.observed", "observed", json.RawMessage(`{"n":3}`))
	b := read(t, in)
	body, _ := b[0].AsBytes()
	if !strings.Contains(string(body), `"n":3`) {
		t.Fatalf("after the restart read %s", body)
	}
}

// A slow pipeline never makes the bus wait: the input's buffer lets its
// oldest events go, counted, and keeps the newest.
func TestInputDropsTheOldestWhenThePipelineIsSlow(t *testing.T) {
	srv, err := bustest.Start(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	conf, err := inputSpec().ParseYAML(fmt.Sprintf("socket_path: %s\nsubjects: [ \"attacker.>\" ]\nbuffer: 10\n", srv.Path), nil)
	if err != nil {
		t.Fatal(err)
	}
	in, err := newInput(conf, service.MockResources())
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close(context.Background())
	connect(t, in)
	waitSubscribed(t, srv, "attacker.observed")
	for i := 0; i < 50; i++ {
		srv.Publish("attacker.observed", "observed", json.RawMessage(fmt.Sprintf(`{"n":%d}`, i)))
	}
	// The buffer fills to its 10; then the last one published is in it.
	deadline := time.Now().Add(10 * time.Second)
	for len(in.events) < 10 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond) // the reader catching up with the socket
	}
	var last string
	for len(last) == 0 || !strings.Contains(last, `"n":49`) {
		b := read(t, in)
		body, _ := b[len(b)-1].AsBytes()
		last = string(body)
	}
}

// fakeBus is a bus that says what a test tells it to, byte for byte.
func fakeBus(t *testing.T, say []byte) (string, chan struct{}) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "bus.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	served := make(chan struct{}, 100)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write(say)
			served <- struct{}{}
			time.Sleep(100 * time.Millisecond)
			c.Close()
		}
	}()
	return path, served
}

// A bus that breaks the protocol gets its connection dropped, and the input
// reconnects; nothing panics and nothing half-read reaches the pipeline.
func TestInputDropsABusThatBreaksTheProtocol(t *testing.T) {
	frame := func(header string, body []byte) []byte {
		b := append([]byte(header+"\n"), binary.BigEndian.AppendUint32(nil, uint32(len(body)))...)
		return append(b, body...)
	}
	for name, say := range map[string][]byte{
		"oversized header":   frame("EVT "+strings.Repeat("x", 5000), []byte(`{}`)),
		"oversized body":     binary.BigEndian.AppendUint32([]byte("EVT a.b\n"), 2<<20),
		"unknown verb":       frame("NOPE a.b", []byte(`{}`)),
		"non-object body":    frame("EVT attacker.observed", []byte(`[1]`)),
		"a PUB from the bus": frame("PUB attacker.observed", []byte(`{"payload":{}}`)),
	} {
		t.Run(name, func(t *testing.T) {
			path, served := fakeBus(t, say)
			in := newTestInput(t, path, "attacker.>")
			connect(t, in)
			<-served
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if b, _, err := in.ReadBatch(ctx); !errors.Is(err, service.ErrNotConnected) {
				t.Fatalf("got %d messages, %v; want the connection dropped", len(b), err)
			}
			connect(t, in) // and it comes back
			<-served
		})
	}
}

func newTestOutput(t *testing.T, socket, extra string) *output {
	t.Helper()
	conf, err := outputSpec().ParseYAML(fmt.Sprintf("socket_path: %s\n%s", socket, extra), nil)
	if err != nil {
		t.Fatal(err)
	}
	o, err := newOutput(conf, service.MockResources())
	if err != nil {
		t.Fatal(err)
	}
	if err := o.Connect(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = o.Close(context.Background()) })
	return o
}

// The output publishes the payload and type of an envelope (the bus makes
// its own id and ts), and refuses, per message, a topic that is not a plain
// subject: DECNET's bus would deliver "attacker.*" as a literal topic.
func TestOutputPublishesAndRefusesBadSubjects(t *testing.T) {
	srv, err := bustest.Start(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	watch := srv.Watch()
	o := newTestOutput(t, srv.Path, "")
	msg := func(subject, body string) *service.Message {
		m := service.NewMessage([]byte(body))
		m.MetaSetMut(MetaSubject, subject)
		return m
	}
	batch := service.MessageBatch{
		msg("attacker.intel.enriched", `{"v":1,"id":"x","topic":"attacker.intel.enriched","type":"intel.enriched","ts":1,"payload":{"attacker_ip":"8.8.8.8"}}`),
		msg("attacker.*", `{"v":1,"type":"t","payload":{}}`),
		msg("attacker..x", `{"payload":{}}`),
		msg("system.enrich.health", `{"worker":"enrich","ts":1}`),
	}
	err = o.WriteBatch(context.Background(), batch)
	var bErr *service.BatchError
	if !errors.As(err, &bErr) || bErr.IndexedErrors() != 2 {
		t.Fatalf("got %v, want the two bad subjects refused", err)
	}
	got := map[string]string{}
	for range 2 {
		select {
		case ev := <-watch:
			got[ev.Topic] = string(ev.Envelope)
		case <-time.After(10 * time.Second):
			t.Fatalf("published %v", got)
		}
	}
	var enriched, health struct {
		ID      string         `json:"id"`
		Type    string         `json:"type"`
		Payload map[string]any `json:"payload"`
	}
	_ = json.Unmarshal([]byte(got["attacker.intel.enriched"]), &enriched)
	_ = json.Unmarshal([]byte(got["system.enrich.health"]), &health)
	if enriched.Type != "intel.enriched" || enriched.Payload["attacker_ip"] != "8.8.8.8" || enriched.ID == "x" {
		t.Errorf("enriched event on the bus: %s", got["attacker.intel.enriched"])
	}
	if health.Type != "health" || health.Payload["worker"] != "enrich" {
		t.Errorf("health event on the bus: %s", got["system.enrich.health"])
	}
}

// A mirror that must not hold a pipeline up drops while the bus is away.
func TestOutputDropsWhileTheBusIsAwayWhenAsked(t *testing.T) {
	o := newTestOutput(t, filepath.Join(t.TempDir(), "no-bus.sock"), "when_disconnected: drop\n")
	if err := o.WriteBatch(context.Background(), service.MessageBatch{service.NewMessage([]byte(`{"a":1}`))}); err != nil {
		t.Fatalf("a dropping output with no bus: %v", err)
	}
}
