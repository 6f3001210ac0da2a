package l7

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"

	"sluice/backend"
	"sluice/l4"
)

// The net/http side of a Proxy. HTTP/2 from clients (TLS with ALPN "h2",
// or h2c with prior knowledge), and every request to a backend with
// proto = "h2c", go through httputil.ReverseProxy here; plain HTTP/1.1
// stays on the lean path of h1.go. Routing, forwarding headers, retries,
// error pages and counters follow the same rules on both sides.

// stdProxy is built on first use (see Proxy.std) and lives as long as the
// Proxy.
type stdProxy struct {
	once  sync.Once
	ready atomic.Bool
	rp    *httputil.ReverseProxy
	hs    *http.Server // the server ReverseProxy runs under (its abort panics)
	// transports holds one RoundTripper per backend: *http.Transport
	// (HTTP/1.1, keep-alive pool) or *http2.Transport (h2c).
	transports sync.Map
}

// std returns the net/http side of p, building it on first use.
func (p *Proxy) std() *stdProxy {
	s := &p.stdp
	s.once.Do(func() {
		errLog := log.New(io.Discard, "", 0)
		if p.Log != nil {
			errLog = slog.NewLogLogger(p.Log.With("frontend", p.Frontend).Handler(), slog.LevelDebug)
		}
		s.rp = &httputil.ReverseProxy{
			Rewrite:   p.rewrite,
			Transport: roundTripFunc(p.roundTrip),
			// 0: ReverseProxy flushes at once for streaming responses (no
			// Content-Length, as gRPC and server-sent events send) and
			// otherwise when the body is done: one DATA frame, not two.
			FlushInterval: 0,
			ErrorHandler:  p.stdError,
			ErrorLog:      errLog,
			BufferPool:    copyBuffers{},
		}
		s.hs = &http.Server{
			MaxHeaderBytes: p.MaxHeaderBytes,
			IdleTimeout:    p.TimeoutClient,
			ErrorLog:       errLog,
		}
		s.ready.Store(true)
	})
	return s
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// copyBuffers lends ReverseProxy the body copy buffers of body.go
// (copyBufPool), the ones the HTTP/1 path copies with.
type copyBuffers struct{}

func (copyBuffers) Get() []byte  { return *copyBufPool.Get().(*[]byte) }
func (copyBuffers) Put(b []byte) { copyBufPool.Put(&b) }

// testStreamHook, set by tests only (export_test.go), runs before every
// HTTP/2 request is served: a test makes it panic.
var testStreamHook func(r *http.Request)

// closeIdleStd closes the idle server connections of the net/http side.
func (p *Proxy) closeIdleStd() {
	p.stdp.transports.Range(func(_, v any) bool {
		v.(interface{ CloseIdleConnections() }).CloseIdleConnections()
		return true
	})
}

// MaxH2Streams is the number of concurrent streams an HTTP/2 client
// connection may open (SETTINGS_MAX_CONCURRENT_STREAMS), and so the number
// of server connections it may hold at once.
const MaxH2Streams = 100

// stream keeps the deadlines of an HTTP/2 stream moving with its bytes:
// a response the client does not take (its flow-control window kept shut)
// or a request body it stops sending ends the stream after timeout_client,
// which cancels the request to the server and frees its connection. The
// deadlines are moved at most every slack, so a busy stream costs few
// messages to the connection's serving goroutine; they may fire up to
// slack late, never early.
type stream struct {
	http.ResponseWriter
	dl interface {
		SetReadDeadline(time.Time) error
		SetWriteDeadline(time.Time) error
	}
	w lazyDeadline // handler goroutine
	r lazyDeadline // the goroutine reading the request body
}

func newStream(w http.ResponseWriter, timeout time.Duration) *stream {
	s := &stream{ResponseWriter: w}
	if timeout > 0 {
		if s.dl, _ = w.(interface {
			SetReadDeadline(time.Time) error
			SetWriteDeadline(time.Time) error
		}); s.dl != nil {
			s.w.timeout, s.r.timeout = timeout, timeout
		}
	}
	return s
}

func (s *stream) touchWrite() {
	if t, ok := s.w.next(); ok {
		s.dl.SetWriteDeadline(t)
	}
}

func (s *stream) touchRead() {
	if t, ok := s.r.next(); ok {
		s.dl.SetReadDeadline(t)
	}
}

func (s *stream) Write(b []byte) (int, error) {
	s.touchWrite()
	return s.ResponseWriter.Write(b)
}

// FlushError flushes through the stream's deadline: a flush, too, waits
// for the client's window.
func (s *stream) FlushError() error {
	s.touchWrite()
	if f, ok := s.ResponseWriter.(interface{ FlushError() error }); ok {
		return f.FlushError()
	}
	return http.NewResponseController(s.ResponseWriter).Flush()
}

// WriteHeader passes the server's answer as it came: given no Content-Type,
// net/http would sniff the body and add one, which the HTTP/1 path does
// not (a nil value suppresses it; 1xx heads are left alone).
func (s *stream) WriteHeader(code int) {
	if code >= 200 {
		if h := s.ResponseWriter.Header(); h["Content-Type"] == nil {
			h["Content-Type"] = nil
		}
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *stream) Unwrap() http.ResponseWriter { return s.ResponseWriter }

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

// stdReq is one request on the net/http side, carried in its context.
type stdReq struct {
	// exchange is the access log's record, as on the HTTP/1 path:
	// connected is when the request went to a server.
	exchange
	be     *backend.Backend
	info   *ConnInfo
	srv    atomic.Pointer[backend.Server] // the server of the last attempt
	sent   atomic.Int64                   // body bytes to the client
	stream *stream                        // HTTP/2 from the client; nil from HTTP/1 (h1std.go)
	// watch is the HTTP/1 client's connection (h1std.go), watched while
	// the request waits in the queue; nil for HTTP/2 (its stream's
	// context ends when the client resets it or leaves).
	watch net.Conn
}

type stdReqKey struct{}

func reqState(r *http.Request) *stdReq { return r.Context().Value(stdReqKey{}).(*stdReq) }

// serveH2Req handles one HTTP/2 request from a client.
func (p *Proxy) serveH2Req(w *stream, r *http.Request, info *ConnInfo) {
	p.Counters.Requests.Add(1)
	sr := &stdReq{info: info, stream: w}
	sr.start = time.Now()
	sr.headDone = sr.start // the HTTP/2 server calls us once the head is in
	defer p.logStd(r, sr)
	if p.draining.Load() {
		// The HTTP/2 server turns this into GOAWAY after the response.
		w.Header().Set("Connection", "close")
	}
	v := stdView(r)
	be := p.route(&v)
	if be == nil {
		p.failStd(w, failNoRoute, sr)
		return
	}
	sr.be = be
	p.proxyStd(w, r, sr)
}

// proxyStd forwards r to a server of sr.be through the ReverseProxy.
func (p *Proxy) proxyStd(w http.ResponseWriter, r *http.Request, sr *stdReq) {
	ctx := context.WithValue(r.Context(), stdReqKey{}, sr)
	p.std().rp.ServeHTTP(w, r.WithContext(ctx))
}

// rewrite makes the request for the server: forwarding headers as the
// HTTP/1 path writes them. The server's address is filled in by roundTrip.
func (p *Proxy) rewrite(pr *httputil.ProxyRequest) {
	sr := reqState(pr.In)
	out := pr.Out
	out.URL.Scheme = "http"
	out.URL.Host = sr.be.Name
	out.URL.RawQuery = pr.In.URL.RawQuery // verbatim, as the HTTP/1 path passes it
	out.Host = pr.In.Host

	v := stdView(pr.In)
	ip := sr.info.Client.Addr().String()
	h := out.Header
	var buf [256]byte
	for i, name := range fwdNames {
		h[name] = []string{string(p.appendForwardValue(buf[:0], i, &v, sr.info, ip))}
	}
	if xfh := pr.In.Header["X-Forwarded-Host"]; len(xfh) > 0 {
		h["X-Forwarded-Host"] = xfh // not ours to drop: the HTTP/1 path passes it
	}
}

// serverTimeout is a server that did not answer within timeout_server.
type serverTimeout struct{}

func (serverTimeout) Error() string   { return "server response timeout" }
func (serverTimeout) Timeout() bool   { return true }
func (serverTimeout) Temporary() bool { return true }

// transport returns the RoundTripper of be for the client connection of
// info: shared by all clients and created on first use, or, when be sends
// PROXY headers, the client connection's own, whose connections open with
// a header naming that client.
func (p *Proxy) transport(be *backend.Backend, info *ConnInfo) http.RoundTripper {
	if v := p.Backends[be].SendProxy; v != 0 && info.priv != nil {
		return info.priv.get(be, func() http.RoundTripper { return p.newTransport(be, proxyHeader(v, info)) })
	}
	s := &p.stdp
	if v, ok := s.transports.Load(be); ok {
		return v.(http.RoundTripper)
	}
	v, _ := s.transports.LoadOrStore(be, p.newTransport(be, nil))
	return v.(http.RoundTripper)
}

// newTransport makes a RoundTripper to the servers of be whose connections
// open with hdr when it is not nil.
func (p *Proxy) newTransport(be *backend.Backend, hdr *l4.ProxyHeader) http.RoundTripper {
	opts := p.Backends[be]
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		// The slot is this connection's, pooled or not, whichever
		// request it serves: the transport dials for its pool.
		if !p.ServerConns.Take() {
			return nil, errServerConns
		}
		c, err := l4.Dial(ctx, addr, be.TimeoutConnect, hdr)
		if err != nil {
			p.ServerConns.Release()
			return nil, backend.ConnectFailed(err)
		}
		if p.ServerConns != nil {
			c = &budgetConn{Conn: c, b: p.ServerConns}
		}
		return c, nil
	}
	if opts.Proto == "h2c" {
		return &http2.Transport{
			AllowHTTP: true,
			DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
				return dial(ctx, network, addr)
			},
			DisableCompression: true,
			IdleConnTimeout:    opts.PoolIdleTimeout,
			MaxHeaderListSize:  uint32(max(p.MaxHeaderBytes, 0)),
		}
	}
	return &http.Transport{
		DialContext:            dial,
		DisableCompression:     true,
		DisableKeepAlives:      opts.PoolMaxIdle <= 0,
		MaxIdleConnsPerHost:    opts.PoolMaxIdle,
		IdleConnTimeout:        opts.PoolIdleTimeout,
		ResponseHeaderTimeout:  be.TimeoutServer,
		MaxResponseHeaderBytes: int64(p.MaxHeaderBytes),
	}
}

