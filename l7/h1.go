package l7

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"sluice/backend"
	"sluice/conf"
	"sluice/internal/recovery"
	"sluice/l4"
	"sluice/policy"
)

// errBodyPanic ends an exchange whose request-body copy panicked.
var errBodyPanic = errors.New("request body copy panicked")

// testBodyHook, set by tests only, runs as a request body starts to move.
var testBodyHook func()

// clientConn is the state of one client connection, reused for each of its
// requests.
type clientConn struct {
	p    *Proxy
	conn net.Conn
	info ConnInfo
	hr   *headReader
	// req and resp are the messages of msgs, lent with out for the time
	// a request is served: an idle client holds neither.
	req, resp *message
	msgs      *msgPair
	out       []byte  // outgoing head being built
	outp      *[]byte // the pool's box of out, while it is lent
	// outHead is the length of the request head at the start of out,
	// before the body bytes sent with it: kept for a resend (exchange).
	outHead int
	// bodyTaken: the request's body was read with its head into out, so
	// none is left to discard from the connection.
	bodyTaken bool
	// raw waits for a keep-alive client's next request in the poller
	// (headReader.waitRaw), when the connection allows it.
	raw      syscall.RawConn
	resumeFn func()
	// waitFn is headWait, bound once; headFirst: the head it is told of
	// is the connection's first; handedOn: serveOne parked the connection
	// (serve then reports it handed on).
	waitFn              func() bool
	headFirst, handedOn bool
	// parkIdx is 1 + the slot of a client parked with no goroutine (0:
	// not parked), and parkTimer its timeout_client (park_linux.go); both
	// under parking.mu.
	parkIdx   int32
	parkTimer *time.Timer
	// slot: this connection's goroutine holds a slot of busy (busy.go);
	// queued and qNext: it waits in busy's ready queue (under busy.mu).
	// ready: the park set found it readable, so its next read does not
	// wait (a drain serves its request rather than close it as idle).
	// first: it parked before its first request (serveConn).
	slot, queued, ready, first bool
	qNext                      *clientConn
	// idleUntil is when timeout_client ends the current keep-alive wait
	// (zero: never), for the goroutine that waits it out (resume).
	idleUntil time.Time
	// small takes the first bytes after a keep-alive wait otherwise
	// (headReader.waitIdle); allocated at the first such wait.
	small *[512]byte
	addr  string // client IP as text, computed once
	// idle is set while waitNext waits (under idleMu), woken once Drain
	// ended that wait with a past read deadline: the lock orders Drain's
	// deadline before the one a request that came meanwhile gets back.
	idleMu      sync.Mutex
	idle, woken bool
	quietSince  time.Time // when the client's last response ended
	waitDL      time.Time // the wait's own deadline (zero: none)

	// A response to insert the sticky cookie into (sticky = "cookie").
	stickyName string
	stickySrv  *backend.Server

	dl deadlines      // the client connection's write deadline
	w  deadlineWriter // writes bodies to conn through dl
	// own is the idle server connection of this client connection alone,
	// for a backend with send_proxy: its PROXY header names this client,
	// so it never goes to the shared pool.
	own *serverConn
	// up is the request in progress to an h2c server (h1up.go), nil
	// until the connection's first such request.
	up *h1Up
	// h2c: the frontend also takes HTTP/2 with prior knowledge, so a
	// first request line of no HTTP/1 version is a broken preface.
	h2c bool
	// seq numbers the connection's requests ({request_id}); edits are the
	// current one's header edits (policy.Verdict.Edits; 0: none).
	seq   uint64
	edits uint64
}

var (
	clientConnPool = sync.Pool{New: func() any { return new(clientConn) }}
	outPool        = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}
	msgPool        = sync.Pool{New: func() any { return new(msgPair) }}
)

// msgPair is the parsed request and response of an exchange; their field
// slices, grown once, come back with them from the pool.
type msgPair struct{ req, resp message }

// takeOut and returnOut lend the head-building buffer and the messages
// for the time a request is served: an idle keep-alive client holds none.
func (c *clientConn) takeOut() {
	c.outp = outPool.Get().(*[]byte)
	c.out = (*c.outp)[:0]
	c.msgs = msgPool.Get().(*msgPair)
	c.req, c.resp = &c.msgs.req, &c.msgs.resp
	c.req.maxFields, c.resp.maxFields = c.p.MaxHeaderCount, c.p.MaxHeaderCount
}

func (c *clientConn) returnOut() {
	if c.outp == nil {
		return
	}
	*c.outp = c.out[:0]
	outPool.Put(c.outp)
	c.outp, c.out = nil, nil
	// Slices into the head buffers go: a pooled pair keeps none alive.
	c.req.reset()
	c.resp.reset()
	msgPool.Put(c.msgs)
	c.msgs, c.req, c.resp = nil, nil, nil
}

// ServeConn serves HTTP/1.x requests on conn until it closes. It closes conn.
func (p *Proxy) ServeConn(conn net.Conn, info ConnInfo) { p.serveConn(conn, info, false) }

// serveConn serves conn. It reports true when it handed the connection on
// to another goroutine (only with info.Done), which closes it and calls
// info.Done at its end.
func (p *Proxy) serveConn(conn net.Conn, info ConnInfo, h2c bool) (handedOn bool) {
	c := clientConnPool.Get().(*clientConn)
	c.p, c.conn, c.info, c.h2c = p, conn, info, h2c
	c.hr = newHeadReader(conn, p.MaxHeaderBytes)
	c.takeOut()
	c.addr = info.Client.Addr().String()
	if c.info.priv == nil && p.sendsProxy() {
		c.info.priv = &privConns{}
	}
	if info.Done != nil {
		if sc, ok := conn.(syscall.Conn); ok {
			c.raw, _ = sc.SyscallConn()
			c.hr.raw = c.raw // the first request is waited for with no buffer
		}
	}
	handed := false
	defer func() {
		if !handed {
			c.finish()
		}
	}()
	if c.raw != nil {
		if slotTake() {
			c.slot = true
		} else if c.parkFirst() {
			handed = true // c is the park set's now: not touched again here
			return true
		}
	}
	handed = c.serve(true, false)
	return handed
}

