package l7

import (
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"sluice/backend"
)

// HTTP/2 pieces shared by the client side (h2conn.go, h2stream.go) and the
// client of h2c servers (h2up.go, h1up.go): sluice's own, on x/net's Framer
// and hpack; no net/http server, Transport or ReverseProxy.

// testStreamHook, set by tests only (export_test.go), runs before every
// HTTP/2 request is served: a test makes it panic.
var testStreamHook func(r *http.Request)

// testStreamDoneHook, set by tests only, runs as a stream's goroutine
// ends (its response sent), with the request's target.
var testStreamDoneHook func(target string)

// testFinalHook, set by tests only, runs in a drain between deciding the
// final GOAWAY's last stream and writing it.
var testFinalHook atomic.Pointer[func()]

// MaxH2Streams is the number of concurrent streams an HTTP/2 client
// connection may open (SETTINGS_MAX_CONCURRENT_STREAMS), and so the number
// of server connections it may hold at once.
const MaxH2Streams = 100

// preface is what an HTTP/2 client sends first (RFC 9113 §3.4).
const preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// peekPreface reads the first bytes of conn until they either are the
// HTTP/2 preface or cannot be. It returns conn wrapped so that those bytes
// are read again, whether the client speaks HTTP/2, and false when the
// client went away without a byte.
func (p *Proxy) peekPreface(conn net.Conn, info ConnInfo) (net.Conn, bool, bool) {
	start := info.Accepted
	if start.IsZero() {
		start = time.Now()
	}
	conn.SetReadDeadline(start.Add(p.handshakeTimeout()))
	buf := make([]byte, 0, len(preface))
	for len(buf) < len(preface) {
		n, err := conn.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if !strings.HasPrefix(preface, string(buf)) {
			break // HTTP/1.x
		}
		if err != nil {
			if len(buf) == 0 && !isTimeout(err) {
				return nil, false, false
			}
			break // let the HTTP/1 path answer (408, 400) or close
		}
	}
	conn.SetReadDeadline(time.Time{})
	pc := &prefixConn{Conn: conn, pre: buf}
	return pc, string(buf) == preface, true
}

// prefixConn replays bytes already read from its connection.
type prefixConn struct {
	net.Conn
	pre []byte
}

func (c *prefixConn) Read(b []byte) (int, error) {
	if len(c.pre) > 0 {
		n := copy(b, c.pre)
		c.pre = c.pre[n:]
		return n, nil
	}
	return c.Conn.Read(b)
}

// NetConn is the connection the bytes were peeked from, for
// backend.Connect's watch of a queued client.
func (c *prefixConn) NetConn() net.Conn { return c.Conn }

// CloseWrite half-closes the connection when the underlying one can.
func (c *prefixConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// serverTimeout is a server that did not answer within timeout_server.
type serverTimeout struct{}

func (serverTimeout) Error() string   { return "server response timeout" }
func (serverTimeout) Timeout() bool   { return true }
func (serverTimeout) Temporary() bool { return true }

// privConns are the HTTP/2 connections of one client connection to h2c
// servers of backends with send_proxy (h2up.go): their PROXY header names
// that client. Closed with the client connection.
type privConns struct {
	mu  sync.Mutex
	ups map[*backend.Server]*upPool
}

// upPool returns the pool of this client connection's own HTTP/2
// connections to srv.
func (t *privConns) upPool(srv *backend.Server) *upPool {
	t.mu.Lock()
	defer t.mu.Unlock()
	pl := t.ups[srv]
	if pl == nil {
		if t.ups == nil {
			t.ups = map[*backend.Server]*upPool{}
		}
		pl = &upPool{}
		t.ups[srv] = pl
	}
	return pl
}

// close closes the idle connections; the others close as their streams
// end. t may be nil.
func (t *privConns) close() {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, pl := range t.ups {
		pl.closeIdle(true)
	}
	t.ups = nil
}

// sendsProxy reports whether any backend of p has send_proxy, so client
// connections need room for server connections of their own.
func (p *Proxy) sendsProxy() bool {
	p.sendsProxyOnce.Do(func() {
		for _, o := range p.Backends {
			if o.SendProxy != 0 {
				p.anySendProxy = true
			}
		}
	})
	return p.anySendProxy
}
