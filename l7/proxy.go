// Package l7 proxies HTTP: HTTP/1.1 on its own lean path (heads parsed into
// reused buffers, rewritten in place, bodies streamed, server connections
// pooled), HTTP/2 and TLS with the standard library and x/net.
package l7

import (
	"context"
	"golang.org/x/sys/unix"
	"unsafe"

	"crypto/tls"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"sluice/backend"
	"sluice/conf"
	"sluice/internal/rawio"
	"sluice/policy"
)

// Route sends matching requests to Backend. Empty fields match anything.
type Route struct {
	Host       string // exact, or "*.example.com" for any subdomain
	PathPrefix string
	Header     [][2]string // name, value: all must match
	Backend    *backend.Backend
}

// Counters are HTTP totals of a frontend. Must not be copied.
type Counters struct {
	Requests atomic.Uint64
	Resp     [6]atomic.Uint64 // by status class: [1] 1xx … [5] 5xx, [0] other
	// Requests refused by sluice itself, by reason.
	BadRequest     atomic.Uint64 // 400: malformed or ambiguous (smuggling)
	Timeout408     atomic.Uint64
	TooLarge431    atomic.Uint64
	TooManyHeaders atomic.Uint64 // of TooLarge431: more header lines than max_header_count
	NoRoute404     atomic.Uint64
	BadGateway502  atomic.Uint64
	Unavailable503 atomic.Uint64
	// NoServerConn503 counts the requests answered 503 because the
	// process's server-connection budget (ServerConns) was spent; they are
	// in Unavailable503 too.
	NoServerConn503 atomic.Uint64
	GatewayTime504  atomic.Uint64
	// H2Refused counts HTTP/2 streams refused (REFUSED_STREAM) past the
	// limit of concurrent streams of a connection; H2Calm the HTTP/2
	// connections ended with ENHANCE_YOUR_CALM (rapid reset, CONTINUATION
	// or control-frame floods).
	H2Refused atomic.Uint64
	H2Calm    atomic.Uint64
	// H2Fast counts the HTTP/2 streams the fast path answered with no
	// stream goroutine (h2fast_linux.go).
	H2Fast atomic.Uint64
	// H2AfterGoAway counts the HTTP/2 streams a client opened past a
	// drain's final GOAWAY: not processed, so the client may send them
	// again on another connection (RFC 9113 §6.8).
	H2AfterGoAway atomic.Uint64
	// SlotWaits counts the HTTP/1 client connections that had a request
	// (or their first bytes) ready and waited in the ready queue for a
	// slot of the process's bound on connections worked on (busy.go).
	SlotWaits atomic.Uint64
	BytesIn   atomic.Uint64
	BytesOut  atomic.Uint64
	// Handshakes counts the TLS handshakes of a TLS frontend (tls_client.go).
	Handshakes HandshakeCounters
}

// ConnInfo is what the frontend knows about a client connection.
type ConnInfo struct {
	Client   netip.AddrPort // from the PROXY header when there is one
	Local    netip.AddrPort // the address the client reached (PROXY header's destination when there is one)
	Accepted time.Time
	TLS      bool
	ALPN     string // protocol negotiated with the client when TLS was terminated here
	SNI      string // server name the client asked for when TLS was terminated here
	ConnID   string // unique id, in the access log ("id") and sent in PROXY v2 TLVs
	// Cert is the client's verified certificate (client_auth); nil: none.
	Cert *ClientCert

	// Done, when set, lets ServeClient hand the connection on to another
	// goroutine and return true before it is over: Done then runs once,
	// after the connection is closed. Left nil, ServeClient returns when
	// the connection is over.
	Done func()

	// priv holds the HTTP/2 server connections of this client connection
	// alone, for h2c backends with send_proxy (HTTP/1 servers: h1.go and
	// h2stream.go keep their own).
	priv *privConns
}