// privTransports are the RoundTrippers of one client connection, for the
// backends with send_proxy. Closed with the connection.
type privTransports struct {
	mu  sync.Mutex
	rts map[*backend.Backend]http.RoundTripper
	ups map[*backend.Server]*upPool // HTTP/2 connections to h2c servers (h2up.go)
}

// upPool returns the pool of this client connection's own HTTP/2
// connections to srv.
func (t *privTransports) upPool(srv *backend.Server) *upPool {
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

func (t *privTransports) get(be *backend.Backend, mk func() http.RoundTripper) http.RoundTripper {
	t.mu.Lock()
	defer t.mu.Unlock()
	if rt, ok := t.rts[be]; ok {
		return rt
	}
	if t.rts == nil {
		t.rts = map[*backend.Backend]http.RoundTripper{}
	}
	rt := mk()
	t.rts[be] = rt
	return rt
}

// close closes the idle connections of every transport; t may be nil.
func (t *privTransports) close() {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, rt := range t.rts {
		rt.(interface{ CloseIdleConnections() }).CloseIdleConnections()
	}
	t.rts = nil
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

// roundTrip sends the request to a server of its backend through
// Backend.Connect, whose callback is one RoundTrip of the transport: a
// failed connect (the transport's dial, below) is retried on another
// server while no request-body byte has gone out, as on the HTTP/1 path.
// The request's context is the client's stream (reset: the request leaves
// the queue, its RoundTrip is cancelled) under the hard stop (Proxy.Stop).
func (p *Proxy) roundTrip(req *http.Request) (*http.Response, error) {
	sr := reqState(req)
	be := sr.be
	rt := p.transport(be, sr.info)
	h2c := p.Backends[be].Proto == "h2c"
	var body *reqBody
	if req.Body != nil && req.Body != http.NoBody {
		// Transports close the body on failure; it stays open for a retry
		// (ReverseProxy closes it in the end).
		body = &reqBody{rc: req.Body, p: p, stream: sr.stream}
	}
	// The transports' dial takes the budget slot (a connection they pool
	// outlives this request), so Connect is given none.
	cn := backend.Connect{Client: backend.Client{Addr: sr.info.Client.Addr()}, Watch: sr.watch}
	var cookie []byte
	if be.Sticky == "cookie" {
		v := stdView(req)
		cookie = v.cookie(be.StickyCookie)
		cn.Pinned = pinned(be, cookie)
	}
	var resp *http.Response
	var cancel context.CancelFunc
	err := be.Connect(req.Context(), &cn, func(ctx context.Context, srv *backend.Server) error {
		sr.srv.Store(srv)
		sr.retries = cn.Retries
		u := *req.URL
		u.Host = srv.Addr
		ctx, cancelAttempt := context.WithCancel(ctx)
		out := req.WithContext(ctx)
		out.URL = &u
		if body != nil {
			body.srv.Store(srv)
			out.Body = body
		}
		// http.Transport bounds the wait for the response head with
		// ResponseHeaderTimeout, from the end of the request body;
		// http2.Transport has none: this timer does the same, waiting
		// while the request body still moves.
		var timer *time.Timer
		var timedOut atomic.Bool
		if t := be.TimeoutServer; h2c && t > 0 {
			timer = time.AfterFunc(time.Hour, func() {
				if body != nil && !body.eof.Load() {
					if body.reading.Load() {
						timer.Reset(t) // waiting for the client: timeout_client's business
						return
					}
					if idle := time.Duration(time.Now().UnixNano() - body.last.Load()); idle < t {
						timer.Reset(t - idle)
						return
					}
				}
				timedOut.Store(true)
				cancelAttempt()
			})
			if body != nil {
				body.last.Store(time.Now().UnixNano())
			}
			timer.Reset(t)
		}
		sr.connected = time.Now()
		var err error
		resp, err = rt.RoundTrip(out)
		if timer != nil {
			timer.Stop()
		}
		if err == nil && timedOut.Load() {
			resp.Body.Close()
			err = serverTimeout{}
		}
		if err == nil {
			cancel = cancelAttempt // the response body's now
			return nil
		}
		cancelAttempt()
		if timedOut.Load() {
			return serverTimeout{}
		}
		if body != nil && body.n.Load() > 0 && backend.IsConnectError(err) {
			// Part of the body went out: not to be sent again.
			return sentError{err}
		}
		if p.Log != nil && backend.IsConnectError(err) {
			p.Log.Debug("connect failed", "frontend", p.Frontend, "backend", be.Name, "server", srv.Name, "err", err)
		}
		return err
	})
	sr.retries = cn.Retries
	srv := cn.Server
	if err != nil {
		switch {
		case err == backend.ErrNoServer, err == backend.ErrQueueTimeout, errors.Is(err, errServerConns),
			backend.IsConnectError(err), req.Context().Err() != nil:
			return nil, err // failureOf names it
		case err == context.Canceled:
			// The watch of a queued HTTP/1 client (sr.watch) saw it
			// leave: its own context ended, not the request's. Nothing
			// went out and nobody is left to answer.
			return nil, errClientGone
		}
		// The request went out (or part of its body): the exchange
		// failed, the server is to blame for a timeout or a broken
		// connect.
		var se sentError
		if errors.As(err, &se) {
			err = se.err
		}
		srv.Counters.RespErrors.Add(1)
		if _, ok := err.(serverTimeout); ok || backend.IsConnectError(err) {
			srv.ObserveError()
		}
		return nil, err
	}
	sr.respHead = time.Now()
	sr.status = resp.StatusCode
	if resp.StatusCode >= 500 {
		srv.ObserveError()
	} else {
		srv.ObserveOK()
	}
	grpcTrailersOnly(resp)
	if setCookie(be, cookie, srv) {
		var buf [128]byte
		resp.Header.Add("Set-Cookie", string(appendStickyCookie(buf[:0], be.StickyCookie, srv.ID)))
	}
	p.count(srv, resp.StatusCode, 0) // bytes are counted as they pass (respBody)
	rb := &respBody{rc: resp.Body, p: p, srv: srv, sr: sr, cancel: cancel, idle: be.TimeoutServer}
	if rb.idle > 0 {
		rb.timer = time.AfterFunc(rb.idle, rb.watch)
	}
	resp.Body = rb
	return resp, nil
}

// errClientGone ends a request whose client closed its connection while
// the request waited in the queue.
var errClientGone = errors.New("client left while queued")

// sentError is a failed connect after part of the request body went out
// (a dial the transport retried): not to be retried by Connect.
type sentError struct{ err error }

func (e sentError) Error() string { return e.err.Error() }

// grpcTrailersOnly turns a gRPC "Trailers-Only" response (one HEADERS
// frame ending the stream, carrying grpc-status) into headers and trailers.
// Forwarded as it is, ReverseProxy may flush those headers before it sees
// the body end, and the client then finds a stream that ended without
// trailers (gRPC status Internal). Everything but Content-Type is a trailer
// in that form.
func grpcTrailersOnly(resp *http.Response) {
	if resp.ProtoMajor != 2 || resp.ContentLength != 0 || len(resp.Trailer) > 0 ||
		resp.Header["Grpc-Status"] == nil || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/grpc") {
		return
	}
	resp.Trailer = make(http.Header, len(resp.Header))
	for k, v := range resp.Header {
		if k != "Content-Type" {
			resp.Trailer[k] = v
			delete(resp.Header, k)
		}
	}
}

// reqBody is a request body that counts what it passes and that the
// transports cannot close (ReverseProxy closes it), so that a request whose
// connect failed can be sent again.
type reqBody struct {
	rc      io.ReadCloser
	p       *Proxy
	stream  *stream // moves the stream's read deadline; nil: not HTTP/2
	srv     atomic.Pointer[backend.Server]
	n       atomic.Int64
	last    atomic.Int64 // when a read last returned (UnixNano)
	reading atomic.Bool  // a read waits for the client
	eof     atomic.Bool
}

func (b *reqBody) Read(q []byte) (int, error) {
	if b.stream != nil {
		b.stream.touchRead()
	}
	b.reading.Store(true)
	n, err := b.rc.Read(q)
	b.reading.Store(false)
	b.last.Store(time.Now().UnixNano())
	if err == io.EOF {
		b.eof.Store(true)
	}
	if n > 0 {
		b.n.Add(int64(n))
		b.p.Counters.BytesIn.Add(uint64(n))
		if s := b.srv.Load(); s != nil {
			s.Counters.BytesIn.Add(uint64(n))
		}
	}
	return n, err
}

func (b *reqBody) Close() error { return nil }

// respBody counts a response body and releases its server when closed.
// A read that waits for the server longer than timeout_server (idle) ends
// the request; time spent writing to a slow client does not count.
type respBody struct {
	rc       io.ReadCloser
	p        *Proxy
	srv      *backend.Server
	sr       *stdReq
	cancel   context.CancelFunc
	once     sync.Once
	idle     time.Duration
	timer    *time.Timer  // runs watch; nil without timeout_server
	since    atomic.Int64 // when the read in progress began (UnixNano), 0 between reads
	timedOut atomic.Bool
	closed   atomic.Bool
}

// watch cancels the request when the read in progress has waited idle,
// and otherwise looks again when it could have.
func (b *respBody) watch() {
	if b.closed.Load() {
		return
	}
	next := b.idle
	if start := b.since.Load(); start != 0 {
		waited := time.Duration(time.Now().UnixNano() - start)
		if waited >= b.idle {
			b.timedOut.Store(true)
			b.cancel()
			return
		}
		next = b.idle - waited
	}
	b.timer.Reset(next)
}

func (b *respBody) Read(q []byte) (int, error) {
	if b.timer != nil {
		b.since.Store(time.Now().UnixNano())
	}
	n, err := b.rc.Read(q)
	if b.timer != nil {
		b.since.Store(0)
		if err != nil && err != io.EOF && b.timedOut.Load() {
			err = serverTimeout{}
			b.sr.terminated = "server-timeout"
		}
	}
	if err != nil && err != io.EOF && b.sr.terminated == "" {
		b.sr.terminated = "body" // as the HTTP/1 path names a broken body copy
	}
	if n > 0 {
		b.p.Counters.BytesOut.Add(uint64(n))
		b.srv.Counters.BytesOut.Add(uint64(n))
		b.sr.sent.Add(int64(n))
	}
	return n, err
}

func (b *respBody) Close() error {
	err := b.rc.Close()
	b.once.Do(func() {
		if b.timer != nil {
			b.closed.Store(true)
			b.timer.Stop()
		}
		b.cancel()
		b.srv.Release()
	})
	return err
}

// stdError answers a request that could not be forwarded, as the HTTP/1
// path would (failures), unless the client went away.
func (p *Proxy) stdError(w http.ResponseWriter, r *http.Request, err error) {
	sr := reqState(r)
	f := failureOf(err)
	if err == errClientGone || failures[f].status != http.StatusServiceUnavailable && r.Context().Err() != nil {
		// The client went away (or reset its stream): nobody to answer.
		sr.terminated = "client"
		return
	}
	if p.Log != nil {
		p.Log.Debug("request failed", "frontend", p.Frontend, "backend", sr.be.Name, "status", failures[f].status, "err", err)
	}
	p.failStd(w, f, sr)
}
