//go:build linux

package l7

import (
	"encoding/binary"
	"log/slog"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"golang.org/x/sys/unix"

	"sluice/backend"
	"sluice/internal/poller"
	"sluice/internal/rawio"
	"sluice/policy"
)

// The HTTP/2 fast path (see h2fast.go). Its server connections live in
// the connection pools' fast lists and are registered, for their whole
// life there, with one epoll loop of the process's (edge-triggered), which
// both reads their responses and notices one written to or closed while
// idle (HAProxy's way: no peek before each reuse).
//
// Who owns a fast connection is its state: the pool (fcIdle: the loop only
// marks it stale on input), the stream's reader while it sends (fcTaken),
// the loop (fcWait: it may claim it, fcBusy: it has). A stream goroutine
// given one (handRecv) gets it out of the loop's set first.

const (
	fcIdle = iota
	fcTaken
	fcWait
	fcBusy
)

// fastConn is the fast path's hold on one server connection.
type fastConn struct {
	loop  *fastLoop
	sc    *serverConn
	pool  *connPool
	p     *Proxy
	fd    int
	tag   int32
	state atomic.Int32
	stale atomic.Bool // input or a close while idle: not to be reused
	// pending: an event came while the reader held the connection
	// (fcTaken); the reader, once it waits, has the loop look (poke).
	pending atomic.Bool
	// Set by the stream's reader before state becomes fcWait.
	s        *h2Stream
	be       *backend.Backend
	deadline int64 // unix nanoseconds of timeout_server's end; 0: none
	// partial is when the loop first found the response's head whole and
	// its body not (0: not yet); a tick later the stream is handed on, so
	// a server that sends the rest slowly has its head relayed at once
	// after that, as on the goroutine path.
	partial int64
}

// fastLoop is one epoll loop of the fast path.
type fastLoop struct {
	pl    *poller.Poller
	mu    sync.Mutex
	conns map[int32]*fastConn
	next  int32
	kills []fastKill
	pokes []*fastConn
	// The loop goroutine's own.
	enc     *hpack.Encoder
	encB    h2Buf
	lname   []byte
	fields  []field
	now     int64
	touched []*h2Conn
	cur     *fastConn // the connection being served: the one a panic ends
}

type fastKill struct {
	fc *fastConn
	s  *h2Stream
}

var fastLoops struct {
	once  sync.Once
	loops []*fastLoop
	next  atomic.Uint32
}

// fastLoopCount is how many loops serve the fast path's connections: one
// per two scheduler slots (one on the 2-core machines measured), so that
// a many-core machine does not funnel every response through one.
func fastLoopCount() int { return max(1, runtime.GOMAXPROCS(0)/2) }

// fastTick is how often the loop looks for responses past their timeout.
const fastTick = 100 * time.Millisecond

func fastStartLoops() {
	for range fastLoopCount() {
		pl, err := poller.New()
		if err != nil {
			return // no fast path: every stream takes a goroutine
		}
		if err := pl.InGo(); err != nil {
			pl.Close()
			return
		}
		l := &fastLoop{pl: pl, conns: map[int32]*fastConn{}}
		l.enc = hpack.NewEncoder(&l.encB)
		// No dynamic table (as h2Conn's encoder): stateless blocks, and
		// the size update is written once, here, not to a client.
		l.enc.SetMaxDynamicTableSizeLimit(0)
		l.enc.WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
		l.encB.b = l.encB.b[:0]
		fastLoops.loops = append(fastLoops.loops, l)
		go l.run()
	}
}

func pickFastLoop() *fastLoop {
	fastLoops.once.Do(fastStartLoops)
	ls := fastLoops.loops
	if len(ls) == 0 {
		return nil
	}
	return ls[int(fastLoops.next.Add(1))%len(ls)]
}

// fastOK says whether a stream may take the fast path: a request without a
// body that needs nothing the fast path does not do.
func (c *h2Conn) fastOK(s *h2Stream) bool {
	if !s.endStream || s.large || s.connect || s.protocol != "" || testStreamHook != nil {
		return false
	}
	m := s.req.method
	return string(m) == "GET" || string(m) == "HEAD"
}