// parkFirst parks a new connection past the bound before its first
// request (wrk's 8,000 connects at once are part of the peak): it waits
// in the park set, then the ready queue, holding no goroutine and no
// buffer. Its first request keeps its rules when it resumes (resume):
// timeout_http_request from the accept (else timeout_client), and 408 when
// it passes. False: it could not park, and is served here with no slot.
func (c *clientConn) parkFirst() bool {
	now := time.Now()
	c.idleUntil = time.Time{}
	switch {
	case c.p.TimeoutHTTPRequest > 0:
		start := c.info.Accepted
		if start.IsZero() {
			start = now
		}
		c.idleUntil = start.Add(c.p.TimeoutHTTPRequest)
	case c.p.TimeoutClient > 0:
		c.idleUntil = now.Add(c.p.TimeoutClient)
	}
	c.returnOut()
	c.hr.release()
	c.first = true
	if c.park() {
		return true
	}
	c.first = false
	c.takeOut()
	return false
}

// headWait is told that a head read by a slot holder must wait for the
// client. Past half the bound's slots held, a new connection that sent
// nothing yet parks (true: readHead stops with errHeadWait, serveOne
// parks it); otherwise the slot goes to the next ready connection and the
// read waits here with none. Under half, nothing changes: a client that
// connects then writes costs no park.
func (c *clientConn) headWait() bool {
	if !c.slot || busy.active.Load() <= busy.limit.Load()/2 {
		return false
	}
	if c.headFirst && c.hr.buffered() == 0 {
		return true
	}
	c.slotDrop()
	return false
}

// parkFirstHeld is parkFirst for a slot holder whose first request has
// not come: the slot goes to the next ready connection once parked.
// False (could not park): the slot is kept.
func (c *clientConn) parkFirstHeld() bool { return c.parkGiving(c.parkFirst) }

// parkGiving parks c, a slot holder, with park and gives its slot to the
// next ready connection; false (could not park): the slot is kept.
func (c *clientConn) parkGiving(park func() bool) bool {
	c.slot = false // before park: c may resume at once elsewhere
	if park() {
		slotGive()
		return true
	}
	c.slot = true
	return false
}

// finish closes the connection and puts c back in its pool.
func (c *clientConn) finish() {
	c.slotDrop()
	c.ready, c.first = false, false
	if c.own != nil {
		c.own.close()
		c.own = nil
	}
	c.info.priv.close()
	c.conn.Close()
	c.hr.release()
	c.p, c.conn, c.hr, c.raw, c.small = nil, nil, nil, nil, nil
	c.info = ConnInfo{}
	c.seq, c.edits = 0, 0
	c.returnOut()
	clientConnPool.Put(c)
}

// idleHandOff is how long a keep-alive client may stay quiet on the
// goroutine that served it before its wait moves to a fresh goroutine (see
// serve): longer than a busy client's pause between a response and its
// next request, short enough that a burst of clients going quiet never
// holds its grown stacks all at once (the resident memory keeps that
// peak). Nanoseconds, atomic for tests, which set 0: move at once.
var idleHandOff atomic.Int64

func init() { idleHandOff.Store(int64(10 * time.Millisecond)) }

// serve serves requests until the connection must close (false), or until
// it hands the connection on (true): a keep-alive client quiet for
// idleHandOff waits on from a fresh goroutine, whose stack is the
// runtime's smallest (2 KiB), and the one serving grew (8 KiB) is freed.
// Moving at every wait would cost each request a goroutine start and a
// stack growth (round trips measured 45 -> 70 µs); moving after a quiet
// spell costs the busy clients nothing. resumed says this goroutine is
// the fresh one, its wait already done.
func (c *clientConn) serve(first, resumed bool) bool {
	for {
		if !first && !resumed && c.raw != nil && c.hr.buffered() == 0 {
			if c.yieldDue() && c.yield() || !c.slot && !c.slotBack() {
				return true
			}
			switch c.waitBrief() {
			case waitEnd:
				return false
			case waitQuiet:
				held := c.slot
				c.slot = false // before park: c may resume at once elsewhere
				if c.park() {
					if held {
						slotGive()
					}
					return true
				}
				if held {
					// The goroutine that waits on is idle, not worked on.
					slotGive()
				}
				if c.resumeFn == nil {
					c.resumeFn = c.resume // bound once: kept with c in its pool
				}
				go c.resumeFn()
				return true
			}
		}
		if !c.serveOne(first) {
			handed := c.handedOn
			c.handedOn = false
			return handed
		}
		first, resumed = false, false
	}
}

// yield parks a slot holder at once after its response while other
// connections wait for a slot, and gives its slot to the first of them
// (no waitBrief: its next request queues behind theirs). False: it could
// not park, and goes on as if under the bound.
func (c *clientConn) yield() bool { return c.parkGiving(c.parkNow) }

// parkNow parks c, which holds no slot, at once after its response, for
// timeout_client. False: it could not park, and goes on here.
func (c *clientConn) parkNow() bool {
	c.idleUntil = time.Time{}
	if c.p.TimeoutClient > 0 {
		c.idleUntil = time.Now().Add(c.p.TimeoutClient)
	}
	c.returnOut()
	c.hr.release() // nothing buffered (serve's check)
	if c.park() {
		return true
	}
	c.takeOut()
	return false
}

// Outcomes of waitBrief.
const (
	waitGot   = iota // a request came
	waitQuiet        // none in idleHandOff: hand the wait on
	waitEnd          // the client left or timeout_client passed
)

