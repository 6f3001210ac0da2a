//go:build linux

// Package fdconn is a net.Conn over an accepted socket's bare descriptor
// that enters Go's netpoller only when it must wait. A client that sends
// its request with the connect and reads its answer before closing (a new
// connection per request) costs accept4, read, write and close: no
// epoll_ctl to add and remove it, no getsockname, no TCP_NODELAY (the
// listener's is inherited), as HAProxy's speculative reads do. The first
// read or write that would block (EAGAIN) moves the descriptor into an
// os.File, whose poller waits, and every later call goes there.
package fdconn

import (
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"sluice/internal/rawio"
)

// Conn is an accepted TCP connection. Safe for concurrent use: calls that
// touch the bare descriptor hold mu for one non-blocking system call, so a
// Close from another goroutine (a drain's cut) never frees a descriptor
// number under a read.
type Conn struct {
	mu       sync.Mutex
	fd       int      // -1 once closed
	f        *os.File // once the connection waited: it owns fd
	rc       syscall.RawConn
	rdl, wdl time.Time // deadlines, for the bare descriptor's calls
	// The polled calls' state and functions, bound once in promote: a
	// closure per call would be an allocation per read and write. One
	// reader and one writer at a time, as a connection's users are.
	rb, wb     []byte
	rn, wn     int
	rerr, werr error
	rfn, wfn   func(fd uintptr) bool
	peer       netip.AddrPort
	local      netip.AddrPort
}

// New makes a Conn of fd, a connected non-blocking TCP socket it then
// owns; peer and local are its addresses.
func New(fd int, peer, local netip.AddrPort) *Conn {
	return &Conn{fd: fd, peer: peer, local: local}
}

// AddrPorts returns the connection's peer and local addresses, without
// the allocations of RemoteAddr and LocalAddr.
func (c *Conn) AddrPorts() (peer, local netip.AddrPort) { return c.peer, c.local }

