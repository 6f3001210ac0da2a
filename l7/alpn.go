package l7

import (
	"crypto/tls"
	"net"

	"sluice/backend"
	"sluice/conf"
)

// Backends whose [backend.NAME.tls] alpn offers both "h2" and "http/1.1":
// each server is spoken to in the version its TLS handshake chose, HTTP/2
// through h2up.go, HTTP/1.1 through the HTTP/1 pool, as HAProxy's
// `alpn h2,http/1.1`. A request starts on the path of the list's first
// entry (BackendOptions.Proto); its dial then finds the server's version
// (Server.HTTPVersion, recorded by every handshake) or, for a server not
// known yet, the handshake's choice, and when it is the other one the
// request moves to the other path before anything of it was sent:
// backend.ErrMoved, the server kept acquired for it, nothing counted.

// maxMoves bounds the moves of one request: one to the server's known
// version, one more when its next handshake disagrees (it was just
// reconfigured); a third would be a server changing its mind on every
// handshake, answered as a failed connect.
const maxMoves = 2

// moved is what a request carries to the other path: its server, still
// acquired (backend.Connect.Held), its connect retries so far, and how
// many moves it made.
type moved struct {
	srv     *backend.Server
	retries int
	n       int
}

// moveOn reports whether the request, about to be sent to srv on the
// HTTP/2 path (h2) or the HTTP/1 one, belongs on the other: srv's last
// handshake chose the other version.
func moveOn(be *backend.Backend, srv *backend.Server, h2 bool, mv moved) bool {
	if mv.n >= maxMoves || !be.TLS.Mixed() {
		return false
	}
	want := backend.HTTP1
	if h2 {
		want = backend.HTTP2
	}
	v := srv.HTTPVersion()
	return v != backend.HTTPUnknown && v != want
}

// wrongVersion reports whether conn, just made to a server of be, is in
// the HTTP version the other path speaks (the server chose it by ALPN).
func wrongVersion(be *backend.Backend, conn net.Conn, h2 bool) bool {
	if !be.TLS.Mixed() {
		return false
	}
	tc, ok := conn.(*tls.Conn)
	return ok && (tc.ConnectionState().NegotiatedProtocol == conf.ALPNH2) != h2
}

// next is the move of a request whose Connect ended with ErrMoved, and
// whether it may go: after maxMoves the held server is released and
// counted a failed connect (the caller answers as for one).
func (mv moved) next(cn *backend.Connect) (moved, bool) {
	srv := cn.Held
	cn.Held = nil
	if mv.n >= maxMoves {
		srv.Counters.ConnErrors.Add(1)
		srv.Release()
		return moved{}, false
	}
	return moved{srv: srv, retries: cn.Retries, n: mv.n + 1}, true
}
