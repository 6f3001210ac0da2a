package backend

import (
	"errors"
	"sync/atomic"
)

// ErrServerConns is a server connection refused for want of a slot of the
// process's ServerConns budget: not the server's fault, so Connect neither
// retries nor marks the server.
var ErrServerConns = errors.New("server connection budget (global.maxconn) exhausted")

// ServerConns is the process-wide budget of server connections. The
// descriptor limit is fitted to global.maxconn at two descriptors per
// connection (client and server), but HTTP/2 lets one client connection
// ask for many server connections at once, one per stream; so every
// connection to a server, in use or idle in a pool, of every mode (tcp
// relays, HTTP/1, the net/http path), holds a slot here, and a connection
// that finds none is refused instead of the process running out of
// descriptors. Must not be copied.
type ServerConns struct {
	max int64
	n   atomic.Int64
	// reclaim runs when the budget is spent, before the last try: it
	// closes idle pooled connections, the cheapest slots to give back.
	reclaim []func()
}

// NewServerConns returns a budget of max server connections; max <= 0
// returns nil, which means no limit.
func NewServerConns(max int) *ServerConns {
	if max <= 0 {
		return nil
	}
	return &ServerConns{max: int64(max)}
}

// OnExhausted registers f to run when a slot is asked for and none is
// free (it closes idle pooled connections). Call it before serving.
func (b *ServerConns) OnExhausted(f func()) {
	if b != nil {
		b.reclaim = append(b.reclaim, f)
	}
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

// Take takes a slot for a new server connection, reclaiming idle pooled
// connections at the cap, and reports whether it got one. The holder gives
// it back with Release when the connection closes. b may be nil (no limit).
func (b *ServerConns) Take() bool {
	if b == nil {
		return true
	}
	if b.acquire() {
		return true
	}
	for _, f := range b.reclaim {
		f()
	}
	return b.acquire()
}

func (b *ServerConns) acquire() bool {
	if b.n.Add(1) > b.max {
		b.n.Add(-1)
		return false
	}
	return true
}

// Release gives back a slot taken by Take; b may be nil.
func (b *ServerConns) Release() {
	if b != nil {
		b.n.Add(-1)
	}
}