// Proxy serves HTTP for one frontend.
type Proxy struct {
	Frontend           string
	Routes             []Route
	Default            *backend.Backend // nil: unmatched requests get 404
	Port               string           // the frontend's port, for X-Forwarded-Port
	TimeoutClient      time.Duration    // keep-alive idle and body inactivity
	TimeoutHTTPRequest time.Duration    // a whole request head must arrive within this
	TimeoutTunnel      time.Duration    // idle upgraded connections
	MaxHeaderBytes     int
	MaxHeaderCount     int // most header lines in a head; more gets 431 (0: no limit)
	Backends           map[*backend.Backend]BackendOptions
	ErrorPages         map[int][]byte
	Log                *slog.Logger
	Access             *AccessLog     // nil: no access log
	TLS                *tls.Config    // nil: plain; else TLS termination (NewTLS)
	ClientAuth         bool           // TLS asks clients for certificates (WithClientAuth): the access log gets their fields
	H2C                bool           // a plain frontend also takes HTTP/2 with prior knowledge
	Panics             *atomic.Uint64 // counts HTTP/2 streams reset because serving them panicked; may be nil
	// ServerConns bounds the server connections of the whole process,
	// shared by every Proxy of it; nil: no bound.
	ServerConns *backend.ServerConns
	// Stop ends at a hard stop: requests queued or dialing give up, and
	// HTTP/2 streams (whose contexts derive from it) end. nil: never.
	Stop context.Context
	// Policy is the frontend's rules and rate limit ([[frontend.NAME.rule]],
	// [frontend.NAME.rate_limit]); nil: none. Built by package frontend,
	// asked once per request by both HTTP paths.
	Policy *policy.Frontend
	// ACME answers http-01 validations on a plain frontend (acme.go);
	// nil: none.
	ACME ACMEChallenges

	Counters Counters

	draining atomic.Bool
	pools    sync.Map  // *backend.Server -> *connPool
	sweep    sync.Once // starts sweepIdle at the first pooled connection
	// anySendProxy: some backend has send_proxy (see sendsProxy).
	sendsProxyOnce sync.Once
	anySendProxy   bool
	ups            sync.Map // *backend.Server -> *upPool: HTTP/2 connections to h2c servers (h2up.go)
	h2conns        sync.Map // *h2Conn: the HTTP/2 client connections, for Drain
	// idleH1 are the HTTP/1 clients waiting for their next request in
	// waitNext (after a quiet idleHandOff): Drain wakes them to close, as
	// HAProxy closes its idle keep-alive clients at a soft stop, rather
	// than hold the old worker until timeout_client or the hard stop cuts
	// them.
	idleH1 idleSet
}

// idleSet is a set of waiting clients, sharded so that the clients of a
// busy frontend (a TLS one registers at every wait) do not share one lock.
type idleSet struct {
	shards [16]struct {
		mu sync.Mutex
		m  map[*clientConn]struct{}
		_  [40]byte // a cache line each
	}
}

func (s *idleSet) shard(c *clientConn) int {
	return int(uintptr(unsafe.Pointer(c))>>8) % len(s.shards)
}

func (s *idleSet) add(c *clientConn) {
	sh := &s.shards[s.shard(c)]
	sh.mu.Lock()
	if sh.m == nil {
		sh.m = make(map[*clientConn]struct{})
	}
	sh.m[c] = struct{}{}
	sh.mu.Unlock()
}

func (s *idleSet) del(c *clientConn) {
	sh := &s.shards[s.shard(c)]
	sh.mu.Lock()
	delete(sh.m, c)
	sh.mu.Unlock()
}

// each calls f for every client in the set (f must not add or delete).
func (s *idleSet) each(f func(*clientConn)) {
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		for c := range sh.m {
			f(c)
		}
		sh.mu.Unlock()
	}
}

// BackendOptions are the HTTP settings of a backend.
type BackendOptions struct {
	PoolMaxIdle     int           // idle connections kept per server; 0 disables reuse
	PoolIdleTimeout time.Duration // how long an idle server connection is kept
	Proto           conf.Proto    // "" or "http1": HTTP/1.1; "h2c": HTTP/2 cleartext
	// SendProxy is the PROXY protocol version each server connection
	// opens with (ProxyNone: none). Such a connection carries one client's
	// address, so it serves that client connection only, never the pool.
	SendProxy conf.ProxyVersion
}

// Drain makes every connection answer its next request with
// "Connection: close" and close after the response; HTTP/2 connections get
// GOAWAY and close once their streams in flight are done.
func (p *Proxy) Drain() {
	p.draining.Store(true) // before the scan: a wait starting after it sees the flag
	p.drainH2()
	p.unparkAll()
	p.idleH1.each((*clientConn).wake)
}

// aLongTimeAgo is a read deadline that has passed: a wait ends at once.
var aLongTimeAgo = time.Unix(1, 0)