// waitBrief waits for the next request on this goroutine for idleHandOff
// at most (within timeout_client), holding no buffer.
func (c *clientConn) waitBrief() int {
	now := time.Now()
	c.idleUntil = time.Time{}
	if c.p.TimeoutClient > 0 {
		c.idleUntil = now.Add(c.p.TimeoutClient)
	}
	dl := now.Add(time.Duration(idleHandOff.Load()))
	brief := c.idleUntil.IsZero() || dl.Before(c.idleUntil)
	if !brief {
		dl = c.idleUntil
	}
	c.conn.SetReadDeadline(dl)
	c.returnOut()
	err := c.hr.waitRaw(c.raw)
	switch {
	case err == nil:
		if c.p.TimeoutHTTPRequest == 0 {
			// serveOne sets no deadline of its own: timeout_client's
			// holds, as after waitNext.
			c.conn.SetReadDeadline(c.idleUntil)
		}
		c.takeOut()
		return waitGot
	case brief && isTimeout(err):
		return waitQuiet
	}
	return waitEnd
}

// resume is the fresh goroutine of a connection serve handed on: it waits
// out the rest of timeout_client on its small stack, then serves the
// request that came (the stack grows once per quiet spell).
func (c *clientConn) resume() {
	if c.first {
		// Parked before its first request (parkFirst): served as
		// serveConn would have.
		c.first = false
		c.takeOut()
		if c.p.TimeoutHTTPRequest == 0 {
			c.conn.SetReadDeadline(c.idleUntil) // serveOne sets none
		}
		c.guard(guardFirst)
		return
	}
	if c.guard(guardWait) {
		c.guard(guardServe)
	}
}

// What guard runs.
const (
	guardWait  = iota // waitNext
	guardServe        // the requests after it
	guardFirst        // the first request of a connection that parked before it
)

// guard runs the waitNext of resume (guardWait) or the serving of the
// requests after it (guardServe, guardFirst), and ends the connection when it is
// over. A panic here is outside the frontend's recover: it costs this
// connection only, counted and logged as the frontend does. It reports
// whether the connection goes on here.
func (c *clientConn) guard(what int) (goOn bool) {
	p, done := c.p, c.info.Done
	defer func() {
		if v := recover(); v != nil {
			if p.Panics != nil {
				p.Panics.Add(1)
			}
			recovery.Log(p.Log, v, "frontend", p.Frontend, "client", c.addr)
			goOn = false
			c.finish()
			done()
		}
	}()
	if what != guardWait {
		goOn = c.serve(what == guardFirst, what == guardServe) // true: handed on again
		if !goOn {
			c.finish()
			done()
		}
		return false
	}
	if !c.waitNext() {
		c.finish()
		done()
		return false
	}
	return true
}

// h1Version reports whether the request line of head ends in an HTTP/1
// version token.
func h1Version(head []byte) bool {
	line, _ := cutLine(head)
	v := line[bytes.LastIndexByte(line, ' ')+1:]
	return string(v) == "HTTP/1.1" || string(v) == "HTTP/1.0"
}

// exchange is the timing and outcome of one request, the access log's
// record: filled by the HTTP/1 and HTTP/2 paths.
type exchange struct {
	start      time.Time
	headDone   time.Time
	connected  time.Time
	respHead   time.Time
	status     int
	bytesOut   int64
	backend    string
	server     string
	srv        *backend.Server // the server chosen, for its abort counters
	srvAbort   bool            // the server broke off its response body
	retries    int
	terminated string
	proto      string // "HTTP/1.1", "HTTP/2.0": for the access log only
	method     string // copied for the access log only
	path       string
}

// waitNext waits for a keep-alive client's next request, holding no buffer:
// false when the client left or stayed quiet too long (nothing to answer).
// Its call chain is short, so that the goroutine of resume waits on the
// runtime's smallest stack.
func (c *clientConn) waitNext() bool {
	// Between requests the client may stay quiet for timeout_client; once a
	// request starts, its whole head must arrive within timeout_http_request.
	var dl time.Time
	quiet := time.Now()
	switch {
	case !c.idleUntil.IsZero():
		dl = c.idleUntil // the rest, after waitBrief
		quiet = dl.Add(-c.p.TimeoutClient)
		c.idleUntil = time.Time{}
	case c.p.TimeoutClient > 0:
		dl = quiet.Add(c.p.TimeoutClient)
	}
	c.conn.SetReadDeadline(dl) // none: clears waitBrief's, if any
	c.returnOut()
	if c.ready {
		// The park set found bytes (or the hang-up): no wait, so nothing
		// for Drain to wake; a request is served, with "Connection:
		// close" at a drain, however long it queued for a slot.
		c.ready = false
		err := c.hr.waitRaw(c.raw)
		c.takeOut()
		return err == nil
	}
	// Drain wakes the wait to close; a request already there (read before
	// the wait) is served first, with "Connection: close".
	c.idleMu.Lock()
	c.idle, c.quietSince, c.waitDL = true, quiet, dl
	c.idleMu.Unlock()
	c.p.idleH1.add(c)
	if c.p.draining.Load() {
		c.wake()
	}
	var err error
	if c.raw != nil {
		err = c.hr.waitRaw(c.raw)
	} else {
		if c.small == nil {
			c.small = new([512]byte)
		}
		err = c.hr.waitIdle(c.small[:])
	}
	c.p.idleH1.del(c)
	c.idleMu.Lock()
	woken := c.woken
	c.idle, c.woken = false, false
	c.idleMu.Unlock()
	if woken {
		if err != nil && c.raw != nil {
			// The deadline is checked before readiness: a request that
			// came while the woken goroutine waited for its turn (many wake
			// at once) would be cut. One more read takes it (waitRaw
			// reads before it waits, and the past deadline ends the wait).
			err = c.hr.waitRaw(c.raw)
		}
		if err == nil {
			// The rest of its head and its body are read under the
			// deadline the wait had.
			c.conn.SetReadDeadline(dl)
		}
	}
	c.takeOut()
	return err == nil
}

// drainQuiet is how long a keep-alive client must have been quiet for a
// drain to close it at once. A busier one keeps the rest of that time to
// send its next request, answered with "Connection: close": closing it at
// once had most clients of a busy reload write a request to a connection
// closed a moment before (an error to them; HAProxy's reloads showed
// none).
const drainQuiet = time.Second