// fastStart serves s on the fast path if it can, from the reader: true
// when the stream is the fast path's (or handed on by it already); false
// when the caller dispatches it to a stream goroutine (which may find
// s.hand set: the fast path began the request).
func (c *h2Conn) fastStart(s *h2Stream) bool {
	if !c.fastOK(s) {
		return false
	}
	p := c.p
	l := pickFastLoop()
	if l == nil {
		return false
	}
	// serve's start, done here: a stream handed on skips it.
	x := &s.x
	x.start, x.headDone = s.start, s.start
	x.proto = "HTTP/2.0"
	if p.Access != nil {
		x.method, x.path = string(s.req.method), string(s.req.target)
	}
	p.Counters.Requests.Add(1)
	v := h1View(&s.req)
	if p.Policy != nil {
		vd := p.decide(&v, &c.info)
		if vd.Outcome != policy.Pass {
			s.hand, s.handVD = handPolicy, vd // answered (or held) by a goroutine
			return false
		}
		s.edits = vd.Edits
	}
	be := p.route(&v)
	if be == nil {
		s.hand = handNoRoute
		return false
	}
	x.backend = be.Name
	opts := p.Backends[be]
	if opts.Proto == "h2c" || opts.SendProxy != 0 || be.Sticky == "cookie" || be.TLS != nil {
		s.handTo(handRouted, be, nil, nil)
		return false
	}
	cn := &s.fcn
	*cn = backend.Connect{Client: backend.Client{Addr: c.info.Client.Addr()}, Budget: p.ServerConns, Probe: true}
	srv, err := be.TryPick(cn)
	if err != nil {
		s.handTo(handHeld, be, nil, nil) // Connect picks (and counts, and queues)
		return false
	}
	x.server, x.srv = srv.Name, srv
	now := time.Now()
	sc := p.takeFast(srv, be, l, now)
	if sc == nil {
		s.handTo(handHeld, be, srv, nil)
		return false
	}
	cn.Connected()
	x.connected = now
	fc := sc.fc
	fc.s, fc.be, fc.deadline, fc.partial = s, be, 0, 0
	if t := be.TimeoutServer; t > 0 {
		fc.deadline = now.Add(t).UnixNano()
	}
	if c.owake == nil {
		c.owake = make(chan struct{}, 1)
		c.owrite = c.writeOut
	}
	c.omu.Lock()
	c.ofast++
	start := !c.owriter
	c.owriter = true
	c.omu.Unlock()
	if start {
		go c.fastWriter()
	}
	c.mu.Lock()
	s.fast = fc
	c.mu.Unlock()
	op := outPool.Get().(*[]byte)
	out := s.buildRequestHead((*op)[:0])
	size := len(out)
	// Sent while the connection is the reader's (fcTaken): a send that
	// fails leaves it to nobody else. An event the loop sees meanwhile
	// (the answer already) is left pending, looked at once it waits; one
	// it saw before the send cannot be the answer (a server's late bytes,
	// or its close): the request does not go on that connection.
	n, err := -1, error(nil)
	if !fc.pending.Load() {
		n, err = rawio.Write(fc.fd, out)
		for err == unix.EINTR {
			n, err = rawio.Write(fc.fd, out)
		}
	}
	*op = out[:0]
	outPool.Put(op)
	if n == size {
		srv.Counters.BytesIn.Add(uint64(size))
		if h := testFastSentHook.Load(); h != nil {
			(*h)(fc.pending.Load)
		}
		fc.state.Store(fcWait)
		if fc.pending.Load() {
			l.poke(fc)
		}
		return true
	}
	// Not sent whole (the server closed the idle connection, or its
	// buffer is full), or not sent (input came first): the connection
	// is not to be used again, and the stream goes on in a goroutine, on
	// another connection.
	c.leaveFast(s)
	fc.s, fc.be = nil, nil
	sc.close()
	s.handTo(handHeld, be, srv, nil)
	return false
}