// count records a response of status (and bytesOut bytes of it) for the
// frontend and, when one answered, the server.
func (p *Proxy) count(srv *backend.Server, status int, bytesOut int64) {
	class := status / 100
	if class < 1 || class > 5 {
		class = 0
	}
	p.Counters.Resp[class].Add(1)
	p.Counters.BytesOut.Add(uint64(bytesOut))
	if srv != nil {
		srv.Counters.Resp[class].Add(1)
		srv.Counters.BytesOut.Add(uint64(bytesOut))
	}
}

// reqView is the view of a request that the HTTP policy reads, filled
// from a parsed head (HTTP/1, or an HTTP/2 stream's decoded one): slices
// into it, no copy.
type reqView struct {
	method, host, path []byte   // path is the request-target's path and query
	m                  *message // the headers
}

// h1View is the view of a parsed HTTP/1 request.
func h1View(m *message) reqView {
	return reqView{method: m.method, host: m.host, path: pathOf(m.target), m: m}
}

// header returns the first value of the named header, or nil.
func (v *reqView) header(name string) []byte { return v.m.get(name) }

// route finds the backend for a request, for both paths: routes in order,
// each matching by host, path prefix and headers; the default otherwise.
func (p *Proxy) route(v *reqView) *backend.Backend {
	for i := range p.Routes {
		r := &p.Routes[i]
		if r.Host != "" && !hostMatches(r.Host, v.host) {
			continue
		}
		if r.PathPrefix != "" && !strings.HasPrefix(string(v.path), r.PathPrefix) {
			continue
		}
		ok := true
		for _, h := range r.Header {
			if hv := v.header(h[0]); hv == nil || string(hv) != h[1] {
				ok = false
				break
			}
		}
		if ok {
			return r.Backend
		}
	}
	return p.Default
}

// pathOf returns the path of a request target (origin or absolute form).
func pathOf(target []byte) []byte {
	if len(target) > 0 && target[0] != '/' {
		if i := strings.Index(string(target), "://"); i >= 0 {
			rest := target[i+3:]
			if j := strings.IndexByte(string(rest), '/'); j >= 0 {
				return rest[j:]
			}
			return []byte("/")
		}
	}
	return target
}

// hostMatches compares a Host header (port ignored, case-insensitive) with a
// route's host, which may be "*.example.com".
func hostMatches(pattern string, host []byte) bool {
	h := string(policy.MatchHost(host)) // no port, no trailing dot
	pattern = strings.TrimSuffix(pattern, ".")
	if strings.HasPrefix(pattern, "*.") {
		suffix := pattern[1:] // ".example.com"
		return len(h) > len(suffix) && strings.EqualFold(h[len(h)-len(suffix):], suffix)
	}
	return strings.EqualFold(h, pattern)
}

// connPool keeps idle keep-alive connections to one server. Its lock is per
// server and held only to push or pop.
type connPool struct {
	mu   sync.Mutex
	idle []*serverConn
	// fast are the idle connections of the HTTP/2 fast path, watched by
	// its loop (h2fast_linux.go); no other path takes them.
	fast []*serverConn
	opts BackendOptions
}

type serverConn struct {
	conn      net.Conn
	hr        *headReader
	srv       *backend.Server
	idleSince time.Time
	reused    bool
	dl        deadlines
	w         deadlineWriter       // writes the request body through dl
	budget    *backend.ServerConns // holds a slot of it until closed
	// raw peeks at the socket before reuse (see quiet); nil when the
	// connection is not a plain socket, then a zero deadline read does it.
	raw  syscall.RawConn
	peek func(fd uintptr) bool // sc.peekFd, bound once: no allocation per check
	// peekBuf and peekErr are what the last peek used and saw (0: data
	// or EOF, EAGAIN: nothing).
	peekBuf [1]byte
	peekErr syscall.Errno
	// send and its state (see writeThenRead): bound once, no allocation.
	send     func(fd uintptr) bool
	sendBuf  []byte
	sendErr  syscall.Errno
	sendRead int
	// fc is the fast path's hold on the connection (nil: none).
	fc *fastConn
}

