// Package bustest serves DECNET's bus protocol on a Unix socket for tests,
// written from the wire facts (framing, verbs, limits, delivery), not from
// DECNET's code: clients subscribe with wildcard patterns, publish with
// PUB (the server builds the envelope: a new id and ts, the topic from the
// header, unvalidated), and receive EVT frames for what others publish.
// Each subscriber has a bounded queue that drops its oldest frame when the
// subscriber is slow; a publisher never stalls and never hears itself.
package bustest

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/decnet/decnet-stream/internal/bus"
	"github.com/decnet/decnet-stream/internal/topics"
)

// QueueFrames is each subscriber's queue, as DECNET's bus keeps it.
const QueueFrames = 1024

// Event is one envelope the bus delivered or was given.
type Event struct {
	Topic    string
	Envelope []byte
}

// Server is a running bus.
type Server struct {
	Path string

	mu        sync.Mutex
	ln        net.Listener
	clients   map[*client]bool
	published []Event // what clients published, as envelopes
	watchers  []chan Event
	dropped   int
	hellos    []string
	closed    bool
}

type client struct {
	conn     net.Conn
	name     string
	mu       sync.Mutex
	patterns []topics.Pattern
	queue    chan bus.Frame
	done     chan struct{}
}

// Start serves a bus on a socket in dir.
func Start(dir string) (*Server, error) {
	s := &Server{Path: filepath.Join(dir, "bus.sock"), clients: map[*client]bool{}}
	return s, s.listen()
}

func (s *Server) listen() error {
	_ = os.Remove(s.Path)
	ln, err := net.Listen("unix", s.Path)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.ln, s.closed = ln, false
	s.mu.Unlock()
	go s.accept(ln)
	return nil
}

func (s *Server) accept(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		cl := &client{conn: c, queue: make(chan bus.Frame, QueueFrames), done: make(chan struct{})}
		s.mu.Lock()
		s.clients[cl] = true
		s.mu.Unlock()
		go s.writeLoop(cl)
		go s.readLoop(cl)
	}
}

func (s *Server) drop(cl *client) {
	s.mu.Lock()
	if s.clients[cl] {
		delete(s.clients, cl)
		close(cl.done)
	}
	s.mu.Unlock()
	_ = cl.conn.Close()
}

// readLoop handles one client's frames; any violation drops it, as
// DECNET's bus does.
func (s *Server) readLoop(cl *client) {
	defer s.drop(cl)
	r := bufio.NewReader(cl.conn)
	for {
		f, err := bus.ReadFrame(r)
		if err != nil {
			return
		}
		switch f.Verb {
		case bus.Hello:
			cl.name = f.Arg
			s.mu.Lock()
			s.hellos = append(s.hellos, f.Arg)
			s.mu.Unlock()
		case bus.Sub:
			p, err := topics.ParsePattern(f.Arg)
			if err != nil {
				return
			}
			cl.mu.Lock()
			cl.patterns = append(cl.patterns, p)
			cl.mu.Unlock()
		case bus.Unsub:
			cl.mu.Lock()
			kept := cl.patterns[:0]
			for _, p := range cl.patterns {
				if p.String() != f.Arg {
					kept = append(kept, p)
				}
			}
			cl.patterns = kept
			cl.mu.Unlock()
		case bus.Pub:
			var body struct {
				Payload json.RawMessage `json:"payload"`
				Type    string          `json:"type"`
			}
			if len(f.Body) > 0 {
				_ = json.Unmarshal(f.Body, &body)
			}
			s.publish(cl, f.Arg, body.Type, body.Payload)
		case bus.Evt:
			return // a client sending EVT breaks the protocol
		case bus.Bye:
			return
		}
	}
}

func (s *Server) writeLoop(cl *client) {
	for {
		select {
		case f := <-cl.queue:
			_ = cl.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if err := bus.WriteFrame(cl.conn, f); err != nil {
				s.drop(cl)
				return
			}
		case <-cl.done:
			return
		}
	}
}

// Publish is a DECNET worker publishing on the bus: every subscriber whose
// pattern matches gets the envelope.
func (s *Server) Publish(topic, typ string, payload json.RawMessage) Event {
	return s.publish(nil, topic, typ, payload)
}

func (s *Server) publish(from *client, topic, typ string, payload json.RawMessage) Event {
	if len(payload) == 0 {
		payload = json.RawMessage("{}")
	}
	var id [16]byte
	_, _ = rand.Read(id[:])
	env, _ := json.Marshal(map[string]any{"v": 1, "id": hex.EncodeToString(id[:]), "topic": topic, "type": typ,
		"ts": float64(time.Now().UnixNano()) / 1e9, "payload": payload})
	ev := Event{Topic: topic, Envelope: env}
	frame := bus.Frame{Verb: bus.Evt, Arg: topic, Body: env}
	s.mu.Lock()
	if from != nil {
		s.published = append(s.published, ev)
		for _, w := range s.watchers {
			select {
			case w <- ev:
			default:
			}
		}
	}
	var targets []*client
	for cl := range s.clients {
		if cl != from {
			targets = append(targets, cl)
		}
	}
	s.mu.Unlock()
	for _, cl := range targets {
		cl.mu.Lock()
		match := false
		for _, p := range cl.patterns {
			match = match || p.Match(topic)
		}
		cl.mu.Unlock()
		if !match {
			continue
		}
		for {
			select {
			case cl.queue <- frame:
			default:
				select { // full: the oldest frame goes
				case <-cl.queue:
					s.mu.Lock()
					s.dropped++
					s.mu.Unlock()
				default:
				}
				continue
			}
			break
		}
	}
	return ev
}

// Watch returns a channel of what clients publish from now on.
func (s *Server) Watch() <-chan Event {
	ch := make(chan Event, 100_000)
	s.mu.Lock()
	s.watchers = append(s.watchers, ch)
	s.mu.Unlock()
	return ch
}

// Published is everything clients have published so far.
func (s *Server) Published() []Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Event(nil), s.published...)
}

// Hellos are the names clients greeted the bus with.
func (s *Server) Hellos() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.hellos...)
}

// Subscribers is how many clients are connected with a pattern matching
// topic.
func (s *Server) Subscribers(topic string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for cl := range s.clients {
		cl.mu.Lock()
		for _, p := range cl.patterns {
			if p.Match(topic) {
				n++
				break
			}
		}
		cl.mu.Unlock()
	}
	return n
}

// Dropped is how many frames slow subscribers lost.
func (s *Server) Dropped() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dropped
}

// Restart drops every client and serves again on the same path, with no
// memory of them (a restarted bus).
func (s *Server) Restart() error {
	s.Close()
	return s.listen()
}

// Close stops serving.
func (s *Server) Close() {
	s.mu.Lock()
	ln := s.ln
	clients := make([]*client, 0, len(s.clients))
	for cl := range s.clients {
		clients = append(clients, cl)
	}
	s.closed = true
	s.mu.Unlock()
	if ln != nil {
		_ = ln.Close()
	}
	for _, cl := range clients {
		s.drop(cl)
	}
}