// promote moves the descriptor into the runtime's poller. Under mu, on a
// bare open descriptor.
func (c *Conn) promote() error {
	f := os.NewFile(uintptr(c.fd), "tcp")
	if f == nil {
		return os.ErrInvalid
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	if !c.rdl.IsZero() {
		f.SetReadDeadline(c.rdl)
	}
	if !c.wdl.IsZero() {
		f.SetWriteDeadline(c.wdl)
	}
	c.f, c.rc = f, rc
	c.rfn, c.wfn = c.readFd, c.writeFd
	return nil
}

func passed(dl time.Time) bool { return !dl.IsZero() && !dl.After(time.Now()) }

// bare reports whether calls go to the bare descriptor (with mu held on
// return), or returns the error that ends them. With false and no error,
// c.f serves (mu released).
func (c *Conn) bare(dl *time.Time) (bool, error) {
	c.mu.Lock()
	if c.f != nil {
		c.mu.Unlock()
		return false, nil
	}
	if c.fd < 0 {
		c.mu.Unlock()
		return false, net.ErrClosed
	}
	if passed(*dl) {
		c.mu.Unlock()
		return false, os.ErrDeadlineExceeded
	}
	return true, nil
}

func (c *Conn) Read(b []byte) (int, error) {
	bare, err := c.bare(&c.rdl)
	if err != nil {
		return 0, err
	}
	if bare {
		n, err := ignoringEINTR(func() (int, error) { return rawio.Read(c.fd, b) })
		if err != unix.EAGAIN {
			c.mu.Unlock()
			switch {
			case err != nil:
				return 0, os.NewSyscallError("read", err)
			case n == 0 && len(b) > 0:
				return 0, io.EOF
			}
			return n, nil
		}
		err = c.promote()
		c.mu.Unlock()
		if err != nil {
			return 0, err
		}
	}
	return c.readPolled(b)
}

// readPolled reads through the poller once the connection waited: the
// poller waits, the read itself is raw (rawio), as on the bare descriptor.
func (c *Conn) readPolled(b []byte) (int, error) {
	c.rb, c.rn, c.rerr = b, 0, nil
	err := c.rc.Read(c.rfn)
	n, serr := c.rn, c.rerr
	c.rb = nil
	switch {
	case err != nil:
		return 0, c.pollErr("read", err)
	case serr != nil:
		return 0, os.NewSyscallError("read", serr)
	case n == 0 && len(b) > 0:
		return 0, io.EOF
	}
	return n, nil
}

func (c *Conn) readFd(fd uintptr) bool {
	c.rn, c.rerr = ignoringEINTR(func() (int, error) { return rawio.Read(int(fd), c.rb) })
	return c.rerr != unix.EAGAIN
}

// writePolled is readPolled's write: all of b, or an error.
func (c *Conn) writePolled(b []byte) (int, error) {
	c.wb, c.wn, c.werr = b, 0, nil
	err := c.rc.Write(c.wfn)
	done, serr := c.wn, c.werr
	c.wb = nil
	switch {
	case err != nil:
		return done, c.pollErr("write", err)
	case serr != nil:
		return done, os.NewSyscallError("write", serr)
	}
	return done, nil
}

func (c *Conn) writeFd(fd uintptr) bool {
	for c.wn < len(c.wb) {
		n, e := ignoringEINTR(func() (int, error) { return rawio.Write(int(fd), c.wb[c.wn:]) })
		if e == unix.EAGAIN {
			return false // the poller waits for room
		}
		if e != nil {
			c.werr = e
			return true
		}
		c.wn += n
	}
	return true
}

// pollErr is the error of a wait in the poller, as a net.Conn gives it: a
// passed deadline (os.ErrDeadlineExceeded, a net.Error that times out), or
// net.ErrClosed once Close ran.
func (c *Conn) pollErr(op string, err error) error {
	c.mu.Lock()
	closed := c.fd < 0
	c.mu.Unlock()
	if closed {
		return &net.OpError{Op: op, Net: "tcp", Err: net.ErrClosed}
	}
	return &net.OpError{Op: op, Net: "tcp", Err: err}
}

func (c *Conn) Write(b []byte) (int, error) {
	bare, err := c.bare(&c.wdl)
	if err != nil {
		return 0, err
	}
	done := 0
	if bare {
		for done < len(b) {
			n, err := ignoringEINTR(func() (int, error) { return rawio.Write(c.fd, b[done:]) })
			if err == unix.EAGAIN {
				break
			}
			if err != nil {
				c.mu.Unlock()
				return done, os.NewSyscallError("write", err)
			}
			done += n
		}
		if done == len(b) {
			c.mu.Unlock()
			return done, nil
		}
		err = c.promote()
		c.mu.Unlock()
		if err != nil {
			return done, err
		}
	}
	n, err := c.writePolled(b[done:])
	return done + n, err
}

func ignoringEINTR(call func() (int, error)) (int, error) {
	for {
		n, err := call()
		if err != unix.EINTR {
			return n, err
		}
	}
}

// Close closes the connection; a second Close returns net.ErrClosed.
func (c *Conn) Close() error {
	c.mu.Lock()
	f, fd := c.f, c.fd
	c.fd = -1
	c.mu.Unlock()
	switch {
	case fd < 0:
		return net.ErrClosed
	case f != nil:
		return f.Close()
	}
	return rawio.Close(fd)
}

// CloseWrite half-closes the connection (shutdown SHUT_WR).
func (c *Conn) CloseWrite() error {
	return c.control(func(fd uintptr) error { return unix.Shutdown(int(fd), unix.SHUT_WR) })
}

func (c *Conn) control(fn func(fd uintptr) error) error {
	c.mu.Lock()
	if c.f == nil {
		defer c.mu.Unlock()
		if c.fd < 0 {
			return net.ErrClosed
		}
		return fn(uintptr(c.fd))
	}
	c.mu.Unlock()
	var err error
	if cerr := c.rc.Control(func(fd uintptr) { err = fn(fd) }); cerr != nil {
		return cerr
	}
	return err
}

func (c *Conn) LocalAddr() net.Addr  { return net.TCPAddrFromAddrPort(c.local) }
func (c *Conn) RemoteAddr() net.Addr { return net.TCPAddrFromAddrPort(c.peer) }

func (c *Conn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

func (c *Conn) SetReadDeadline(t time.Time) error {
	return c.setDeadline(&c.rdl, t, (*os.File).SetReadDeadline)
}

func (c *Conn) SetWriteDeadline(t time.Time) error {
	return c.setDeadline(&c.wdl, t, (*os.File).SetWriteDeadline)
}

// setDeadline keeps t in dl for the bare descriptor's calls (and for
// promote), and sets it on the poller's file once there is one.
func (c *Conn) setDeadline(dl *time.Time, t time.Time, set func(*os.File, time.Time) error) error {
	c.mu.Lock()
	*dl = t
	f := c.f
	closed := c.fd < 0
	c.mu.Unlock()
	switch {
	case closed:
		return net.ErrClosed
	case f != nil:
		return set(f, t)
	}
	return nil
}

// SyscallConn lets callers read the descriptor themselves (l7's wait for a
// request holding no buffer, backend's watch of a queued client): their
// function runs on the bare descriptor first, and the connection enters
// the poller only when it asks to wait.
func (c *Conn) SyscallConn() (syscall.RawConn, error) { return rawConn{c}, nil }

type rawConn struct{ c *Conn }

func (r rawConn) Control(fn func(fd uintptr)) error {
	return r.c.control(func(fd uintptr) error { fn(fd); return nil })
}

func (r rawConn) Read(fn func(fd uintptr) bool) error  { return r.wait(fn, &r.c.rdl, false) }
func (r rawConn) Write(fn func(fd uintptr) bool) error { return r.wait(fn, &r.c.wdl, true) }

func (r rawConn) wait(fn func(fd uintptr) bool, dl *time.Time, write bool) error {
	c := r.c
	bare, err := c.bare(dl)
	if err != nil {
		return err
	}
	if bare {
		if fn(uintptr(c.fd)) {
			c.mu.Unlock()
			return nil
		}
		err = c.promote()
		c.mu.Unlock()
		if err != nil {
			return err
		}
	}
	if write {
		return c.rc.Write(fn)
	}
	return c.rc.Read(fn)
}