// newServerConn wraps a fresh connection to srv.
func newServerConn(conn net.Conn, srv *backend.Server, maxHead int, budget *backend.ServerConns) *serverConn {
	sc := &serverConn{conn: conn, hr: newHeadReader(conn, maxHead), srv: srv, budget: budget}
	if c, ok := conn.(syscall.Conn); ok {
		if raw, err := c.SyscallConn(); err == nil {
			sc.raw, sc.hr.raw = raw, raw
			sc.peek = sc.peekFd
			sc.send = sc.sendFd
		}
	} else if t, ok := conn.(*tls.Conn); ok {
		// TLS ([backend.NAME.tls]): bytes on the socket are records that
		// only crypto/tls may read, so no writeThenRead (send stays nil).
		// The peek before reuse still looks at the socket: a server that
		// closed the idle connection (close_notify, FIN) or wrote on it
		// has left bytes there. A close_notify crypto/tls already read
		// with the last response is not seen; that request meets EOF and
		// is sent again as on any stale reused connection.
		if c, ok := t.NetConn().(syscall.Conn); ok {
			if raw, err := c.SyscallConn(); err == nil {
				sc.raw = raw
				sc.peek = sc.peekFd
			}
		}
	}
	return sc
}

func (sc *serverConn) peekFd(fd uintptr) bool {
	// A raw recvfrom into the connection's own byte: unix.Recvfrom would
	// allocate its address buffer on every call.
	_, _, sc.peekErr = unix.RawSyscall6(unix.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&sc.peekBuf[0])), 1,
		unix.MSG_PEEK|unix.MSG_DONTWAIT, 0, 0)
	return true // never wait: a peek, not a read
}

// writeThenRead writes b (a request head, with its body when it came
// whole) and reads the first bytes of the answer into the head reader, for
// one write and one read. conn.Write then conn.Read would cost a third
// syscall each request: the read runs at once, meets EAGAIN (the server
// has not answered yet) and only then waits. Here the write runs inside
// RawRead, after its readiness reset, so an answer arriving during the
// write is not missed, and the read runs once the socket is readable. The
// read deadline bounds the wait. It returns how much of b was written (the
// caller writes the rest) and the write's error; a failed read is left to
// the next fill to see again.
//
// Only on a reused connection, just found quiet (nothing readable): bytes
// already waiting when RawRead resets the readiness would not wake it. A
// fresh one may hold an answer sent before any request (a server's "503,
// too busy" at accept), so it writes and reads the plain way.
func (sc *serverConn) writeThenRead(b []byte) (int, error) {
	if sc.send == nil || !sc.reused || sc.hr.buffered() > 0 {
		n, err := sc.conn.Write(b)
		return n, err
	}
	// No buffer while the server thinks: sendFd takes one when there is
	// something to read (8 KiB less per request in flight).
	sc.hr.release()
	sc.sendBuf, sc.sendErr, sc.sendRead = b, 0, 0
	err := sc.raw.Read(sc.send)
	written := len(b) - len(sc.sendBuf)
	sc.sendBuf = nil
	sc.hr.w += sc.sendRead
	switch {
	case err != nil && written < len(b):
		return written, err // deadline or closed while writing
	case sc.sendErr != 0 && written < len(b) && sc.sendErr != unix.EAGAIN:
		return written, sc.sendErr
	}
	return written, nil
}

func (sc *serverConn) sendFd(fd uintptr) bool {
	if len(sc.sendBuf) > 0 {
		for len(sc.sendBuf) > 0 {
			n, err := rawio.Write(int(fd), sc.sendBuf)
			if n > 0 {
				sc.sendBuf = sc.sendBuf[n:]
			}
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				sc.sendErr = err.(syscall.Errno)
				return true // the caller sees it, or writes the rest (EAGAIN)
			}
		}
		return false // written: wait for the answer before reading
	}
	if sc.hr.buf == nil {
		sc.hr.acquire()
	}
	n, err := rawio.Read(int(fd), sc.hr.buf[sc.hr.w:])
	switch {
	case err == unix.EAGAIN:
		sc.hr.release()
		return false // wait until readable
	case err == unix.EINTR:
		return sc.sendFd(fd)
	case n > 0:
		sc.sendRead = n
	}
	return true // EOF or an error: the next fill reads it again and sees it
}

// quiet reports whether an idle server connection may carry a request: the
// server sent nothing since its last response (bytes there would be taken
// as the next client's response) and has not closed it (a request on it
// would meet EOF, and a POST cannot be sent again safely).
func (sc *serverConn) quiet() bool {
	if sc.hr.buffered() > 0 {
		return false
	}
	if sc.raw == nil {
		return true
	}
	if err := sc.raw.Read(sc.peek); err != nil {
		return false
	}
	// Nothing to read: EAGAIN. Data (n > 0), EOF (n == 0, no error) or an
	// error such as ECONNRESET all mean the connection is not clean.
	return sc.peekErr == unix.EAGAIN
}