// testFastSentHook, set by tests only, runs between a fast request's send
// and its wait, with a reader of whether the loop saw an event meanwhile.
var testFastSentHook atomic.Pointer[func(pending func() bool)]

// testFastLoopHook, set by tests only, runs in the loop before it frames
// a response, with the request's target: a test panics in it.
var testFastLoopHook atomic.Pointer[func(target string)]

// poke has the loop look at fc: an event it saw while the request was
// being sent.
func (l *fastLoop) poke(fc *fastConn) {
	l.mu.Lock()
	l.pokes = append(l.pokes, fc)
	l.mu.Unlock()
	l.pl.Wake()
}

// takeFast returns an idle fast connection to srv, or an idle pooled one
// made a fast one; nil when there is none (the caller dials on a
// goroutine).
func (p *Proxy) takeFast(srv *backend.Server, be *backend.Backend, l *fastLoop, now time.Time) *serverConn {
	cp := p.pool(srv, be)
	for {
		cp.mu.Lock()
		n := len(cp.fast)
		if n == 0 {
			cp.mu.Unlock()
			break
		}
		sc := cp.fast[n-1]
		cp.fast[n-1] = nil
		cp.fast = cp.fast[:n-1]
		cp.mu.Unlock()
		if now.Sub(sc.idleSince) < cp.opts.PoolIdleTimeout && !sc.fc.stale.Load() && sc.hr.buffered() == 0 {
			sc.fc.state.Store(fcTaken)
			sc.fc.pending.Store(false)
			sc.reused = true
			return sc
		}
		sc.close()
	}
	sc := p.getIdle(srv, be) // checked quiet (a peek) before it is watched
	if sc == nil {
		return nil
	}
	if sc.raw == nil || sc.send == nil || !l.add(sc) {
		p.putIdle(sc, be)
		return nil
	}
	sc.fc.pool, sc.fc.p = cp, p
	return sc
}

// add registers sc with the loop; false when it cannot be.
func (l *fastLoop) add(sc *serverConn) bool {
	fd := -1
	if err := sc.raw.Control(func(d uintptr) { fd = int(d) }); err != nil || fd < 0 {
		return false
	}
	fc := &fastConn{loop: l, sc: sc, fd: fd}
	fc.state.Store(fcTaken) // the taker's until its request is sent
	l.mu.Lock()
	defer l.mu.Unlock()
	for {
		l.next++
		if l.next <= 0 {
			l.next = 1
		}
		if l.conns[l.next] == nil {
			break
		}
	}
	fc.tag = l.next
	if err := l.pl.AddTag(fd, unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLET, fc.tag, 1); err != nil {
		return false
	}
	l.conns[fc.tag] = fc
	sc.fc = fc
	return true
}

// forget takes fc out of the loop's set; the descriptor's close takes it
// out of the epoll set.
func (fc *fastConn) forget() {
	l := fc.loop
	l.mu.Lock()
	if l.conns[fc.tag] == fc {
		delete(l.conns, fc.tag)
	}
	l.mu.Unlock()
}

// kill has the loop end s's exchange (the client reset s, or left). c.mu
// held: the loop never takes it while holding its own lock.
func (fc *fastConn) kill(s *h2Stream) {
	l := fc.loop
	l.mu.Lock()
	l.kills = append(l.kills, fastKill{fc, s})
	l.mu.Unlock()
	l.pl.Wake()
}

func (l *fastLoop) run() {
	for !l.serve() {
	}
}

