package bus

import (
	"bufio"
	"context"
	"net"
	"sync"
	"time"
)

// Conn is a client connection to a DECNET bus. Reads and writes may run in
// two goroutines; writes are serialised.
type Conn struct {
	c  net.Conn
	r  *bufio.Reader
	mu sync.Mutex
}

// Dial connects to the bus at socketPath and greets it as name.
func Dial(ctx context.Context, socketPath, name string) (*Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", socketPath)
	if err != nil {
		return nil, err
	}
	conn := &Conn{c: c, r: bufio.NewReaderSize(c, 64<<10)}
	if err := conn.Write(Frame{Verb: Hello, Arg: name}); err != nil {
		_ = c.Close()
		return nil, err
	}
	return conn, nil
}

// Write sends one frame.
func (c *Conn) Write(f Frame) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	_ = c.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	return WriteFrame(c.c, f)
}

// Read reads the next frame.
func (c *Conn) Read() (Frame, error) { return ReadFrame(c.r) }

// Close says goodbye and closes the connection.
func (c *Conn) Close() error {
	_ = c.Write(Frame{Verb: Bye})
	return c.c.Close()
}