// wake ends a waitNext in progress (Drain): its read deadline passes, now
// or once the client has been quiet for drainQuiet.
func (c *clientConn) wake() {
	c.idleMu.Lock()
	if c.idle {
		c.woken = true
		end := c.quietSince.Add(drainQuiet)
		if !c.waitDL.IsZero() && c.waitDL.Before(end) {
			end = c.waitDL
		}
		if !end.After(time.Now()) {
			end = aLongTimeAgo
		}
		c.conn.SetReadDeadline(end)
	}
	c.idleMu.Unlock()
}

// serveOne reads one request and forwards it. It returns false when the
// connection must close.
func (c *clientConn) serveOne(first bool) bool {
	p := c.p
	if !first && c.hr.buffered() == 0 && !c.waitNext() {
		return false
	}
	var x exchange
	x.start = time.Now()
	c.stickyName, c.stickySrv = "", nil
	c.bodyTaken = false
	if first {
		x.start = c.info.Accepted
	}
	if p.TimeoutHTTPRequest > 0 {
		c.conn.SetReadDeadline(x.start.Add(p.TimeoutHTTPRequest))
	}
	if c.slot {
		// A slot is for work, not for waiting on a client's bytes
		// (headWait): idle or slowloris connections holding every slot
		// would leave the others one at a time.
		if c.waitFn == nil {
			c.waitFn = c.headWait
		}
		c.hr.onWait, c.headFirst = c.waitFn, first
	}
	head, err := c.hr.readHead()
	c.hr.onWait = nil
	if err == errHeadWait {
		if c.parkFirstHeld() {
			c.handedOn = true
			return false
		}
		head, err = c.hr.readHead() // waits here, as with no slot
	}
	if err != nil {
		switch {
		case err == errHeadTooLarge:
			c.fail(failHeadTooLarge, nil, &x)
		case isTimeout(err):
			// A keep-alive client that sent nothing but the empty lines
			// readHead skips has started no request: close without a 408.
			if first || c.hr.buffered() > 0 {
				c.fail(failClientTimeout, nil, &x)
			}
		case err == io.ErrUnexpectedEOF:
			c.fail(failBadRequest, nil, &x)
		}
		return false
	}
	x.headDone = time.Now()
	p.Counters.BytesIn.Add(uint64(len(head)))
	if err := c.req.parseRequest(head); err != nil {
		if err == errTooManyFields {
			return c.fail(failTooManyHeaders, nil, &x)
		}
		if first && c.h2c && !h1Version(head) {
			// Neither HTTP/1 nor the HTTP/2 preface: a broken preface
			// (RFC 9113 §3.4), which gets no HTTP/1 answer, only the close.
			p.countFailure(failBadRequest, nil)
			return false
		}
		return c.fail(failBadRequest, nil, &x)
	}
	p.Counters.Requests.Add(1)
	c.seq++
	if p.Access != nil {
		x.method, x.path = string(c.req.method), string(c.req.target)
		x.proto = "HTTP/1.1"
		if c.req.http10 {
			x.proto = "HTTP/1.0"
		}
	}
	// The head is in the read buffer; body reads may overwrite it, so
	// everything needed from it is used (or copied) before the body moves.
	v := h1View(c.req)
	if c.acmeChallenge(&v, &x) {
		return false
	}
	// ACME's http-01 answers come first: a rule redirecting plain http
	// to https must not redirect the CA's validation.
	if p.Policy != nil {
		vd := p.decide(&v, &c.info)
		if vd.Outcome != policy.Pass {
			c.edits = 0
			return c.answerPolicy(vd, &v, &x)
		}
		c.edits = vd.Edits
	}
	be := p.route(&v)
	if be == nil {
		return c.fail(failNoRoute, nil, &x)
	}
	x.backend = be.Name
	if p.Backends[be].Proto == "h2c" {
		return c.forwardUp(be, &x, moved{}) // h1up.go
	}
	return c.forward(be, &x, moved{})
}

// maxDiscard is the largest request body read and dropped after an error
// answer to keep the connection; a larger one closes it.
const maxDiscard = 1 << 20

// discardBody reads and drops a request body so the connection can serve
// the next request; bodies too large to be worth it close the connection.
func (c *clientConn) discardBody() bool {
	switch {
	case c.bodyTaken:
		// Read with the head into c.out for a resend that could not go.
	case c.req.chunked:
		_, err := copyChunked(io.Discard, c.hr, c.p.TimeoutClient)
		return err == nil
	case c.req.contentLength > 0:
		if c.req.contentLength > maxDiscard {
			return false
		}
		_, err := copyFixed(io.Discard, c.hr, c.req.contentLength, c.p.TimeoutClient)
		return err == nil
	}
	return true
}

// replayable reports whether a request that failed before any response can
// be sent again: its body was not consumed (none) or it is idempotent with
// no body.
func (c *clientConn) hasBody() bool { return c.req.chunked || c.req.contentLength > 0 }

