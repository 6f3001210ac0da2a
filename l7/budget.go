package l7

import (
	"errors"
	"net"
	"sync/atomic"
)

// ServerConns is the process-wide budget of server connections. The
// descriptor limit is fitted to global.maxconn at two descriptors per
// connection (client and server), but HTTP/2 lets one client connection
// ask for many server connections at once, one per stream; so every
// connection to a server, in use or idle in a pool, on the HTTP/1 path and
// the net/http one alike, holds a slot here, and a request that finds none
// is answered 503 instead of the process running out of descriptors.
// Must not be copied.
type ServerConns struct {
	max int64
	n   atomic.Int64
}

// NewServerConns returns a budget of max server connections; max <= 0
// returns nil, which means no limit.
func NewServerConns(max int) *ServerConns {
	if max <= 0 {
		return nil
	}
	return &ServerConns{max: int64(max)}
}

// Open is the number of server connections holding a slot.
func (b *ServerConns) Open() int64 {
	if b == nil {
		return 0
	}
	return b.n.Load()
}

// Max is the size of the budget, 0 for none.
func (b *ServerConns) Max() int64 {
	if b == nil {
		return 0
	}
	return b.max
}

// Acquire takes a slot for a server connection of another mode (a tcp
// frontend's relay), which gives it back with Release when the relay ends.
func (b *ServerConns) Acquire() bool { return b.acquire() }

// Release gives back a slot taken by Acquire.
func (b *ServerConns) Release() { b.release() }

func (b *ServerConns) acquire() bool {
	if b == nil {
		return true
	}
	if b.n.Add(1) > b.max {
		b.n.Add(-1)
		return false
	}
	return true
}

func (b *ServerConns) release() {
	if b != nil {
		b.n.Add(-1)
	}
}

// errServerConns is a server connection refused for want of a slot.
var errServerConns = errors.New("server connection budget (global.maxconn) exhausted")

// takeServerConn takes a slot for a new server connection. At the cap it
// first closes the idle pooled connections of p, whose slots are the
// cheapest to give back.
func (p *Proxy) takeServerConn() bool {
	if p.ServerConns.acquire() {
		return true
	}
	p.CloseIdle()
	return p.ServerConns.acquire()
}

// budgetConn is a server connection of the net/http transports that gives
// its slot back when closed.
type budgetConn struct {
	net.Conn
	b    *ServerConns
	done atomic.Bool
}

func (c *budgetConn) Close() error {
	err := c.Conn.Close()
	if c.done.CompareAndSwap(false, true) {
		c.b.release()
	}
	return err
}

// CloseWrite half-closes the connection when the underlying one can.
func (c *budgetConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}
