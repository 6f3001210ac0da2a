// Package l4 moves bytes between a client and a server connection.
package l4

import (
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"sluice/internal/recovery"
)

// BufSize is the size of each direction's copy buffer.
const BufSize = 16 << 10

var bufPool = sync.Pool{New: func() any { b := make([]byte, BufSize); return &b }}

// ErrIdle ends a relay on which nothing moved for the idle timeout.
var ErrIdle = errors.New("idle timeout")

// RelayOptions configure a Relay.
type RelayOptions struct {
	ClientIdle time.Duration // timeout_client: inactivity allowed on the client side
	ServerIdle time.Duration // timeout_server: inactivity allowed on the server side
	// Counters, each may be nil: bytes from client to server, and back.
	In, Out []*atomic.Uint64
	// Panics counts relays ended because relaying them panicked (a bug);
	// Log gets the line saying where. Either may be nil.
	Panics *atomic.Uint64
	Log    *slog.Logger
}

// ErrPanicked ends a relay whose copying panicked: that connection is
// closed, the process goes on.
var ErrPanicked = errors.New("relay panicked")

// LoopPanics counts the restarts of shared loops (the epoll relay's, a UDP
// listener's reader) after a panic; the connection or datagram being
// served when it happened is counted in its frontend's panics as well.
var LoopPanics atomic.Uint64

// testCopyHook, testLoopHook and testDatagramHook, set by tests only
// (export_test.go), see the bytes each read brings in the goroutine relay,
// the epoll relay and a UDP listener's reader: a test makes them panic.
// Atomic: the epoll loops outlive every test.
var testCopyHook, testLoopHook, testDatagramHook atomic.Pointer[func(b []byte)]

// Relay copies both ways between client and server until both directions
// have ended, then closes both connections. A side that shuts its write half
// (EOF) has it passed on with CloseWrite, so a client that half-closes still
// gets the whole reply. The connection is idle only when no byte moved in
// either direction for the timeout of the side being waited on. A reset is a
// normal end. It returns the first error other than EOF, reset or close.
func Relay(client, server net.Conn, o RelayOptions) error {
	now := time.Now()
	act := &activity{start: now}
	setIdle(client, now, o.ClientIdle)
	setIdle(server, now, o.ServerIdle)
	up := &copier{name: "client->server", src: client, dst: server, srcIdle: o.ClientIdle, dstIdle: o.ServerIdle, act: act, counters: o.In, dstTLS: isTLS(server)}
	down := &copier{name: "server->client", src: server, dst: client, srcIdle: o.ServerIdle, dstIdle: o.ClientIdle, act: act, counters: o.Out, dstTLS: isTLS(client)}

	errc := make(chan error, 1)
	go func() {
		err := up.safeRun(o, client, server)
		if err != nil {
			abort(client, server)
		}
		errc <- err
	}()
	err := down.safeRun(o, client, server)
	if err != nil {
		abort(client, server)
	}
	err2 := <-errc
	if err2 != nil && (err == nil || errors.Is(err2, ErrPanicked)) {
		err = err2 // a panic, not the close it caused, is what ended it
	}
	client.Close()
	server.Close()
	if ignorable(err) {
		return nil
	}
	return err
}

// setIdle sets c's first deadlines. A TLS connection gets only its read
// deadline: a write that times out leaves crypto/tls's state broken for
// good, so the deadline that fires while the other direction is still
// active (and is moved, see rearm) must not be a write's; copier.write
// sets a TLS connection's write deadline before each write instead.
func setIdle(c net.Conn, now time.Time, idle time.Duration) {
	switch {
	case idle <= 0:
	case isTLS(c):
		c.SetReadDeadline(now.Add(idle))
	default:
		c.SetDeadline(now.Add(idle))
	}
}

func isTLS(c net.Conn) bool {
	_, ok := c.(*tls.Conn)
	return ok
}

