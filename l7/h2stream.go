package l7

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"sluice/backend"
	"sluice/internal/recovery"
	"sluice/l4"
	"sluice/policy"
)

// h2Stream is one HTTP/2 request: read by the connection's reader,
// served by its own goroutine through the HTTP policy core, to an HTTP/1.1
// server over the pooled connections of the lean path (or, for proto =
// "h2c" backends, through the net/http side).
type h2Stream struct {
	c             *h2Conn
	id            uint32
	fields        []hpack.HeaderField // the decoded head: req's slices point into its strings
	req           message
	resp          message
	endStream     bool // the request has no body
	large         bool // its head was over max_header_bytes: 431
	connect       bool
	protocol      string        // :protocol of an extended CONNECT (RFC 8441)
	idle          time.Duration // a tunnel's wait limit (timeout_tunnel); 0: timeout_client
	contentLength int64
	start         time.Time
	ctx           context.Context // the stream itself (see Done)
	lname         []byte          // a lower-cased header name being encoded
	num           [20]byte
	// The request body reader (Read, in the body copy's goroutine) and
	// the response writer (writeData) wait for different things at the
	// same time: each has its own wake-up and timer, or one takes the
	// other's wake-up and the other sleeps on.
	rd, wr   waker
	bodyDone chan error       // the request body copy's end, while it runs
	keepSC   *serverConn      // the server connection to keep after the response
	keepBE   *backend.Backend // its backend
	ready    bool             // counted in c.ready (see there)
	// The fast path's (h2fast.go): how the stream goes on when handed to
	// a goroutine, and the Connect of its pick.
	hand    int
	handBE  *backend.Backend
	handSrv *backend.Server
	handSC  *serverConn
	handVD  policy.Verdict
	fcn     backend.Connect
	edits   uint64   // the policy's header edits (policy.Verdict.Edits; 0: none)
	val     []byte   // scratch for an edited header's value
	x       exchange // serve's record of the request (a part of the stream: no allocation of its own)
	// The first fields of the request and of the response: a common head
	// grows no slice of its own.
	reqSpace, respSpace [4]field

	// Guarded by c.mu.
	in           []byte // request body received, not yet read
	recvWin      int64
	unacked      int64
	recvd        int64
	remoteClosed bool
	reset        error
	sendWin      int64
	done         bool // our side ended the stream
	// discard: the response is over and the rest of the request body is
	// read and dropped, still checked against content-length, until the
	// client's END_STREAM (half-closed (local), RFC 9113 §5.1).
	discard  bool
	exited   bool // its goroutine has ended (a discarding stream stays in c.streams)
	served   bool
	trailers []hpack.HeaderField
	server   net.Conn  // the server connection in use: closed on reset
	fast     *fastConn // the fast path's server connection while it waits for the response
	// The stream's context (Done): made only when something waits on it.
	canceled   bool
	doneCh     chan struct{}
	stopParent func() bool
}

var (
	errStreamReset   = errors.New("stream reset by the client")
	errStreamGone    = errors.New("stream or connection gone")
	errClientStalled = stalled{}
)

// stalled is a stream the client did not move (window or body) within
// timeout_client: a timeout, as the HTTP/1 path's deadlines give.
type stalled struct{}

func (stalled) Error() string   { return "client stalled the stream" }
func (stalled) Timeout() bool   { return true }
func (stalled) Temporary() bool { return true }