// forward sends the request to a server of be and relays the response;
// mv is a request moved here from the HTTP/2 path (alpn.go).
func (c *clientConn) forward(be *backend.Backend, x *exchange, mv moved) bool {
	p := c.p
	cn := backend.Connect{
		Client:  backend.Client{Addr: c.info.Client.Addr()},
		Budget:  p.ServerConns,
		Watch:   c.conn,
		Held:    mv.srv,
		Retries: mv.retries,
	}
	var cookie []byte
	if be.Sticky == "cookie" {
		v := h1View(c.req)
		cookie = v.cookie(be.StickyCookie)
		cn.Pinned = pinned(be, cookie)
	}
	fresh := false // after a stale reused connection: dial, do not reuse
	// light: nothing after exchange's write reads the request's slices
	// into the read buffer (no sticky cookie to compare with the server
	// a resend lands on, no move to the HTTP/2 path that would rebuild the
	// request), so exchange may give the buffer back while the server
	// thinks.
	light := cookie == nil && !be.TLS.Mixed()
	var sc *serverConn
	dial := func(ctx context.Context, srv *backend.Server) error {
		if moveOn(be, srv, false, mv) {
			return backend.ErrMoved
		}
		var err error
		sc, err = c.serverConn(ctx, &cn, be, fresh)
		return err
	}
	for {
		err := be.Connect(p.stopCtx(), &cn, dial)
		x.retries = cn.Retries
		if cn.Server != nil {
			x.server, x.srv = cn.Server.Name, cn.Server
		}
		if err == backend.ErrMoved {
			if mv, ok := mv.next(&cn); ok {
				return c.forwardUp(be, x, mv)
			}
			return c.fail(failConnect, be, x)
		}
		switch {
		case err == nil:
		case backend.IsConnectError(err):
			// The request was never sent: the connection can go on.
			return c.fail(failConnect, be, x)
		case errors.Is(err, backend.ErrNoServer), errors.Is(err, backend.ErrQueueTimeout), errors.Is(err, errServerConns):
			// errServerConns is not the server's fault: no retry, no
			// mark against it.
			return c.fail(failureOf(err), be, x)
		default:
			// The client left while queued, or the process stops:
			// nobody to answer, but the request is logged as the
			// net/http paths log it.
			x.terminated = "client"
			c.log(x)
			return false
		}
		srv := cn.Server
		c.stickyName, c.stickySrv = "", nil
		if setCookie(be, cookie, srv) {
			c.stickyName, c.stickySrv = be.StickyCookie, srv
		}
		x.connected = time.Now()
		keep, retry := c.exchange(sc, be, x, fresh, light)
		srv.Release()
		observe(srv, x, retry)
		if retry {
			if cn.Retries >= be.Retries {
				// No resend left: the request is answered here. With a
				// body the connection closes (fail: a body kept for the
				// resend must never be read as the next request);
				// without one it goes on.
				srv.Counters.RespErrors.Add(1)
				return c.fail(failServerError, be, x)
			}
			cn.Retries++
			x.retries = cn.Retries
			srv.Counters.Retries.Add(1)
			// A stale pooled connection is no reason to avoid the
			// server: the request goes to it again, on a new connection.
			cn.Pinned = srv
			fresh = true
			continue
		}
		return keep
	}
}

// observe tells passive observation how an exchange with srv went: a 5xx
// response (the server's or sluice's 502/504 for it) or a server timeout is
// a failure, any other response a success. A stale pooled connection that
// is retried says nothing about the server.
func observe(srv *backend.Server, x *exchange, retry bool) {
	switch {
	case retry:
	case x.status >= 500 || x.terminated == "server-timeout" || x.terminated == "server-error":
		srv.ObserveError()
	case x.status > 0:
		srv.ObserveOK()
	}
}

// serverConn returns an idle pooled connection to cn.Server or dials a
// new one (taking a slot of the budget): the callback of Backend.Connect
// on the HTTP/1 path. With send_proxy, the only connection that may be
// reused is this client connection's own, and a new one opens with the
// PROXY header.
//
// fresh asks for a new connection: the request is sent again after a
// reused one ended without a response, and it goes once more at most.
func (c *clientConn) serverConn(ctx context.Context, cn *backend.Connect, be *backend.Backend, fresh bool) (*serverConn, error) {
	srv := cn.Server
	version := c.p.Backends[be].SendProxy
	var hdr *l4.ProxyHeader
	if version != 0 {
		if sc := c.own; sc != nil && !fresh {
			c.own = nil
			if sc.srv == srv && sc.quiet() {
				sc.reused = true
				return sc, nil
			}
			sc.close()
		}
		hdr = proxyHeader(version, &c.info)
	} else if fresh {
		// Not from the pool: a second stale connection would send the
		// request a third time.
	} else if sc := c.p.getIdle(srv, be); sc != nil {
		return sc, nil
	}
	return c.p.dialServer(ctx, cn, srv, be, hdr)
}

// dialServer opens a new connection to srv for cn (a slot of the
// server-connection budget, the PROXY header hdr when not nil): the one
// dial of both HTTP paths.
func (p *Proxy) dialServer(ctx context.Context, cn *backend.Connect, srv *backend.Server, be *backend.Backend, hdr *l4.ProxyHeader) (*serverConn, error) {
	if err := cn.TakeSlot(); err != nil {
		return nil, err
	}
	conn, err := l4.DialServer(ctx, be, srv, hdr, p.Log)
	if err != nil {
		return nil, backend.ConnectFailed(err)
	}
	if wrongVersion(be, conn, false) {
		conn.Close() // the slot goes back in Connect
		return nil, backend.ErrMoved
	}
	// No SetNoDelay: Go's net sets TCP_NODELAY on every TCP connection it
	// makes (one setsockopt per connection less).
	return newServerConn(conn, srv, p.MaxHeaderBytes, p.ServerConns), nil
}

// keepServerConn keeps sc for another request: in the shared pool, or as
// this client connection's own when it carries a PROXY header.
//
// Bytes the server sent past the end of its response (a body on HEAD, 204
// or 304, more than Content-Length, more after the last chunk) would be
// read as the next request's response, perhaps another client's: such a
// connection is closed, never kept (putIdle checks it too).
func (c *clientConn) keepServerConn(sc *serverConn, be *backend.Backend) {
	opts := c.p.Backends[be]
	if opts.SendProxy == 0 {
		c.p.putIdle(sc, be)
		return
	}
	if opts.PoolMaxIdle <= 0 || c.p.draining.Load() || sc.hr.buffered() > 0 {
		sc.close()
		return
	}
	if c.own != nil {
		c.own.close()
	}
	sc.hr.release() // an idle connection holds no buffer
	c.own = sc
}

// proxyHeader is the PROXY header of a server connection made for the
// client connection of info.
func proxyHeader(version conf.ProxyVersion, info *ConnInfo) *l4.ProxyHeader {
	return &l4.ProxyHeader{
		Version:   version,
		Src:       info.Client,
		Dst:       info.Local,
		ALPN:      info.ALPN,
		Authority: info.SNI,
		UniqueID:  info.ConnID,
	}
}