func (p *Proxy) pool(s *backend.Server, be *backend.Backend) *connPool {
	if v, ok := p.pools.Load(s); ok {
		return v.(*connPool)
	}
	v, _ := p.pools.LoadOrStore(s, &connPool{opts: p.Backends[be]})
	return v.(*connPool)
}

// getIdle pops the most recently used idle connection that is not too old.
// A connection the server closed, or wrote on, while it was idle is closed
// instead (checked outside the pool's lock: a syscall).
func (p *Proxy) getIdle(s *backend.Server, be *backend.Backend) *serverConn {
	cp := p.pool(s, be)
	now := time.Now()
	for {
		cp.mu.Lock()
		n := len(cp.idle)
		if n == 0 {
			cp.mu.Unlock()
			return nil
		}
		sc := cp.idle[n-1]
		cp.idle = cp.idle[:n-1]
		cp.mu.Unlock()
		if now.Sub(sc.idleSince) < cp.opts.PoolIdleTimeout && sc.quiet() {
			sc.reused = true
			return sc
		}
		sc.close()
	}
}

// putIdle keeps sc for reuse, or closes it when the pool is full.
func (p *Proxy) putIdle(sc *serverConn, be *backend.Backend) {
	cp := p.pool(sc.srv, be)
	if cp.opts.PoolMaxIdle <= 0 || p.draining.Load() || sc.hr.buffered() > 0 {
		sc.close()
		return
	}
	sc.idleSince = time.Now()
	sc.hr.release() // an idle connection holds no buffer
	cp.push(sc, &cp.idle)
	p.sweep.Do(func() { go p.sweepIdle() })
}

// push keeps sc on list, one of cp's (idle or fast), or closes it when
// the two hold pool_max_idle already: one bound for both.
func (cp *connPool) push(sc *serverConn, list *[]*serverConn) {
	cp.mu.Lock()
	if len(cp.idle)+len(cp.fast) >= cp.opts.PoolMaxIdle {
		cp.mu.Unlock()
		sc.close()
		return
	}
	*list = append(*list, sc)
	cp.mu.Unlock()
}

// sweepIdle closes, once a second, the pooled connections idle longer than
// their backend's pool_idle_timeout, oldest first: getIdle takes the newest,
// so after a burst the rest would keep their descriptors (and servers their
// slots) forever. It ends with the proxy's drain or hard stop.
func (p *Proxy) sweepIdle() {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var stop <-chan struct{}
	if p.Stop != nil {
		stop = p.Stop.Done()
	}
	var old []*serverConn
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		if p.draining.Load() {
			p.CloseIdle()
			return
		}
		now := time.Now()
		p.pools.Range(func(_, v any) bool {
			cp := v.(*connPool)
			cp.mu.Lock()
			n := 0
			for n < len(cp.idle) && now.Sub(cp.idle[n].idleSince) >= cp.opts.PoolIdleTimeout {
				n++
			}
			old = append(old[:0], cp.idle[:n]...)
			cp.idle = append(cp.idle[:0], cp.idle[n:]...)
			n = 0
			for n < len(cp.fast) && now.Sub(cp.fast[n].idleSince) >= cp.opts.PoolIdleTimeout {
				n++
			}
			old = append(old, cp.fast[:n]...)
			cp.fast = append(cp.fast[:0], cp.fast[n:]...)
			cp.mu.Unlock()
			for _, sc := range old {
				sc.close()
			}
			clear(old)
			return true
		})
	}
}

// CloseIdle closes every pooled server connection.
func (p *Proxy) CloseIdle() {
	p.closeIdleUp()
	p.pools.Range(func(_, v any) bool {
		cp := v.(*connPool)
		cp.mu.Lock()
		for _, sc := range cp.idle {
			sc.close()
		}
		for _, sc := range cp.fast {
			sc.close()
		}
		cp.idle, cp.fast = nil, nil
		cp.mu.Unlock()
		return true
	})
}

func (sc *serverConn) close() {
	if sc.fc != nil {
		sc.fc.forget()
		sc.fc = nil
	}
	sc.conn.Close()
	sc.budget.Release()
	sc.budget = nil
	if sc.hr != nil {
		sc.hr.release()
		sc.hr = nil
	}
}