// activity is the last time any byte moved, shared by both directions.
type activity struct {
	start time.Time
	last  atomic.Int64 // nanoseconds since start
}

// touch records activity now and returns the time since start.
func (a *activity) touch() int64 {
	t := int64(time.Since(a.start))
	a.last.Store(t)
	return t
}

// idleFor reports how long nothing has moved.
func (a *activity) idleFor() time.Duration {
	return time.Since(a.start) - time.Duration(a.last.Load())
}

// copier copies one direction; the name makes goroutine dumps readable.
type copier struct {
	name             string
	src, dst         net.Conn
	srcIdle, dstIdle time.Duration
	act              *activity
	counters         []*atomic.Uint64
	dstTLS           bool // dst is TLS: its write deadline is set before each write (setIdle)

	// Bytes not yet added to counters. Shared counters (a frontend's) are
	// written by every connection on every core, so each copier adds its
	// bytes in batches: at 64 KiB, after a second, and at the end.
	pending   uint64
	flushedAt int64 // activity time of the last flush
}

const (
	flushBytes = 64 << 10
	flushEvery = int64(time.Second)
)

func (c *copier) flush() {
	if c.pending == 0 {
		return
	}
	for _, ctr := range c.counters {
		if ctr != nil {
			ctr.Add(c.pending)
		}
	}
	c.pending = 0
}

// safeRun is run, but a panic in it costs this connection only: both sides
// closed (the other direction ends at once), counted and logged. One defer
// per direction and connection, none per read.
func (c *copier) safeRun(o RelayOptions, client, server net.Conn) (err error) {
	defer func() {
		if v := recover(); v != nil {
			abort(client, server)
			if o.Panics != nil {
				o.Panics.Add(1)
			}
			recovery.Log(o.Log, v, "client", client.RemoteAddr().String(), "proto", "tcp", "direction", c.name)
			err = ErrPanicked
		}
	}()
	return c.run()
}

func (c *copier) run() error {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	defer c.flush()
	buf := *bp
	for {
		n, err := c.src.Read(buf)
		if n > 0 {
			if h := testCopyHook.Load(); h != nil {
				(*h)(buf[:n])
			}
			now := c.act.touch()
			c.pending += uint64(n)
			if c.pending >= flushBytes || now-c.flushedAt >= flushEvery {
				c.flush()
				c.flushedAt = now
			}
			if werr := c.write(buf[:n]); werr != nil {
				return werr
			}
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				if c.rearm(c.src.SetReadDeadline, c.srcIdle) {
					continue
				}
				return ErrIdle
			}
			if err == io.EOF {
				closeWrite(c.dst)
				return nil
			}
			return err
		}
	}
}

func (c *copier) write(b []byte) error {
	if c.dstTLS && c.dstIdle > 0 {
		c.dst.SetWriteDeadline(time.Now().Add(c.dstIdle))
	}
	for len(b) > 0 {
		n, err := c.dst.Write(b)
		b = b[n:]
		if n > 0 {
			c.act.touch()
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) && !c.dstTLS && c.rearm(c.dst.SetWriteDeadline, c.dstIdle) {
				continue
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return ErrIdle
			}
			return err
		}
	}
	return nil
}

// rearm moves a deadline that fired while the other direction (or this one)
// was still active. Deadlines are set once and only moved when they fire, so
// the steady state costs no timer updates per read.
func (c *copier) rearm(set func(time.Time) error, idle time.Duration) bool {
	if idle <= 0 {
		set(time.Time{})
		return true
	}
	left := idle - c.act.idleFor()
	if left <= 0 {
		return false
	}
	set(time.Now().Add(left))
	return true
}

// abort ends both directions at once: a failed direction must not leave the
// other blocked until its own timeout.
func abort(client, server net.Conn) {
	client.Close()
	server.Close()
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
		return
	}
	c.Close()
}

// ignorable errors are normal ways for a connection to end.
func ignorable(err error) bool {
	return err == nil || errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, io.EOF)
}
