package l7

import (
	"context"
	"errors"
	"net"
	"sync/atomic"

	"sluice/backend"
)

// errServerConns is a server connection refused for want of a slot of the
// process's budget (backend.ServerConns).
var errServerConns = backend.ErrServerConns

// stopCtx is the context every connect of p runs under: it ends at a hard
// stop, so that requests still queued or dialing give up at once.
func (p *Proxy) stopCtx() context.Context {
	if p.Stop != nil {
		return p.Stop
	}
	return context.Background()
}

// budgetConn is a server connection of the net/http transports that gives
// its slot back when closed.
type budgetConn struct {
	net.Conn
	b    *backend.ServerConns
	done atomic.Bool
}

func (c *budgetConn) Close() error {
	err := c.Conn.Close()
	if c.done.CompareAndSwap(false, true) {
		c.b.Release()
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
