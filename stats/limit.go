package stats

import (
	"net"
	"sync"
	"sync/atomic"
)

// DefaultMaxConns caps the stats listener's connections when Options sets
// none: without a cap, idle connections to it took every descriptor of the
// worker and accept failed on every frontend (issue 15 review).
const DefaultMaxConns = 64

// limitListener serves at most cap connections at once; the rest wait in
// the kernel's accept queue (as golang.org/x/net/netutil.LimitListener,
// plus counts for the page and /metrics).
type limitListener struct {
	net.Listener
	sem    chan struct{}
	done   chan struct{}
	once   sync.Once
	open   atomic.Int64
	waited atomic.Uint64 // accepts that found every slot taken
}

func newLimitListener(ln net.Listener, n int) *limitListener {
	return &limitListener{Listener: ln, sem: make(chan struct{}, n), done: make(chan struct{})}
}

func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.sem <- struct{}{}:
	default:
		l.waited.Add(1)
		select {
		case l.sem <- struct{}{}:
		case <-l.done:
			return nil, net.ErrClosed
		}
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	l.open.Add(1)
	return &limitConn{Conn: c, l: l}, nil
}

func (l *limitListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return l.Listener.Close()
}

type limitConn struct {
	net.Conn
	l    *limitListener
	once sync.Once
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.l.open.Add(-1)
		<-c.l.sem
	})
	return err
}
