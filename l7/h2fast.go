package l7

import (
	"sync/atomic"

	"golang.org/x/net/http2"

	"sluice/backend"
)

// FastLoopPanics counts the fast path loop's recoveries from a panic.
var FastLoopPanics atomic.Uint64

// The HTTP/2 fast path (h2fast_linux.go) serves the common stream, a
// request without a body to an HTTP/1.1 server with an idle pooled
// connection, with no goroutine of its own: the connection's reader sends
// the request, an epoll loop reads the response and frames it, and the
// connection's writer writes it. Whatever else a stream needs (a dial, a
// queue, a large or chunked response, a timeout's answer) it hands to a
// stream goroutine, which takes the request up where the fast path left it.

// How a stream handed over from the fast path goes on (h2Stream.hand).
const (
	handNone    = iota
	handHeld    // a server is acquired (handSrv), no idle connection: Connect with it held
	handRecv    // the request is sent on handSC: read its response
	handTimeout // the request is sent on handSC; the server did not answer within timeout_server
	handPolicy  // the policy did not pass it (handVD): its answer
	handNoRoute // no backend for it: 404
	handRouted  // routed to handBE, which the fast path does not serve (h2c, send_proxy, sticky cookie, TLS)
	handAbort   // the loop panicked serving it: reset
)

// serveHanded serves a stream the fast path handed over. The request is
// counted, routed and recorded in s.x already.
func (s *h2Stream) serveHanded() {
	be, x := s.handBE, &s.x
	switch s.hand {
	case handAbort:
		s.abort(http2.ErrCodeInternal) // as serve's recovery: the panic is logged
	case handPolicy:
		v := h1View(&s.req)
		s.answerPolicy(s.handVD, &v, x)
	case handNoRoute:
		s.fail(failNoRoute, nil, x)
	case handRouted:
		if s.c.p.Backends[be].Proto == "h2c" {
			s.forwardUp(be, x, moved{})
		} else {
			s.forward(be, x, moved{})
		}
	case handHeld:
		s.forwardFrom(be, x, moved{srv: s.handSrv}, nil)
	case handRecv:
		s.forwardFrom(be, x, moved{}, s.handSC)
	case handTimeout:
		sc := s.handSC
		srv := sc.srv
		sc.close()
		srv.Counters.RespErrors.Add(1)
		s.fail(failServerTimeout, be, x)
		srv.Release()
		observe(srv, x, false)
	}
	s.handSC, s.handSrv = nil, nil
}

// handTo records how s goes on in a stream goroutine.
func (s *h2Stream) handTo(kind int, be *backend.Backend, srv *backend.Server, sc *serverConn) {
	s.hand, s.handBE, s.handSrv, s.handSC = kind, be, srv, sc
}