// exchange writes the request on sc and relays the response. keep says
// whether the client connection may serve another request; retry that the
// request never reached the server (a stale pooled connection) and may be
// sent again. resend says this is that second go: the request, head and
// any body sent with it, is still in c.out as the first go built it (the
// read buffer under c.req may be gone). light lets it give the client's
// read buffer back while the server thinks (see forward).
func (c *clientConn) exchange(sc *serverConn, be *backend.Backend, x *exchange, resend, light bool) (keep, retry bool) {
	p := c.p
	req := c.req
	// Read all we need from the head now: once the body streams, the
	// buffer under req's slices is reused.
	isHead := equalFold(req.method, "HEAD")
	isConnect := equalFold(req.method, "CONNECT")
	// Once a request was written whole, a connection that ends without a
	// response may have delivered it: only an idempotent one (RFC 9110
	// §9.2.2) is sent again then. A POST is protected by the check before
	// reuse (quiet), which finds a connection the server closed while idle.
	idempotent := isIdempotent(req.method)
	if !resend {
		c.out = c.buildRequestHead(c.out[:0])
		c.outHead = len(c.out)
		// A small body already read with the head goes out in the same write.
		if req.contentLength > 0 && !req.chunked && int64(c.hr.buffered()) >= req.contentLength {
			n := int(req.contentLength)
			c.out = append(c.out, c.hr.buf[c.hr.r:c.hr.r+n]...)
			c.hr.r += n
			c.bodyTaken = true
		}
	}
	headLen := c.outHead
	bodyInHead := len(c.out) > headLen
	if bodyInHead {
		// Counted once the request is not to be sent again.
		defer func() {
			if !retry {
				n := len(c.out) - headLen
				p.Counters.BytesIn.Add(uint64(n))
				sc.srv.Counters.BytesIn.Add(uint64(n))
			}
		}()
	}
	if light && (!c.hasBody() || bodyInHead) && c.hr.buffered() == 0 {
		// The whole request is in c.out and nothing follows it: the
		// client's read buffer (8 KiB) goes back to the pool while the
		// server thinks, as HAProxy holds buffers only while bytes wait
		// in them. From here on req's byte slices point into a buffer
		// that may be another connection's: only its scalar fields are
		// read (the access log copied method and path).
		c.hr.release()
	}
	// retryStale gives the request another go after a reused connection
	// turned out closed by the server before any byte of a response: the
	// request, body included, is still in c.out, which holds nothing else
	// until a response comes (HAProxy does the same).
	retryStale := func() (keep, retry bool) {
		return true, true
	}
	now := time.Now()
	sc.dl.write(sc.conn, now, be.TimeoutServer)
	var err error
	// short: the answer is waited for that long first, then the slot goes
	// (serverWaitShort); not while a request body streams, whose goroutine
	// moves the read deadline.
	var short time.Duration
	if c.hasBody() && !bodyInHead {
		_, err = sc.conn.Write(c.out)
	} else {
		if short = c.serverWaitShort(); short > 0 {
			sc.conn.SetReadDeadline(now.Add(short))
			sc.dl.r = time.Time{} // the real one is set again after the wait
		} else {
			sc.dl.read(sc.conn, now, be.TimeoutServer)
		}
		var n int
		n, err = sc.writeThenRead(c.out)
		if err != nil && short > 0 && isTimeout(err) {
			// The short wait passed before the write began (this
			// goroutine waited for a core): nothing went, no fault.
			err = nil
		}
		if err == nil && n < len(c.out) {
			_, err = sc.conn.Write(c.out[n:])
		}
	}
	if err != nil {
		sc.close()
		if sc.reused && (!c.hasBody() || bodyInHead) {
			return retryStale()
		}
		return c.fail(failServerError, be, x), false
	}
	sc.srv.Counters.BytesIn.Add(uint64(headLen))

	// Stream the request body alongside reading the response, so that a
	// server that answers 100 Continue (or early) is heard.
	var bodyDone chan error
	if c.hasBody() && !bodyInHead {
		// While the body moves, timeout_client bounds the client's pauses
		// and timeout_server the server's (its write deadline); the wait
		// for the response head starts when the body is done.
		sc.conn.SetReadDeadline(time.Time{})
		sc.dl.forget()
		sc.w = deadlineWriter{conn: sc.conn, dl: &sc.dl, timeout: be.TimeoutServer}
		bodyDone = make(chan error, 1)
		go func() {
			// This goroutine is outside the connection's own recover: a
			// panic here must still cost this exchange only.
			defer func() {
				if v := recover(); v != nil {
					if p.Panics != nil {
						p.Panics.Add(1)
					}
					recovery.Log(p.Log, v, "frontend", p.Frontend, "client", c.addr, "in", "request body")
					sc.conn.Close()
					c.conn.Close()
					bodyDone <- errBodyPanic
				}
			}()
			if testBodyHook != nil {
				testBodyHook()
			}
			var n int64
			var err error
			if req.chunked {
				n, err = copyChunkedDrop(&sc.w, c.hr, p.TimeoutClient, forwardingTrailer)
			} else {
				n, err = copyFixed(&sc.w, c.hr, req.contentLength, p.TimeoutClient)
			}
			p.Counters.BytesIn.Add(uint64(n))
			sc.srv.Counters.BytesIn.Add(uint64(n))
			if err != nil {
				// A broken or abandoned body: the server waits for bytes that
				// will not come. Closing its connection ends the exchange.
				sc.conn.Close()
			} else if t := be.TimeoutServer; t > 0 {
				// The whole request is out: from now on the server has
				// timeout_server to answer.
				sc.conn.SetReadDeadline(time.Now().Add(t + slackOf(t)))
			}
			bodyDone <- err
		}()
	}
	bodyErr := func() error {
		if bodyDone == nil {
			return nil
		}
		err := <-bodyDone
		bodyDone = nil
		return err
	}

	clientClose := req.connClose || p.draining.Load()
	resp := c.resp
	gotAny := false
	for {
		if bodyDone == nil && short == 0 {
			sc.dl.read(sc.conn, time.Now(), be.TimeoutServer)
		}
		head, err := sc.hr.readHead()
		if short > 0 {
			// timeout_server from the write again, whatever came.
			short = 0
			if be.TimeoutServer > 0 {
				sc.dl.read(sc.conn, now, be.TimeoutServer)
			} else {
				sc.conn.SetReadDeadline(time.Time{})
			}
			if err != nil && isTimeout(err) {
				// No answer yet: the wait goes on without the slot, and
				// the short one is no error of the server's (readHead
				// resumes with any part of a head it read).
				c.slotDrop()
				head, err = sc.hr.readHead()
			}
		}
		if err != nil {
			sc.close()
			berr := bodyErr()
			var werr writeError
			switch {
			case berr != nil && isTimeout(berr) && !errors.As(berr, &werr):
				// The client stopped sending its body.
				return c.fail(failClientTimeout, be, x), false
			case isTimeout(err) || errors.As(berr, &werr) && isTimeout(berr):
				sc.srv.Counters.RespErrors.Add(1)
				return c.fail(failServerTimeout, be, x), false
			case errors.Is(berr, errBadChunk):
				return c.fail(failBadRequest, be, x), false
			case !gotAny && sc.reused && idempotent && (!c.hasBody() || bodyInHead) && (err == io.EOF || errors.Is(err, syscall.ECONNRESET)):
				return retryStale()
			default:
				if !sc.reused {
					l4.ServerRefusedTLS(be, sc.srv, err, p.Log)
				}
				sc.srv.Counters.RespErrors.Add(1)
				return c.fail(failServerError, be, x), false
			}
		}
		gotAny = true
		if err := resp.parseResponse(head); err != nil {
			sc.close()
			bodyErr()
			sc.srv.Counters.RespErrors.Add(1)
			return c.fail(failBadResponse, be, x), false
		}
		if resp.status >= 100 && resp.status < 200 && resp.status != 101 {
			// 100 Continue and other interim responses pass through.
			c.out = c.buildResponseHead(c.out[:0], false)
			if _, err := c.conn.Write(c.out); err != nil {
				sc.close()
				bodyErr()
				return false, false
			}
			continue
		}
		break
	}
	x.respHead = time.Now()
	x.status = resp.status

	if resp.status == 101 && !req.upgrade {
		// A switch nobody asked for: what follows is no HTTP response
		// (HAProxy: 502).
		sc.close()
		bodyErr()
		sc.srv.Counters.RespErrors.Add(1)
		return c.fail(failBadResponse, be, x), false
	}
	// A 2xx to CONNECT makes the connection a tunnel to a host the client
	// chose (RFC 9110 §9.3.6), whatever framing headers came with it: it
	// is this client's tunnel, never a pooled connection another client's
	// request could go through.
	if resp.status == 101 || isConnect && resp.status/100 == 2 {
		// The request body, if any, is the old protocol's: it is sent
		// whole before the tunnel reads the client connection, so two
		// readers never share it.
		if berr := bodyErr(); berr != nil {
			sc.close()
			return false, false
		}
		// Hand the server's head to the client, then become a tunnel. A
		// tunnel's answer has no body: no framing header goes out with it
		// (RFC 9110 §9.3.6: a 2xx to CONNECT must not carry them).
		c.resp.te, c.resp.contentLength = c.resp.te[:0], -1
		c.out = c.buildResponseHead(c.out[:0], false)
		_, err := c.conn.Write(c.out)
		c.p.count(sc.srv, resp.status, int64(len(c.out)))
		if err == nil {
			// A tunnel may last for hours: it is no request being
			// worked on, and holds no slot of busy.
			c.slotDrop()
			c.tunnel(sc, x)
		}
		sc.close()
		return false, false
	}

	// Framing of the response body towards the client.
	noBody := isHead || resp.status == 204 || resp.status == 304
	untilClose := !noBody && !resp.chunked && resp.contentLength < 0
	// An HTTP/1.0 client asked for keep-alive can have it (as HAProxy
	// does) unless the body is framed in a way it cannot read.
	if untilClose || req.http10 && (resp.chunked || len(resp.te) > 0) {
		clientClose = true
	}
	c.out = c.buildResponseHead(c.out[:0], clientClose)
	now = x.respHead // the request body may have taken long
	c.dl.write(c.conn, now, c.p.TimeoutClient)
	c.w = deadlineWriter{conn: c.conn, dl: &c.dl, timeout: p.TimeoutClient, client: c}
	// Body bytes already buffered with the head go out in the same write.
	var sent int64
	if !noBody && !resp.chunked && resp.contentLength > 0 && int64(sc.hr.buffered()) >= resp.contentLength {
		n := int(resp.contentLength)
		c.out = append(c.out, sc.hr.buf[sc.hr.r:sc.hr.r+n]...)
		sc.hr.r += n
		sent = int64(n)
	}
	srv := sc.srv
	reusable := !untilClose && !resp.connClose && !req.http10
	if bodyDone == nil && reusable && (noBody || sent > 0 || resp.contentLength == 0) {
		// The whole response is in c.out: the server connection is free
		// before the client sees the answer, so the client's next request,
		// even on another connection, finds it in the pool.
		c.keepServerConn(sc, be)
		_, err := c.writeSlotted(c.out, &c.dl, p.TimeoutClient)
		c.p.count(srv, resp.status, int64(len(c.out)))
		x.bytesOut = int64(len(c.out))
		c.log(x)
		return err == nil && !clientClose, false
	}
	if _, err := c.writeSlotted(c.out, &c.dl, p.TimeoutClient); err != nil {
		sc.close()
		bodyErr()
		return false, false
	}
	var n int64
	err = nil
	switch {
	case noBody || sent > 0 || resp.contentLength == 0:
	case resp.chunked:
		n, err = copyChunked(&c.w, sc.hr, be.TimeoutServer)
	case resp.contentLength > 0:
		n, err = copyFixed(&c.w, sc.hr, resp.contentLength, be.TimeoutServer)
	default:
		n, err = copyUntilEOF(&c.w, sc.hr, be.TimeoutServer)
	}
	// The body copy moved the read deadline; the write deadline is the
	// request body's (still moving, maybe) and stays in sc.dl.
	sc.dl.r = time.Time{}
	n += sent
	c.p.count(srv, resp.status, int64(len(c.out))-sent+n)
	x.bytesOut = int64(len(c.out)) - sent + n
	if err != nil {
		sc.close()
		bodyErr()
		x.bodyFailed(err, srv)
		c.log(x)
		return false, false
	}
	if berr := bodyErr(); berr != nil {
		// The server answered before the body was fully read (or the body
		// was broken): neither connection is in a known state any more.
		sc.close()
		if errors.Is(berr, errBadChunk) {
			p.Counters.BadRequest.Add(1)
		}
		c.log(x)
		return false, false
	}
	if reusable {
		c.keepServerConn(sc, be)
	} else {
		sc.close()
	}
	c.log(x)
	return !clientClose, false
}