// serve is the loop; false after a recovered panic (a bug: logged, and
// the loop goes on).
func (l *fastLoop) serve() (stopped bool) {
	defer l.recoverPanic()
	events := make([]unix.EpollEvent, 256)
	owners := make([]*fastConn, len(events))
	var kills []fastKill
	var pokes []*fastConn
	var due []*fastConn
	lastScan := time.Now().UnixNano()
	busy := false
	for {
		n := 0
		var err error
		if busy {
			n, err = l.pl.PollNow(events)
		}
		if n <= 0 && err == nil {
			n, err = l.pl.WaitGo(events, fastTick)
		}
		if err != nil {
			n = 0
			time.Sleep(fastTick) // epoll_wait failing: do not spin
		}
		busy = n > 0
		l.now = time.Now().UnixNano()
		l.mu.Lock()
		for i := range n {
			owners[i] = nil
			if events[i].Pad != 0 {
				owners[i] = l.conns[events[i].Fd]
			}
		}
		kills = append(kills[:0], l.kills...)
		clear(l.kills)
		l.kills = l.kills[:0]
		pokes = append(pokes[:0], l.pokes...)
		clear(l.pokes)
		l.pokes = l.pokes[:0]
		if l.now-lastScan >= int64(fastTick) {
			lastScan = l.now
			due = due[:0]
			for _, fc := range l.conns {
				if fc.state.Load() == fcWait && (fc.deadline != 0 && l.now > fc.deadline ||
					fc.partial != 0 && l.now-fc.partial >= int64(fastTick)) {
					due = append(due, fc)
				}
			}
		}
		l.mu.Unlock()
		for i := range n {
			if events[i].Pad == 0 {
				l.pl.Drain()
				continue
			}
			if fc := owners[i]; fc != nil {
				owners[i] = nil
				l.cur = fc
				l.event(fc)
			}
		}
		for i, fc := range pokes {
			pokes[i] = nil
			if fc.state.CompareAndSwap(fcWait, fcBusy) {
				l.cur = fc
				l.receive(fc)
			}
		}
		for i, k := range kills {
			kills[i] = fastKill{}
			l.cur = k.fc
			l.kill(k)
		}
		for i, fc := range due {
			due[i] = nil
			l.cur = fc
			if fc.state.CompareAndSwap(fcWait, fcBusy) {
				if fc.deadline != 0 && l.now > fc.deadline {
					l.hand(fc, handTimeout)
				} else {
					l.hand(fc, handRecv) // a body slow to come
				}
			}
		}
		due = due[:0]
		l.cur = nil
		l.wakeTouched()
	}
}

// recoverPanic, deferred by serve, logs and counts a panic of the loop
// (a bug), and leaves nothing waiting on it: the writers of the batch are
// woken, and the stream being served (l.cur, if not answered yet) is reset
// by a stream goroutine, its server connection closed.
func (l *fastLoop) recoverPanic() {
	v := recover()
	if v == nil {
		return
	}
	FastLoopPanics.Add(1)
	slog.Error("HTTP/2 fast path loop panicked; it goes on", "panic", v, "stack", string(debug.Stack()))
	fc := l.cur
	l.cur = nil
	if fc != nil && fc.s != nil {
		s, sc := fc.s, fc.sc
		fc.s, fc.be = nil, nil
		if sc.fc == fc {
			sc.close()
		} else {
			sc.conn.Close()
		}
		sc.srv.Release()
		c := s.c
		if p := c.p; p.Panics != nil {
			p.Panics.Add(1)
		}
		c.leaveFast(s)
		s.hand = handAbort
		c.dispatch(s)
	}
	l.wakeTouched()
}

// touch marks c as having frames or finished streams in the loop's batch:
// its writer is woken once, at the batch's end (wakeTouched).
func (l *fastLoop) touch(c *h2Conn) {
	if !c.otouched {
		c.otouched = true
		l.touched = append(l.touched, c)
	}
}

// wakeTouched wakes the writers of the connections the batch touched.
func (l *fastLoop) wakeTouched() {
	for i, c := range l.touched {
		l.touched[i] = nil
		c.otouched = false
		c.wakeWriter()
	}
	l.touched = l.touched[:0]
}

// leaveFast takes s off the fast path (a stream goroutine serves it
// from now on, or nothing does): the writer owes it nothing, and ends
// once nothing is owed on a connection that is gone.
func (c *h2Conn) leaveFast(s *h2Stream) {
	c.mu.Lock()
	s.fast = nil
	c.mu.Unlock()
	c.omu.Lock()
	c.ofast--
	wake := c.oclosed && c.ofast == 0
	c.omu.Unlock()
	if wake {
		c.wakeWriter()
	}
}