// bytesOf views a decoded header string as bytes without a copy; they are
// only read.
func bytesOf(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

func stringOf(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// newH2Stream checks a request head (RFC 9113 §8.2-8.3) and makes its
// stream; nil for a malformed one (a stream error PROTOCOL_ERROR).
func newH2Stream(c *h2Conn, id uint32, fields []hpack.HeaderField, end, large bool) *h2Stream {
	s := &h2Stream{c: c, id: id, fields: fields, endStream: end, large: large, contentLength: -1,
		start: time.Now(), recvWin: h2StreamWindow, sendWin: c.peerInitWin, remoteClosed: end}
	s.ctx = s
	s.req.fields, s.resp.fields = s.reqSpace[:0], s.respSpace[:0]
	s.req.reset()
	var method, scheme, path, authority, protocol string
	var cl []byte
	for _, f := range fields {
		if f.Name[0] == ':' {
			var dst *string
			switch f.Name {
			case ":method":
				dst = &method
			case ":scheme":
				dst = &scheme
			case ":path":
				dst = &path
			case ":authority":
				dst = &authority
			case ":protocol":
				dst = &protocol
			default:
				return nil // :status or unknown
			}
			if *dst != "" || f.Value == "" {
				return nil
			}
			*dst = f.Value
			continue
		}
		switch f.Name {
		case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
			return nil // connection-specific (RFC 9113 §8.2.2)
		case "te":
			if f.Value != "trailers" {
				return nil
			}
		case "content-length":
			if cl != nil && string(cl) != f.Value || !isDigits(bytesOf(f.Value)) {
				return nil
			}
			cl = bytesOf(f.Value)
		case "host":
			if s.req.host == nil {
				s.req.host = bytesOf(f.Value)
			}
		case "expect":
			s.req.expectCont = strings.EqualFold(f.Value, "100-continue")
		}
		s.req.fields = append(s.req.fields, field{name: bytesOf(f.Name), value: bytesOf(f.Value)})
	}
	if authority != "" {
		s.req.host = bytesOf(authority)
	}
	s.req.method, s.req.target = bytesOf(method), bytesOf(path)
	if large {
		return s
	}
	if protocol != "" {
		// Extended CONNECT (RFC 8441 §4): only once the client has our
		// SETTINGS, with the fields of a request to a path.
		if method != "CONNECT" || !c.acked || scheme == "" || path == "" || path[0] != '/' || authority == "" ||
			!validTarget(s.req.target) || !isHostChars(s.req.host) {
			return nil
		}
		s.protocol = protocol
		return s
	}
	if method == "CONNECT" {
		if scheme != "" || path != "" || authority == "" {
			return nil
		}
		s.connect = true
		s.req.target = s.req.host
		return s
	}
	if method == "" || scheme == "" || path == "" || !isToken(s.req.method) || !validTarget(s.req.target) ||
		path[0] != '/' && (path != "*" || method != "OPTIONS") || s.req.host != nil && !isHostChars(s.req.host) {
		return nil
	}
	if cl != nil {
		s.contentLength, _ = parseDigits(cl)
		if end && s.contentLength != 0 {
			return nil
		}
	}
	s.req.contentLength = s.contentLength
	s.req.chunked = !end && cl == nil
	return s
}

// wakeLocked wakes whatever of the stream waits (both look again at what
// they wait for).
func (s *h2Stream) wakeLocked() {
	s.rd.wake()
	s.wr.wake()
}

// waker is one goroutine's wait for the connection's reader.
type waker struct {
	ch    chan struct{}
	timer *time.Timer
}

func newWaker() waker { return waker{ch: make(chan struct{}, 1)} }

// arm makes the channel of a waker made lazily (an h2Stream's: most
// streams never wait), under the lock its wake-ups are given under, before
// the first wait.
func (w *waker) arm() {
	if w.ch == nil {
		w.ch = make(chan struct{}, 1)
	}
}

func (w *waker) wake() {
	if w.ch == nil {
		return // nobody has waited: whoever does looks first
	}
	select {
	case w.ch <- struct{}{}:
	default:
	}
}

// wait waits for a wake-up, at most t (0: no limit); false when t ran out.
func (w *waker) wait(t time.Duration) bool {
	if t <= 0 {
		<-w.ch
		return true
	}
	if w.timer == nil {
		w.timer = time.NewTimer(t)
	} else {
		w.timer.Reset(t)
	}
	select {
	case <-w.ch:
		w.timer.Stop()
		return true
	case <-w.timer.C:
		return false
	}
}

// resetLocked ends the stream for err: the client reset it, it broke the
// rules, or the connection is gone. Whatever the stream waits on gives up.
func (s *h2Stream) resetLocked(err error) {
	if s.reset == nil {
		s.reset = err
	}
	s.done = true
	s.cancelLocked()
	if s.server != nil {
		s.server.Close()
	}
	if s.fast != nil {
		s.fast.kill(s) // the fast path's loop ends the exchange
	}
	s.wakeLocked()
}

func (s *h2Stream) resetErr() bool { return s.reset != nil }

// The stream is its own context, ended by its end or reset or by the
// connection's: what it costs (a channel, a watch of the connection's
// context) is paid only by a stream something waits on (a queue, a dial),
// not by one served from the pool, which context.WithCancel charged
// every stream.
func (s *h2Stream) Deadline() (time.Time, bool) { return s.c.ctx.Deadline() }
func (s *h2Stream) Value(key any) any           { return s.c.ctx.Value(key) }

func (s *h2Stream) Done() <-chan struct{} {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if s.doneCh == nil {
		s.doneCh = make(chan struct{})
		if s.canceled {
			close(s.doneCh)
		} else {
			s.stopParent = context.AfterFunc(c.ctx, s.cancel)
		}
	}
	return s.doneCh
}

func (s *h2Stream) Err() error {
	c := s.c
	c.mu.Lock()
	canceled := s.canceled
	c.mu.Unlock()
	if canceled {
		return context.Canceled
	}
	return c.ctx.Err()
}

// cancel ends the stream's context.
func (s *h2Stream) cancel() {
	s.c.mu.Lock()
	s.cancelLocked()
	s.c.mu.Unlock()
}

func (s *h2Stream) cancelLocked() {
	if s.canceled {
		return
	}
	s.canceled = true
	if s.doneCh != nil {
		close(s.doneCh)
	}
	if s.stopParent != nil {
		s.stopParent()
	}
}

// endLocked records END_STREAM from the client.
func (s *h2Stream) endLocked() error {
	s.remoteClosed = true
	s.wakeLocked()
	if s.contentLength >= 0 && s.recvd != s.contentLength {
		return errBadMessage
	}
	return nil
}

// Read reads the request body; what it takes goes back to the client's
// windows, so the client sends more only as the server takes it.
func (s *h2Stream) Read(b []byte) (int, error) {
	c := s.c
	for {
		c.mu.Lock()
		if s.discard && s.reset == nil {
			c.mu.Unlock()
			return 0, errStreamGone
		}
		if len(s.in) > 0 {
			n := copy(b, s.in)
			s.in = s.in[:copy(s.in, s.in[n:])]
			var inc int64
			s.unacked += int64(n)
			if !s.remoteClosed && s.unacked >= h2StreamWindow/4 {
				inc, s.unacked = s.unacked, 0
				s.recvWin += inc
			}
			connInc := c.giveBack(int64(n))
			c.mu.Unlock()
			c.sendWindow(connInc, s.id, inc, false)
			return n, nil
		}
		if s.reset != nil {
			c.mu.Unlock()
			return 0, s.reset
		}
		if s.remoteClosed {
			c.mu.Unlock()
			return 0, io.EOF
		}
		s.rd.arm()
		c.mu.Unlock()
		if !s.rd.wait(s.waitLimit()) {
			return 0, errClientStalled
		}
	}
}

func (s *h2Stream) Close() error { return nil }

// sendHead writes a HEADERS frame (and CONTINUATIONs) whose block build
// encodes; end ends the stream.
func (s *h2Stream) sendHead(build func(e *hpack.Encoder), end bool) error {
	return s.sendHeadLazy(build, end, false)
}

// sendHeadLazy is sendHead; lazy leaves the frame unflushed for the DATA
// that follows at once (one write for a small response): the stream
// flushes before anything it may wait on.
func (s *h2Stream) sendHeadLazy(build func(e *hpack.Encoder), end, lazy bool) error {
	c := s.c
	c.mu.Lock()
	if s.reset != nil {
		c.mu.Unlock()
		return s.reset
	}
	if end {
		s.done = true
	}
	maxFrame := int(c.peerMaxFrame)
	c.mu.Unlock()
	return c.writeFlush(func() error {
		c.encB.b = c.encB.b[:0]
		build(c.enc)
		block := c.encB.b
		first := true
		for first || len(block) > 0 {
			n := min(len(block), maxFrame)
			frag := block[:n]
			block = block[n:]
			var err error
			if first {
				err = c.wfr.WriteHeaders(http2.HeadersFrameParam{StreamID: s.id, BlockFragment: frag,
					EndStream: end, EndHeaders: len(block) == 0})
			} else {
				err = c.wfr.WriteContinuation(s.id, len(block) == 0, frag)
			}
			if err != nil {
				return err
			}
			first = false
		}
		return nil
	}, false, lazy)
}

// field encodes one header field, the name lower-cased.
// It runs under the connection's write lock (sendHead's build), so the
// scratch name is the connection's: none to grow per stream.
func (s *h2Stream) field(e *hpack.Encoder, name, value []byte) {
	lowerField(e, &s.c.lname, name, value)
}

// lowerField encodes one header field, the name lower-cased in lname.
func lowerField(e *hpack.Encoder, lname *[]byte, name, value []byte) {
	l := append((*lname)[:0], name...)
	for i, ch := range l {
		if ch >= 'A' && ch <= 'Z' {
			l[i] = ch + 'a' - 'A'
		}
	}
	*lname = l
	// No dynamic table: the encoder keeps neither string.
	e.WriteField(hpack.HeaderField{Name: stringOf(l), Value: stringOf(value)})
}

func (s *h2Stream) status(e *hpack.Encoder, code int) {
	e.WriteField(hpack.HeaderField{Name: ":status", Value: stringOf(strconv.AppendInt(s.num[:0], int64(code), 10))})
}

// writeData sends b as DATA frames as the windows allow, waiting at most
// timeout_client for the client to open them; end ends the stream.
func (s *h2Stream) writeData(b []byte, end bool) error {
	c := s.c
	for {
		c.mu.Lock()
		if s.reset != nil {
			c.mu.Unlock()
			return s.reset
		}
		if len(b) == 0 {
			if end {
				s.done = true
			}
			c.mu.Unlock()
			if !end {
				return nil
			}
			return c.writeFlush(func() error { return c.wfr.WriteData(s.id, true, nil) }, false, s.batched())
		}
		n := int64(len(b))
		n = min(n, s.sendWin, c.sendWin, int64(c.peerMaxFrame))
		if n <= 0 {
			s.wr.arm()
			c.mu.Unlock()
			s.unready() // it waits: no longer one to leave the flush to
			c.flushDirty()
			if !s.wr.wait(s.waitLimit()) {
				return errClientStalled
			}
			continue
		}
		s.sendWin -= n
		c.sendWin -= n
		last := end && n == int64(len(b))
		if last {
			s.done = true
		}
		c.mu.Unlock()
		chunk := b[:n]
		if err := c.writeFlush(func() error { return c.wfr.WriteData(s.id, last, chunk) }, false, last && s.batched()); err != nil {
			return err
		}
		b = b[n:]
		if last {
			return nil
		}
	}
}

// batched says whether the stream's last frame may stay unflushed: it is
// ready, and its unready (or another ready stream's) flushes it.
func (s *h2Stream) batched() bool { return s.ready }

// setReady counts the stream in c.ready: its whole response is in hand.
func (s *h2Stream) setReady() {
	if !s.ready {
		s.ready = true
		s.c.ready.Add(1)
	}
}

// unready ends setReady, after the stream's last write (or instead of
// it): the last ready stream flushes what the others left.
func (s *h2Stream) unready() {
	if !s.ready {
		return
	}
	s.ready = false
	c := s.c
	if c.ready.Add(-1) == 0 && c.dirty.Load() {
		// Let the streams woken with this one (their server responses
		// came in the same poll) write theirs first: one flush for all.
		runtime.Gosched()
		c.flushDirty()
	}
}

// giveBack returns n consumed bytes to the connection's receive window
// and says how much WINDOW_UPDATE to send (0: not yet). c.mu held.
func (c *h2Conn) giveBack(n int64) int64 {
	c.connUnacked += n
	if c.connUnacked < h2ConnWindow/4 {
		return 0
	}
	inc := c.connUnacked
	c.connUnacked = 0
	c.recvWin += inc
	return inc
}

func (c *h2Conn) sendWindow(connInc int64, id uint32, inc int64, reader bool) {
	if connInc == 0 && inc == 0 {
		return
	}
	c.write(func() error {
		if connInc > 0 {
			if err := c.wfr.WriteWindowUpdate(0, uint32(connInc)); err != nil {
				return err
			}
		}
		if inc > 0 {
			return c.wfr.WriteWindowUpdate(id, uint32(inc))
		}
		return nil
	}, reader)
}

// serve serves the stream's request, in a goroutine of its own while it
// runs (h2Conn.worker).
func (s *h2Stream) serve() {
	c := s.c
	p := c.p
	defer c.streamDone(s)
	defer s.cancel()
	defer func() {
		v := recover()
		if v == nil {
			return
		}
		if v != http.ErrAbortHandler {
			if p.Panics != nil {
				p.Panics.Add(1)
			}
			recovery.Log(p.Log, v, "frontend", p.Frontend, "client", c.info.Client.String(), "proto", "h2")
		}
		s.abort(http2.ErrCodeInternal)
	}()
	if s.hand != handNone {
		s.serveHanded()
		return
	}
	x := &s.x
	x.start, x.headDone = s.start, s.start
	x.proto = "HTTP/2.0"
	if p.Access != nil {
		x.method, x.path = string(s.req.method), string(s.req.target)
	}
	p.Counters.Requests.Add(1)
	if testStreamHook != nil {
		u, _ := url.ParseRequestURI(string(s.req.target))
		testStreamHook(&http.Request{Method: string(s.req.method), URL: u})
	}
	if s.large {
		s.fail(failHeadTooLarge, nil, x)
		return
	}
	if s.connect {
		// CONNECT over HTTP/2 (and RFC 8441's extended CONNECT) is not
		// proxied.
		s.fail(failBadRequest, nil, x)
		return
	}
	if s.protocol != "" && !wsProtocol(s.protocol) {
		s.fail(failBadRequest, nil, x) // a protocol sluice cannot carry
		return
	}
	v := h1View(&s.req)
	if p.Policy != nil {
		vd := p.decide(&v, &c.info)
		if vd.Outcome != policy.Pass {
			s.answerPolicy(vd, &v, x)
			return
		}
		s.edits = vd.Edits
	}
	be := p.route(&v)
	if be == nil {
		s.fail(failNoRoute, nil, x)
		return
	}
	x.backend = be.Name
	if s.protocol != "" {
		s.websocket(be, x) // h2ws.go
		return
	}
	if p.Backends[be].Proto == "h2c" {
		s.forwardUp(be, x, moved{}) // h2up.go
		return
	}
	s.forward(be, x, moved{})
}

// abort resets the stream towards the client.
func (s *h2Stream) abort(code http2.ErrCode) {
	c := s.c
	c.mu.Lock()
	already := s.reset != nil
	s.resetLocked(errStreamGone)
	c.mu.Unlock()
	if !already {
		c.rst(s.id, code, false)
	}
}

// endBody stops a request body that is no longer wanted (the response
// is complete). A body of known length the client can finish within the
// stream's window is read to its END_STREAM and dropped, so its length is
// still checked (a malformed request is PROTOCOL_ERROR even once
// answered); any other is stopped with RST_STREAM NO_ERROR (RFC 9113 §8.1).
func (s *h2Stream) endBody() {
	c := s.c
	c.mu.Lock()
	if s.remoteClosed || s.reset != nil || s.discard {
		c.mu.Unlock()
		return
	}
	if s.contentLength >= 0 && s.contentLength-s.recvd <= s.recvWin && c.halfOpen < MaxH2Streams {
		s.discard = true
		inc := c.giveBack(int64(len(s.in)))
		s.in = s.in[:0]
		s.wakeLocked()
		c.mu.Unlock()
		c.sendWindow(inc, 0, 0, false)
		return
	}
	s.reset = errStreamGone
	s.wakeLocked()
	c.mu.Unlock()
	c.rst(s.id, http2.ErrCodeNo, false)
}

// fail answers the stream with sluice's own answer for f, as the HTTP/1
// path does (clientConn.fail), as an HTTP/2 response.
func (s *h2Stream) fail(f failure, be *backend.Backend, x *exchange) {
	s.failStatus(f, failures[f].status, be, x)
}

// failStatus is fail answering status instead of the table's.
func (s *h2Stream) failStatus(f failure, status int, be *backend.Backend, x *exchange) {
	p := s.c.p
	a := &failures[f]
	p.countFailure(f, be)
	x.terminated = a.term
	x.status = status
	body := p.errorPage(status)
	err := s.sendHead(func(e *hpack.Encoder) {
		s.status(e, status)
		for _, h := range errorHeaders {
			s.field(e, bytesOf(h[0]), bytesOf(h[1]))
		}
		s.field(e, []byte("content-length"), strconv.AppendInt(s.num[:0], int64(len(body)), 10))
	}, false)
	if err == nil {
		err = s.writeData(body, true)
	}
	if err == nil {
		x.bytesOut = int64(len(body))
	}
	p.count(nil, status, x.bytesOut)
	s.endBody()
	s.log(x)
}

func (s *h2Stream) log(x *exchange) { s.c.p.logRequest(x, &s.c.info) }

// forward sends the request to a server of be over HTTP/1.1 and relays
// the response: clientConn.forward's connect, retry and observation rules;
// mv is a request moved here from the HTTP/2 path (alpn.go).
func (s *h2Stream) forward(be *backend.Backend, x *exchange, mv moved) {
	s.forwardFrom(be, x, mv, nil)
}

// forwardFrom is forward; sent, when not nil, is a server connection the
// request was already sent on (the fast path's), whose response comes
// first, with the retry rules of any other.
func (s *h2Stream) forwardFrom(be *backend.Backend, x *exchange, mv moved, sent *serverConn) {
	p := s.c.p
	cn := backend.Connect{Client: backend.Client{Addr: s.c.info.Client.Addr()}, Budget: p.ServerConns,
		Held: mv.srv, Retries: mv.retries}
	var cookie []byte
	if be.Sticky == "cookie" {
		v := h1View(&s.req)
		cookie = v.cookie(be.StickyCookie)
		cn.Pinned = pinned(be, cookie)
	}
	fresh := false
	var sc *serverConn
	dial := func(ctx context.Context, srv *backend.Server) error {
		if moveOn(be, srv, false, mv) {
			return backend.ErrMoved
		}
		var err error
		sc, err = s.serverConn(ctx, &cn, be, fresh)
		return err
	}
	for {
		var srv *backend.Server
		var retry bool
		if sent != nil {
			// Sent by the fast path: its response is read here.
			srv, cn.Server, cn.Retries = sent.srv, sent.srv, x.retries
			if !s.setServer(sent.conn) {
				sent.close()
				x.terminated = "client"
				s.log(x)
				srv.Release()
				return
			}
			retry = s.receive(sent, be, x, false, false)
			s.setServer(nil)
			sent = nil
		} else {
			err := be.Connect(s.ctx, &cn, dial)
			x.retries = cn.Retries
			if cn.Server != nil {
				x.server, x.srv = cn.Server.Name, cn.Server
			}
			if err == backend.ErrMoved {
				if mv, ok := mv.next(&cn); ok {
					s.forwardUp(be, x, mv)
				} else {
					s.fail(failConnect, be, x)
				}
				return
			}
			if s.notConnected(err, be, x) {
				return
			}
			srv = cn.Server
			x.connected = time.Now()
			retry = s.exchange(sc, be, x, setCookie(be, cookie, srv))
		}
		srv.Release()
		observe(srv, x, retry)
		if !retry {
			return
		}
		if cn.Retries >= be.Retries {
			srv.Counters.RespErrors.Add(1)
			s.fail(failServerError, be, x)
			return
		}
		cn.Retries++
		x.retries = cn.Retries
		srv.Counters.Retries.Add(1)
		cn.Pinned = srv
		fresh = true
	}
}

// serverConn is clientConn.serverConn for a stream: a pooled connection
// or a new one; with send_proxy, one of this client connection's own.
func (s *h2Stream) serverConn(ctx context.Context, cn *backend.Connect, be *backend.Backend, fresh bool) (*serverConn, error) {
	c := s.c
	srv := cn.Server
	version := c.p.Backends[be].SendProxy
	var hdr *l4.ProxyHeader
	if version != 0 {
		if !fresh {
			if sc := c.takeOwn(srv); sc != nil {
				return sc, nil
			}
		}
		hdr = proxyHeader(version, &c.info)
	} else if !fresh {
		if sc := c.p.getIdle(srv, be); sc != nil {
			return sc, nil
		}
	}
	return c.p.dialServer(ctx, cn, srv, be, hdr)
}

// notConnected answers the stream when backend.Connect failed (err not
// nil) and reports whether it did: a failure from the table, or only the
// log line of a client that left.
func (s *h2Stream) notConnected(err error, be *backend.Backend, x *exchange) bool {
	return notConnected(s, err, be, x)
}

// notConnected is h2Stream.notConnected for any upClient.
func notConnected(cl upClient, err error, be *backend.Backend, x *exchange) bool {
	switch {
	case err == nil:
		return false
	case backend.IsConnectError(err):
		cl.fail(failConnect, be, x)
	case errors.Is(err, backend.ErrNoServer), errors.Is(err, backend.ErrQueueTimeout), errors.Is(err, errServerConns):
		cl.fail(failureOf(err), be, x)
	default:
		x.terminated = "client"
		cl.log(x)
	}
	return true
}

// takeOwn returns an idle server connection of this client connection to
// srv (send_proxy), if one is quiet.
func (c *h2Conn) takeOwn(srv *backend.Server) *serverConn {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, sc := range c.own {
		if sc.srv == srv {
			c.own = append(c.own[:i], c.own[i+1:]...)
			if sc.quiet() {
				sc.reused = true
				return sc
			}
			sc.close()
			return nil
		}
	}
	return nil
}

// keepServerConn keeps sc for another request: pooled, or this client
// connection's own (send_proxy).
func (s *h2Stream) keepServerConn(sc *serverConn, be *backend.Backend) {
	c := s.c
	opts := c.p.Backends[be]
	if opts.SendProxy == 0 {
		c.p.putIdle(sc, be)
		return
	}
	c.mu.Lock()
	if opts.PoolMaxIdle <= 0 || c.p.draining.Load() || sc.hr.buffered() > 0 || c.closed || len(c.own) >= opts.PoolMaxIdle {
		c.mu.Unlock()
		sc.close()
		return
	}
	sc.hr.release() // an idle connection holds no buffer
	c.own = append(c.own, sc)
	c.mu.Unlock()
}

// setServer records the server connection in use, closed if the stream
// is reset; false when it already was.
func (s *h2Stream) setServer(conn net.Conn) bool {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	s.server = conn
	return s.reset == nil
}

// buildRequestHead writes the HTTP/1.1 request for the server: as the
// HTTP/1 path writes it (clientConn.buildRequestHead), cookies joined in
// one header (RFC 9113 §8.2.3).
func (s *h2Stream) buildRequestHead(b []byte) []byte {
	req := &s.req
	c := s.c
	b = appendRequestStart(b, req, false)
	cookies := false
	for _, f := range req.fields {
		switch {
		case framing(f.name), equalFold(f.name, "host"), equalFold(f.name, "te"), isForwarding(f.name),
			c.p.dropsField(s.edits, false, f.name):
			continue
		case equalFold(f.name, "cookie"):
			cookies = true // joined below, wherever the crumbs stood
			continue
		}
		b = append(b, f.name...)
		b = append(b, ": "...)
		b = append(b, f.value...)
		b = append(b, "\r\n"...)
	}
	if cookies {
		// HTTP/2 clients may split the cookie into crumbs anywhere in the
		// list; HTTP/1.1 wants one line with them joined by "; ".
		b = append(b, "cookie: "...)
		first := true
		for _, f := range req.fields {
			if equalFold(f.name, "cookie") && !c.p.dropsField(s.edits, false, f.name) {
				if !first {
					b = append(b, "; "...)
				}
				b = append(b, f.value...)
				first = false
			}
		}
		b = append(b, "\r\n"...)
	}
	b = c.p.appendEdits(b, s.edits, false, &c.info, uint64(s.id))
	b = appendClientCert(b, c.info.Cert)
	v := h1View(req)
	for i, name := range fwdNames {
		b = append(b, name...)
		b = append(b, ": "...)
		b = c.p.appendForwardValue(b, i, &v, &c.info, c.addr)
		b = append(b, "\r\n"...)
	}
	return append(b, "\r\n"...)
}

// exchange sends the request on sc and relays the response. It returns
// whether the request never reached the server (a stale pooled
// connection) and may be sent again.
func (s *h2Stream) exchange(sc *serverConn, be *backend.Backend, x *exchange, sticky bool) (retry bool) {
	hasBody := !s.endStream
	// Set first: a reset of the stream closes the connection, and so ends
	// the wait for the answer below.
	if !s.setServer(sc.conn) {
		sc.close()
		x.terminated = "client"
		s.log(x)
		return false
	}
	defer s.setServer(nil)
	op := outPool.Get().(*[]byte)
	out := s.buildRequestHead((*op)[:0])
	now := time.Now()
	sc.dl.write(sc.conn, now, be.TimeoutServer)
	var err error
	if hasBody {
		_, err = sc.conn.Write(out)
	} else {
		sc.dl.read(sc.conn, now, be.TimeoutServer)
		var n int
		if n, err = sc.writeThenRead(out); err == nil && n < len(out) {
			_, err = sc.conn.Write(out[n:])
		}
	}
	*op = out[:0]
	outPool.Put(op)
	if err != nil {
		sc.close()
		if sc.reused && !hasBody {
			return true
		}
		s.fail(failServerError, be, x)
		return false
	}
	sc.srv.Counters.BytesIn.Add(uint64(len(out)))
	return s.receive(sc, be, x, sticky, hasBody)
}

// receive relays the response to the request sent on sc (and sends its
// body, hasBody): the second half of exchange, where a request the fast
// path sent (h2fast.go) resumes when its response needs a goroutine.
func (s *h2Stream) receive(sc *serverConn, be *backend.Backend, x *exchange, sticky, hasBody bool) (retry bool) {
	c := s.c
	p := c.p
	idempotent := isIdempotent(s.req.method)
	isHead := equalFold(s.req.method, "HEAD")
	var err error
	s.bodyDone, s.keepSC, s.keepBE = nil, nil, nil
	if hasBody {
		sc.conn.SetReadDeadline(time.Time{})
		sc.dl.forget()
		sc.w = deadlineWriter{conn: sc.conn, dl: &sc.dl, timeout: be.TimeoutServer}
		bodyDone := make(chan error, 1)
		s.bodyDone = bodyDone
		go func() {
			n, err := s.copyBody(&sc.w, s.req.chunked)
			p.Counters.BytesIn.Add(uint64(n))
			sc.srv.Counters.BytesIn.Add(uint64(n))
			if err != nil {
				sc.conn.Close()
			} else if t := be.TimeoutServer; t > 0 {
				sc.conn.SetReadDeadline(time.Now().Add(t + slackOf(t)))
			}
			bodyDone <- err
		}()
	}
	bodyErr := s.waitBody
	resp := &s.resp
	gotAny := false
	for {
		if s.bodyDone == nil {
			sc.dl.read(sc.conn, time.Now(), be.TimeoutServer)
		}
		head, err := sc.hr.readHead()
		if err != nil {
			sc.close()
			berr := bodyErr()
			var werr writeError
			c.mu.Lock()
			gone := s.reset != nil
			c.mu.Unlock()
			switch {
			case errors.Is(berr, errClientStalled):
				s.fail(failClientTimeout, be, x)
			case gone:
				x.terminated = "client"
				s.log(x)
			case isTimeout(err) || errors.As(berr, &werr) && isTimeout(berr):
				sc.srv.Counters.RespErrors.Add(1)
				s.fail(failServerTimeout, be, x)
			case !gotAny && sc.reused && idempotent && !hasBody && (err == io.EOF || errors.Is(err, syscall.ECONNRESET)):
				return true
			default:
				sc.srv.Counters.RespErrors.Add(1)
				s.fail(failServerError, be, x)
			}
			return false
		}
		gotAny = true
		if err := resp.parseResponse(head); err != nil {
			sc.close()
			bodyErr()
			sc.srv.Counters.RespErrors.Add(1)
			s.fail(failBadResponse, be, x)
			return false
		}
		if resp.status >= 100 && resp.status < 200 && resp.status != 101 {
			s.sendRespHead(resp, "", "", false, false)
			continue
		}
		break
	}
	x.respHead = time.Now()
	x.status = resp.status
	if resp.status == 101 {
		// A switch nobody could ask for: HTTP/2 has no Upgrade.
		sc.close()
		bodyErr()
		sc.srv.Counters.RespErrors.Add(1)
		s.fail(failBadResponse, be, x)
		return false
	}
	noBody := isHead || resp.status == 204 || resp.status == 304 || !resp.chunked && resp.contentLength == 0
	untilClose := !noBody && !resp.chunked && resp.contentLength < 0
	srv := sc.srv
	cookie := ""
	if sticky {
		cookie = be.StickyCookie
	}
	if !untilClose && !resp.connClose {
		// Back to the pool as soon as the response is read whole, before
		// the client sees its end and sends the next request.
		s.keepSC, s.keepBE = sc, be
	}
	// A body already read whole goes in the same write as the head.
	lazy := !noBody && !resp.chunked && resp.contentLength > 0 && int64(sc.hr.buffered()) >= resp.contentLength
	if noBody || lazy {
		// Nothing left to wait on but the writes: batched with the other
		// streams' (see h2Conn.ready).
		s.setReady()
		defer s.unready()
	}
	err = s.sendRespHead(resp, cookie, srv.ID, noBody, lazy || noBody && s.batched())
	if noBody {
		s.unready()
	}
	if noBody {
		// Only now: resp's fields point into sc's read buffer, which the
		// next stream given sc reads its own response into.
		s.releaseEarly()
	}
	var n int64
	if err == nil && !noBody {
		n, err = s.copyResponse(sc, resp, be)
	}
	s.unready()
	if s.keepSC == nil && (untilClose || resp.connClose) {
		// Not to be kept.
	} else if s.keepSC == nil {
		// Kept already: the exchange is over.
		s.served = err == nil
		p.count(srv, resp.status, n)
		x.bytesOut = n
		if err != nil {
			s.clientBroke(err)
			x.bodyFailed(err, srv)
		}
		s.log(x)
		return false
	}
	s.keepSC = nil
	p.count(srv, resp.status, n)
	x.bytesOut = n
	if err != nil {
		sc.close()
		s.clientBroke(err)
		bodyErr()
		x.bodyFailed(err, srv)
		s.log(x)
		return false
	}
	if s.bodyDone != nil {
		select {
		case berr := <-s.bodyDone:
			s.bodyDone = nil
			if berr != nil {
				sc.close()
				s.log(x)
				return false
			}
		default:
			// The server answered before the whole request body: stop it.
			s.endBody()
			bodyErr()
			sc.close()
			s.log(x)
			return false
		}
	}
	if !untilClose && !resp.connClose {
		s.keepServerConn(sc, be)
	} else {
		sc.close()
	}
	s.served = true
	s.log(x)
	return false
}

// clientBroke resets the stream after a broken response body: CANCEL
// for a client that stalled, INTERNAL_ERROR for a server that broke off.
func (s *h2Stream) clientBroke(err error) {
	var werr writeError
	if errors.As(err, &werr) {
		if errors.Is(werr.err, errClientStalled) {
			s.abort(http2.ErrCodeCancel)
		}
	} else {
		s.abort(http2.ErrCodeInternal)
	}
	s.endBody()
}

// waitBody waits for the request body's copy to end and returns its error.
func (s *h2Stream) waitBody() error {
	if s.bodyDone == nil {
		return nil
	}
	err := <-s.bodyDone
	s.bodyDone = nil
	return err
}

// releaseEarly gives the server connection back once the response is read
// whole (and the request body sent whole): before the last frame goes to
// the client.
func (s *h2Stream) releaseEarly() {
	sc := s.keepSC
	if sc == nil {
		return
	}
	if s.bodyDone != nil {
		select {
		case err := <-s.bodyDone:
			s.bodyDone = nil
			if err != nil {
				return
			}
		default:
			return
		}
	}
	s.keepSC = nil
	s.setServer(nil)
	sc.dl.r = time.Time{} // the body copy moved the read deadline
	s.keepServerConn(sc, s.keepBE)
}

// connSpecific reports a header HTTP/2 has no place for (RFC 9113
// §8.2.2), on top of the message's hop-by-hop ones.
func connSpecific(name []byte) bool {
	return equalFold(name, "connection") || equalFold(name, "keep-alive") || equalFold(name, "proxy-connection") ||
		equalFold(name, "transfer-encoding") || equalFold(name, "upgrade") || equalFold(name, "te")
}

// sendRespHead sends a server's response head (final or interim) as
// HEADERS.
func (s *h2Stream) sendRespHead(resp *message, cookie, id string, end, lazy bool) error {
	return s.sendHeadLazy(func(e *hpack.Encoder) {
		s.encodeRespHead(e, &s.c.lname, resp, cookie, id)
	}, end, lazy)
}

// encodeRespHead encodes a response head's fields with e; lname is the
// scratch for lower-cased names of whoever holds e.
func (s *h2Stream) encodeRespHead(e *hpack.Encoder, lname *[]byte, resp *message, cookie, id string) {
	s.status(e, resp.status)
	if resp.status >= 200 && resp.contentLength >= 0 && !resp.chunked {
		lowerField(e, lname, []byte("content-length"), strconv.AppendInt(s.num[:0], resp.contentLength, 10))
	}
	edits := s.edits
	if resp.status < 200 {
		edits = 0 // interim: the edits go on the final response
	}
	for _, f := range resp.fields {
		if framing(f.name) || resp.hopByHop(f.name) || connSpecific(f.name) || s.c.p.dropsField(edits, true, f.name) {
			continue
		}
		lowerField(e, lname, f.name, f.value)
	}
	s.encodeEdits(e, edits, true)
	if cookie != "" && resp.status >= 200 {
		var buf [128]byte
		lowerField(e, lname, []byte("set-cookie"), appendStickyCookie(buf[:0], cookie, id))
	}
}

// copyResponse relays the response body from the server as DATA frames,
// never reading more than one buffer ahead of the client's windows.
func (s *h2Stream) copyResponse(sc *serverConn, resp *message, be *backend.Backend) (int64, error) {
	bp := copyBufPool.Get().(*[]byte)
	defer copyBufPool.Put(bp)
	buf := (*bp)[:16384]
	p := s.c.p
	dl := deadliner{conn: sc.conn, lazyDeadline: lazyDeadline{timeout: be.TimeoutServer}}
	var done int64
	send := func(b []byte, end bool) error {
		if err := s.writeData(b, end); err != nil {
			return writeError{err}
		}
		done += int64(len(b))
		p.Counters.BytesOut.Add(uint64(len(b)))
		sc.srv.Counters.BytesOut.Add(uint64(len(b)))
		return nil
	}
	hr := sc.hr
	if !resp.chunked {
		left := resp.contentLength // < 0: until the server closes
		for left != 0 {
			dl.touch()
			want := int64(len(buf))
			if left > 0 {
				want = min(want, left)
			}
			r, err := hr.Read(buf[:want])
			if r > 0 {
				if left > 0 {
					left -= int64(r)
				}
				if left == 0 {
					s.releaseEarly()
				}
				if werr := send(buf[:r], left == 0); werr != nil {
					return done, werr
				}
			}
			if err == io.EOF && left < 0 {
				return done, send(nil, true)
			}
			if err != nil && left != 0 {
				if err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				return done, err
			}
		}
		return done, nil
	}
	for {
		dl.touch()
		line, err := hr.readLine()
		if err != nil {
			return done, chunkErr(err)
		}
		size, ok := parseChunkSize(line)
		if !ok {
			return done, errBadChunk
		}
		if size == 0 {
			return done, s.relayTrailers(hr, &dl, s.releaseEarly)
		}
		for size > 0 {
			if hr.buffered() == 0 {
				dl.touch()
				if err := hr.fill(); err != nil {
					return done, chunkErr(err)
				}
			}
			n := min(int64(hr.buffered()), size, int64(len(buf)))
			copy(buf, hr.buf[hr.r:hr.r+int(n)])
			hr.r += int(n)
			size -= n
			if werr := send(buf[:n], false); werr != nil {
				return done, werr
			}
		}
		crlf, err := hr.readLine()
		if err != nil {
			return done, chunkErr(err)
		}
		if len(crlf) != 0 {
			return done, errBadChunk
		}
	}
}

// relayTrailers reads the trailers of a chunked response and ends the
// stream with them (a HEADERS frame), or with an empty DATA frame.
func (s *h2Stream) relayTrailers(hr *headReader, dl *deadliner, release func()) error {
	var lines [][]byte
	for {
		dl.touch()
		t, err := hr.readLine()
		if err != nil {
			return chunkErr(err)
		}
		if !validTrailer(t) {
			return errBadChunk
		}
		if len(t) == 0 {
			break
		}
		// Copied: the next line may move the buffer.
		lines = append(lines, append([]byte(nil), t...))
	}
	release()
	if len(lines) == 0 {
		if err := s.writeData(nil, true); err != nil {
			return writeError{err}
		}
		return nil
	}
	err := s.sendHead(func(e *hpack.Encoder) {
		for _, l := range lines {
			i := strings.IndexByte(stringOf(l), ':')
			name := l[:i]
			if framing(name) || connSpecific(name) {
				continue
			}
			s.field(e, name, trimOWS(l[i+1:]))
		}
	}, true)
	if err != nil {
		return writeError{err}
	}
	return nil
}

// copyBody sends the request body to the server: as it came when its
// length is known, else chunked. Request trailers are not passed to an
// HTTP/1 server (as the HTTP/1 path with chunked trailers to h2c servers).
func (s *h2Stream) copyBody(w io.Writer, chunked bool) (int64, error) {
	bp := copyBufPool.Get().(*[]byte)
	defer copyBufPool.Put(bp)
	buf := *bp
	const pre = 10 // room for a chunk-size line before the data
	var done int64
	for {
		n, err := s.Read(buf[pre : len(buf)-2])
		if n > 0 {
			out := buf[pre : pre+n]
			if chunked {
				var hx [pre]byte
				h := strconv.AppendInt(hx[:0], int64(n), 16)
				h = append(h, '\r', '\n')
				start := pre - len(h)
				copy(buf[start:], h)
				buf[pre+n], buf[pre+n+1] = '\r', '\n'
				out = buf[start : pre+n+2]
			}
			if _, werr := w.Write(out); werr != nil {
				return done, writeError{werr}
			}
			done += int64(n)
		}
		if err == io.EOF {
			if chunked {
				if _, werr := w.Write([]byte("0\r\n\r\n")); werr != nil {
					return done, writeError{werr}
				}
			}
			return done, nil
		}
		if err != nil {
			return done, err
		}
	}
}