// isIdempotent reports whether a method is idempotent (RFC 9110 §9.2.2):
// such a request may be sent again when a connection ends before its
// response.
func isIdempotent(m []byte) bool {
	switch string(m) { // no allocation: the compiler compares in place
	case "GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE":
		return true
	}
	return false
}

// buildRequestHead writes the request line and headers for the server:
// hop-by-hop headers dropped, forwarding headers added, Host and the
// framing written from the parsed request rather than copied.
func (c *clientConn) buildRequestHead(b []byte) []byte {
	req := c.req
	b = appendRequestStart(b, req, req.http10)
	for _, f := range req.fields {
		if framing(f.name) || equalFold(f.name, "host") || req.hopByHop(f.name) || isForwarding(f.name) ||
			c.p.dropsField(c.edits, false, f.name) {
			continue
		}
		b = append(b, f.name...)
		b = append(b, ": "...)
		b = append(b, f.value...)
		b = append(b, "\r\n"...)
	}
	b = c.p.appendEdits(b, c.edits, false, &c.info, c.seq)
	b = appendClientCert(b, c.info.Cert)
	v := h1View(req)
	for i, name := range fwdNames {
		b = append(b, name...)
		b = append(b, ": "...)
		b = c.p.appendForwardValue(b, i, &v, &c.info, c.addr)
		if i < numFwd-1 {
			b = append(b, "\r\n"...)
		}
	}
	if req.upgrade {
		b = append(b, "\r\nConnection: upgrade"...)
	} else if req.http10 {
		b = append(b, "\r\nConnection: close"...)
	}
	b = append(b, "\r\n\r\n"...)
	return b
}