// wakeWriter wakes the connection's writer, if it is not woken already.
func (c *h2Conn) wakeWriter() {
	select {
	case c.owake <- struct{}{}:
	default:
	}
}

// event serves an epoll event of fc.
func (l *fastLoop) event(fc *fastConn) {
	switch fc.state.Load() {
	case fcIdle:
		// Input on an idle connection (a late byte, a close): the next
		// request must not go on it. A peek tells it from the end of
		// the response the loop has read already.
		var b [1]byte
		n, _, err := unix.Recvfrom(fc.fd, b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		if err != unix.EAGAIN || n > 0 {
			fc.stale.Store(true)
			l.dropIdle(fc)
		}
	case fcTaken:
		// The reader is sending: it pokes the loop once it waits, if it
		// sees this; if it waited already, the loop looks now.
		fc.pending.Store(true)
		if fc.state.CompareAndSwap(fcWait, fcBusy) {
			l.receive(fc)
		}
	case fcWait:
		if fc.state.CompareAndSwap(fcWait, fcBusy) {
			l.receive(fc)
		}
	}
}

// receive reads what the server sent for fc's stream and, with the whole
// response in, frames it for the client.
func (l *fastLoop) receive(fc *fastConn) {
	hr := fc.sc.hr
	if hr.buf == nil {
		hr.acquire()
	}
	for hr.w < len(hr.buf) {
		want := len(hr.buf) - hr.w
		n, err := rawio.Read(fc.fd, hr.buf[hr.w:])
		if err == unix.EINTR {
			continue
		}
		if n > 0 {
			hr.w += n
			if n < want {
				break // drained: the next bytes bring another event
			}
			continue
		}
		if err == unix.EAGAIN {
			break
		}
		// The end, or an error: a goroutine reads it again and answers
		// (or sends the request again on another connection).
		l.hand(fc, handRecv)
		return
	}
	if hr.w == 0 {
		hr.release()
		fc.state.Store(fcWait)
		return
	}
	l.tryDeliver(fc)
}

// tryDeliver frames a response whole in fc's buffer for the client, or
// waits for more of it, or hands the stream on.
func (l *fastLoop) tryDeliver(fc *fastConn) {
	sc, s := fc.sc, fc.s
	hr := sc.hr
	data := hr.buf[hr.r:hr.w]
	i, end := headEnd(data, 0)
	if i < 0 {
		if hr.w == len(hr.buf) {
			l.hand(fc, handRecv) // a large head: the goroutine's reader grows
		} else {
			fc.state.Store(fcWait)
		}
		return
	}
	resp := &s.resp
	// The loop's scratch for the fields (a head of more than the
	// stream's four grows it once, not once per response).
	resp.fields = l.fields[:0]
	err := resp.parseResponse(data[:i+1])
	l.fields = resp.fields[:0]
	if err != nil || resp.status < 200 || resp.status == 101 {
		l.hand(fc, handRecv)
		return
	}
	isHead := string(s.req.method) == "HEAD"
	noBody := isHead || resp.status == 204 || resp.status == 304 || !resp.chunked && resp.contentLength == 0
	if !noBody && (resp.chunked || resp.contentLength < 0) {
		l.hand(fc, handRecv)
		return
	}
	bodyLen := 0
	if !noBody {
		bodyLen = int(resp.contentLength)
		if resp.contentLength > int64(len(hr.buf)) || end+bodyLen > len(hr.buf) {
			l.hand(fc, handRecv)
			return
		}
	}
	switch {
	case end+bodyLen > len(data):
		// The rest of the body is to come, most often in the next
		// segment (a head and body written apart): wait for it, a tick
		// at most (then the scan hands it on, and the goroutine relays
		// what is here and the rest as it comes).
		if fc.partial == 0 {
			fc.partial = l.now
		}
		resp.fields = s.respSpace[:0]
		fc.state.Store(fcWait)
		return
	case end+bodyLen < len(data):
		l.hand(fc, handRecv) // more than the response: the goroutine path closes it
		return
	}
	if h := testFastLoopHook.Load(); h != nil {
		(*h)(string(s.req.target))
	}
	c := s.c
	// The head's block, from the loop's encoder.
	l.encB.b = l.encB.b[:0]
	s.encodeRespHead(l.enc, &l.lname, resp, "", "")
	block := l.encB.b
	c.mu.Lock()
	gone := s.reset != nil
	if !gone {
		maxFrame := int(c.peerMaxFrame)
		if len(block) > maxFrame || bodyLen > maxFrame || int64(bodyLen) > s.sendWin || int64(bodyLen) > c.sendWin {
			c.mu.Unlock()
			l.hand(fc, handRecv) // the goroutine path splits or waits
			return
		}
		s.sendWin -= int64(bodyLen)
		c.sendWin -= int64(bodyLen)
		s.done = true
		s.served = true
	}
	s.fast = nil
	c.mu.Unlock()
	fc.s, fc.be = nil, nil // the stream is answered from here on (see recoverPanic)
	x := &s.x
	srv := sc.srv
	x.respHead = time.Unix(0, l.now)
	if gone {
		x.terminated = "client"
	} else {
		x.status = resp.status
		x.bytesOut = int64(bodyLen)
		p := c.p
		p.Counters.H2Fast.Add(1)
		if bodyLen > 0 {
			p.Counters.BytesOut.Add(uint64(bodyLen))
			srv.Counters.BytesOut.Add(uint64(bodyLen))
		}
		p.count(srv, resp.status, int64(bodyLen))
	}
	keep := !resp.connClose
	c.omu.Lock()
	if !gone {
		flags := http2.FlagHeadersEndHeaders
		if noBody {
			flags |= http2.FlagHeadersEndStream
		}
		c.obuf = appendFrameHeader(c.obuf, len(block), http2.FrameHeaders, flags, s.id)
		c.obuf = append(c.obuf, block...)
		if !noBody {
			c.obuf = appendFrameHeader(c.obuf, bodyLen, http2.FrameData, http2.FlagDataEndStream, s.id)
			c.obuf = append(c.obuf, data[end:end+bodyLen]...)
		}
	}
	c.odone = append(c.odone, s)
	c.omu.Unlock()
	l.touch(c)
	resp.fields = s.respSpace[:0]
	hr.release()
	l.putFast(sc, keep)
	srv.Release()
	if !gone {
		observe(srv, x, false)
	}
}

// appendFrameHeader appends an HTTP/2 frame header (RFC 9113 §4.1).
func appendFrameHeader(b []byte, n int, t http2.FrameType, flags http2.Flags, id uint32) []byte {
	b = append(b, byte(n>>16), byte(n>>8), byte(n), byte(t), byte(flags))
	return binary.BigEndian.AppendUint32(b, id&(1<<31-1))
}

// putFast gives a fast connection whose response is read whole back to its
// pool's fast list, or closes it.
func (l *fastLoop) putFast(sc *serverConn, keep bool) {
	fc := sc.fc
	cp := fc.pool
	if !keep || cp.opts.PoolMaxIdle <= 0 || fc.p.draining.Load() {
		sc.close()
		return
	}
	sc.idleSince = time.Unix(0, l.now)
	fc.stale.Store(false)
	fc.state.Store(fcIdle)
	cp.push(sc, &cp.fast)
}

// dropIdle closes a stale idle connection still in its pool (taken
// meanwhile, its taker sees it stale).
func (l *fastLoop) dropIdle(fc *fastConn) {
	cp := fc.pool
	cp.mu.Lock()
	for i, sc := range cp.fast {
		if sc.fc == fc {
			cp.fast = append(cp.fast[:i], cp.fast[i+1:]...)
			cp.fast[len(cp.fast):cap(cp.fast)][0] = nil
			cp.mu.Unlock()
			sc.close()
			return
		}
	}
	cp.mu.Unlock()
}

// kill ends the exchange of a stream the client reset or left, if the
// loop still waits for its response: the connection, its response
// unread, is closed.
func (l *fastLoop) kill(k fastKill) {
	fc := k.fc
	if !fc.state.CompareAndSwap(fcWait, fcBusy) {
		return // answered, handed on, or another stream's by now
	}
	if fc.s != k.s {
		fc.state.Store(fcWait)
		return
	}
	s, sc := fc.s, fc.sc
	srv := sc.srv
	fc.s, fc.be = nil, nil
	sc.close()
	srv.Release()
	s.x.terminated = "client"
	c := s.c
	c.mu.Lock()
	s.fast = nil
	c.mu.Unlock()
	c.omu.Lock()
	c.odone = append(c.odone, s)
	c.omu.Unlock()
	l.touch(c)
}

// hand gives fc's stream, and the connection, to a stream goroutine
// (fc is the loop's: fcBusy).
func (l *fastLoop) hand(fc *fastConn, kind int) {
	s, sc, be := fc.s, fc.sc, fc.be
	fc.s, fc.be = nil, nil
	// Out of the loop's set: the goroutine reads it through Go's poller.
	l.pl.Del(fc.fd)
	fc.forget()
	sc.fc = nil
	sc.hr.r, sc.hr.scanned = 0, 0
	if sc.hr.w == 0 {
		sc.hr.release()
	}
	s.resp.fields = s.respSpace[:0]
	c := s.c
	c.leaveFast(s)
	s.handTo(kind, be, sc.srv, sc)
	c.dispatch(s)
}

// fastWriter writes what the loop framed for this connection and finishes
// the streams it ends, until the connection is gone and no fast stream is
// left.
func (c *h2Conn) fastWriter() {
	fastWriters.Add(1)
	defer fastWriters.Add(-1)
	idle := time.NewTimer(h2ParkIdle)
	defer idle.Stop()
	for {
		select {
		case <-c.owake:
		case <-idle.C:
			// A second without a fast stream: the goroutine (and the
			// stack its writes grew) goes; the next fast stream starts
			// another, as parked stream goroutines go (h2ParkIdle).
			c.omu.Lock()
			if c.ofast == 0 && len(c.obuf) == 0 && len(c.odone) == 0 {
				c.owriter = false
				c.omu.Unlock()
				return
			}
			c.omu.Unlock()
			idle.Reset(h2ParkIdle)
			continue
		}
		for {
			c.omu.Lock()
			buf, done := c.obuf, c.odone
			c.obuf, c.odone = c.ospare[:0], c.odspare[:0]
			c.omu.Unlock()
			if len(buf) > 0 {
				c.owbuf = buf
				c.writeFlush(c.owrite, false, false)
				c.owbuf = nil
			}
			for i, s := range done {
				done[i] = nil
				s.log(&s.x)
				s.cancel()
				c.streamDone(s)
			}
			c.omu.Lock()
			c.ospare, c.odspare = buf[:0], done[:0]
			c.ofast -= len(done)
			more := len(c.obuf) > 0 || len(c.odone) > 0
			exit := !more && c.oclosed && c.ofast == 0
			if exit {
				c.owriter = false
			}
			c.omu.Unlock()
			if exit {
				return
			}
			if !more {
				break
			}
		}
		idle.Reset(h2ParkIdle)
	}
}

// fastWriters counts the fast path's writer goroutines running.
var fastWriters atomic.Int32

// writeOut is the writer's write: the frames in owbuf. Under wmu.
func (c *h2Conn) writeOut() error {
	_, err := c.bw.Write(c.owbuf)
	return err
}

// fastClosed tells the writer the connection is gone (shutdown).
func (c *h2Conn) fastClosed() {
	c.omu.Lock()
	c.oclosed = true
	c.omu.Unlock()
	if c.owake != nil {
		c.wakeWriter()
	}
}