func isHostChars(h []byte) bool {
	for _, c := range h {
		if c <= ' ' || c == '"' || c == '\\' || c >= 0x7f {
			return false
		}
	}
	return len(h) > 0
}

// buildResponseHead writes the status line and headers for the client.
func (c *clientConn) buildResponseHead(b []byte, close bool) []byte {
	resp := c.resp
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(resp.status), 10)
	b = append(b, ' ')
	b = append(b, resp.reason...)
	b = append(b, "\r\n"...)
	// The framing the body is relayed with, written once from the parsed
	// response: Transfer-Encoding as the server sent it (its last coding
	// decided chunked or close), else one Content-Length.
	if len(resp.te) > 0 {
		for _, v := range resp.te {
			b = append(b, "Transfer-Encoding: "...)
			b = append(b, v...)
			b = append(b, "\r\n"...)
		}
	} else if resp.contentLength >= 0 {
		b = append(b, "Content-Length: "...)
		b = strconv.AppendInt(b, resp.contentLength, 10)
		b = append(b, "\r\n"...)
	}
	// Interim responses are the server's business with the client: the
	// policy's edits go on the final one (or the switch, 101).
	edits := c.edits
	if resp.status < 200 && resp.status != 101 {
		edits = 0
	}
	for _, f := range resp.fields {
		if framing(f.name) || resp.hopByHop(f.name) || c.p.dropsField(edits, true, f.name) {
			continue
		}
		b = append(b, f.name...)
		b = append(b, ": "...)
		b = append(b, f.value...)
		b = append(b, "\r\n"...)
	}
	b = c.p.appendEdits(b, edits, true, &c.info, c.seq)
	switch {
	case resp.status == 101:
		b = append(b, "Connection: upgrade\r\n"...)
	case resp.status < 200:
	case close:
		b = append(b, "Connection: close\r\n"...)
	case c.req.http10:
		b = append(b, "Connection: keep-alive\r\n"...)
	}
	if c.stickySrv != nil && resp.status >= 200 {
		b = append(b, "Set-Cookie: "...)
		b = appendStickyCookie(b, c.stickyName, c.stickySrv.ID)
		b = append(b, "\r\n"...)
	}
	b = append(b, "\r\n"...)
	return b
}

// appendRequestStart writes what every request to an HTTP/1 server starts
// with, from the parsed request (HTTP/1 and HTTP/2 clients alike): the
// request line, Host, and the framing sluice decided, never the client's
// copy of it.
func appendRequestStart(b []byte, req *message, http10 bool) []byte {
	b = append(b, req.method...)
	b = append(b, ' ')
	b = append(b, req.target...)
	if http10 {
		b = append(b, " HTTP/1.0\r\n"...)
	} else {
		b = append(b, " HTTP/1.1\r\n"...)
	}
	if req.host != nil {
		b = append(b, "Host: "...)
		b = append(b, req.host...)
		b = append(b, "\r\n"...)
	}
	switch {
	case req.chunked:
		b = append(b, "Transfer-Encoding: chunked\r\n"...)
	case req.contentLength >= 0:
		b = append(b, "Content-Length: "...)
		b = strconv.AppendInt(b, req.contentLength, 10)
		b = append(b, "\r\n"...)
	}
	return b
}
