package l7

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"sluice/backend"
	"sluice/l4"
)

// sluice's own HTTP/2 client, for proto = "h2c" servers (gRPC), the
// counterpart of h2conn.go: x/net's Framer and hpack frame and compress,
// this file keeps the connections (one reader goroutine each dispatching
// frames to streams, writes under a lock flushed by the last writer
// waiting, flow control both ways) and a pool of them per server, shared
// by every client (streams multiplexed up to the server's
// MAX_CONCURRENT_STREAMS, another connection opened when full).
//
// Memory is bounded as on the client side: a server may send ahead what
// the windows advertised allow (upStreamWindow per stream, upConnWindow
// per connection), given back only as the client stream takes it, so a
// slow client stops its server stream, never makes sluice buffer.

const (
	upStreamWindow = 1 << 16 // receive window of each upstream stream
	upConnWindow   = 1 << 20 // receive window of an upstream connection
	// upReplayMax is how much request body a stream keeps to send it again
	// on another connection when the server refuses the stream (GOAWAY,
	// REFUSED_STREAM: never processed); past it, a refused stream fails.
	upReplayMax = 1 << 16
	// upMaxRefused bounds the refusals one request goes through.
	upMaxRefused = 8
	// upMaxDials bounds the connections one request dials: its refused
	// retries go on pooled connections past it, or fail.
	upMaxDials = 2
)

var (
	errUpGone    = errors.New("server connection gone")
	errUpRefused = errors.New("stream refused by the server")
	errUpClosed  = errors.New("upstream stream closed") // by our side
	// errUpNoStreams: the server takes no stream now
	// (SETTINGS_MAX_CONCURRENT_STREAMS 0), or this request dialed
	// upMaxDials connections already: it is refused, never sent.
	// errUpBadResponse: the server's response head is no valid response
	// (failBadResponse, 502, as on the HTTP/1 path).
	errUpBadResponse = errors.New("invalid response from the server")
	errUpNoStreams   = errors.New("server takes no stream (SETTINGS_MAX_CONCURRENT_STREAMS 0)")
)

// upReset is a server's RST_STREAM.
type upReset http2.ErrCode

func (e upReset) Error() string { return "server reset the stream: " + http2.ErrCode(e).String() }

// upPool holds the HTTP/2 connections to one server: shared by every
// client, or (send_proxy) one client connection's own.
type upPool struct {
	mu    sync.Mutex
	conns []*h2Up
	dead  bool         // the client connection of a private pool is gone
	idle  atomic.Int32 // connections without a stream, kept (pool_max_idle)
}

// h2Up is one HTTP/2 connection to a server.
type h2Up struct {
	p      *Proxy
	pool   *upPool
	srv    *backend.Server
	conn   net.Conn
	budget *backend.ServerConns
	idle   time.Duration // pool_idle_timeout
	// maxIdle is pool_max_idle: idle connections kept per server.
	maxIdle int
	fr      *http2.Framer
	br      *bufio.Reader

	wmu   sync.Mutex
	bw    *bufio.Writer
	wfr   *http2.Framer
	enc   *hpack.Encoder
	encB  h2Buf
	werr  error
	wwait atomic.Int32
	dirty atomic.Bool
	wdl   lazyDeadline

	// WINDOW_UPDATEs not yet written (sendWindow): whoever holds wmu
	// writes them before it lets go, so that giving window back never
	// waits on a writer the server holds up (an upload to a server that
	// stopped reading), and the response it is for goes on meanwhile.
	pmu      sync.Mutex
	pendConn int64
	pendWins []upWin
	pending  atomic.Bool

	mu           sync.Mutex
	streams      map[uint32]*upStream
	nextID       uint32
	active       int // streams reserved or open
	maxStreams   uint32
	sendWin      int64
	peerInitWin  int64
	peerMaxFrame uint32
	connUnacked  int64
	goaway       bool // no new streams: GOAWAY received, ids spent, or closing
	goawayID     uint32
	closed       bool
	isIdle       bool // counted in pool.idle
	idleTimer    *time.Timer
}

// upStream is one request on an h2Up.
type upStream struct {
	u  *h2Up
	id uint32
	// Guarded by u.mu.
	status   int
	interim  int // a 1xx status not yet relayed
	head     []hpack.HeaderField
	gotHead  bool
	in       []byte
	clen     int64 // the response's content-length; -1: none
	unacked  int64
	recvWin  int64
	ended    bool // END_STREAM from the server
	trailers []hpack.HeaderField
	err      error // reset, refused, or the connection gone
	sendWin  int64
	local    bool // our side ended the stream (END_STREAM or RST_STREAM)
	gone     bool // the server ended it (RST_STREAM, GOAWAY) or the connection did
	released bool
	// rd wakes the response reader, wr the request body writer.
	rd, wr waker
}

// upReader flushes the reader's own replies before it blocks on a read.
type upReader struct{ u *h2Up }

func (r upReader) Read(b []byte) (int, error) {
	if r.u.dirty.Load() {
		r.u.write(nil, false, false)
	}
	return r.u.conn.Read(b)
}

// upClient is the client side of a request to an h2c server: an HTTP/2
// stream (h2Stream) or the current request of an HTTP/1 connection (h1Up,
// h1up.go). The connect, retry and exchange rules below are the same for
// both; only how the request is read and the response written differ.
type upClient interface {
	proxy() *Proxy
	upInfo() *ConnInfo
	upReq() *message // the request head, for the sticky cookie
	upCtx() context.Context
	// encodeUpHead encodes the request head for the server.
	encodeUpHead(e *hpack.Encoder)
	// Read reads the request body (io.EOF at its end); upTrailers are
	// its trailers, once Read returned io.EOF.
	Read(b []byte) (int, error)
	upTrailers() []hpack.HeaderField
	// startBody runs before the body's copy starts (HTTP/1: the 100
	// Continue a client waits for).
	startBody()
	// canResend says whether a stream the server refused may go again.
	canResend() bool
	upInterim(code int)
	// upWhole says the whole response is in hand before its head goes:
	// an HTTP/2 client's stream then writes it with the other streams
	// ready at the time, in one flush (h2Stream.setReady).
	upWhole()
	upHead(status int, head []hpack.HeaderField, cookie string, srv *backend.Server, end, lazy bool) error
	writeData(b []byte, end bool) error
	upEnd(trailers []hpack.HeaderField) error
	upAbort(code http2.ErrCode) // the response broke off: reset/close towards the client
	// upRefused answers a request the server would take no stream for
	// (never sent): REFUSED_STREAM to an HTTP/2 client, which may send it
	// again, 503 to an HTTP/1 one; counted as failNoServer.
	upRefused(be *backend.Backend, x *exchange)
	clientBroke(err error) // writing the response to the client failed
	upDone()               // the response went out whole
	stopBody()             // the request body is no longer wanted
	fail(f failure, be *backend.Backend, x *exchange)
	log(x *exchange)
}

// upPoolOf returns the pool of srv: with send_proxy, that of the client
// connection of info.
func (p *Proxy) upPoolOf(srv *backend.Server, info *ConnInfo, priv bool) *upPool {
	if priv {
		return info.priv.upPool(srv)
	}
	if v, ok := p.ups.Load(srv); ok {
		return v.(*upPool)
	}
	v, _ := p.ups.LoadOrStore(srv, &upPool{})
	return v.(*upPool)
}

// openUp opens a stream to cn.Server for the request of cl: on a pooled
// connection with room, else on a new one (a slot of the budget, the
// PROXY header of the client with send_proxy). It is the callback of
// Backend.Connect; the stream's HEADERS are out when it returns.
func openUp(ctx context.Context, cl upClient, cn *backend.Connect, be *backend.Backend, ub *upBody, dials *int) (*upStream, error) {
	p := cl.proxy()
	info := cl.upInfo()
	srv := cn.Server
	opts := p.Backends[be]
	priv := opts.SendProxy != 0 && info.priv != nil
	pool := p.upPoolOf(srv, info, priv)
	for range 4 {
		u := pool.reserve()
		if u == nil {
			break
		}
		us, err := u.open(cl, ub)
		if err == nil {
			return us, nil
		}
	}
	if *dials >= upMaxDials {
		return nil, errUpNoStreams
	}
	*dials++
	var hdr *l4.ProxyHeader
	if priv {
		hdr = proxyHeader(opts.SendProxy, info)
	}
	u, err := p.dialUp(ctx, cn, srv, be, hdr, pool)
	if err != nil {
		return nil, err
	}
	us, err := u.open(cl, ub)
	if err != nil {
		return nil, backend.ConnectFailed(err)
	}
	return us, nil
}

// reserve takes a stream of a connection with room, or nil.
func (pl *upPool) reserve() *h2Up {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	for i := len(pl.conns) - 1; i >= 0; i-- {
		u := pl.conns[i]
		u.mu.Lock()
		if !u.goaway && !u.closed && u.active < int(u.maxStreams) {
			u.active++
			u.idleTimer.Stop()
			u.notIdleLocked()
			u.mu.Unlock()
			return u
		}
		u.mu.Unlock()
	}
	return nil
}

func (pl *upPool) remove(u *h2Up) {
	pl.mu.Lock()
	for i, x := range pl.conns {
		if x == u {
			pl.conns = append(pl.conns[:i], pl.conns[i+1:]...)
			break
		}
	}
	pl.mu.Unlock()
}

// closeIdle closes the connections without a stream; dead: the pool's
// client is gone, the rest close as their streams end.
func (pl *upPool) closeIdle(dead bool) {
	pl.mu.Lock()
	if dead {
		pl.dead = true
	}
	var idle []*h2Up
	for _, u := range pl.conns {
		u.mu.Lock()
		if u.active == 0 {
			u.goaway = true
			idle = append(idle, u)
		} else if dead {
			u.goaway = true
		}
		u.mu.Unlock()
	}
	pl.mu.Unlock()
	for _, u := range idle {
		u.close()
	}
}

// closeIdleUp closes the idle HTTP/2 server connections of p.
func (p *Proxy) closeIdleUp() {
	p.ups.Range(func(_, v any) bool {
		v.(*upPool).closeIdle(false)
		return true
	})
}

// dialUp opens a connection to srv for pool: preface and SETTINGS out,
// the server's SETTINGS read (its MAX_CONCURRENT_STREAMS known before the
// first stream), then its reader runs. The slot of the budget is the
// connection's from now on.
func (p *Proxy) dialUp(ctx context.Context, cn *backend.Connect, srv *backend.Server, be *backend.Backend, hdr *l4.ProxyHeader, pool *upPool) (*h2Up, error) {
	if err := cn.TakeSlot(); err != nil {
		return nil, err
	}
	conn, err := l4.DialServer(ctx, be, srv, hdr, p.Log)
	if err != nil {
		return nil, backend.ConnectFailed(err)
	}
	if wrongVersion(be, conn, true) {
		conn.Close() // the slot goes back in Connect
		return nil, backend.ErrMoved
	}
	cn.Slot = false // released by u.close
	opts := p.Backends[be]
	u := &h2Up{p: p, pool: pool, srv: srv, conn: conn, budget: p.ServerConns, idle: opts.PoolIdleTimeout,
		maxIdle: opts.PoolMaxIdle, streams: map[uint32]*upStream{}, nextID: 1, maxStreams: 100, sendWin: 65535,
		peerInitWin: 65535, peerMaxFrame: 16384}
	u.idleTimer = time.AfterFunc(time.Hour, u.idleCheck)
	u.idleTimer.Stop()
	u.br = bufio.NewReaderSize(upReader{u}, 16<<10)
	u.bw = bufio.NewWriterSize(conn, 16<<10)
	u.wdl.timeout = be.TimeoutServer
	u.fr = http2.NewFramer(nil, u.br)
	u.fr.SetMaxReadFrameSize(h2MaxFrame)
	u.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	u.fr.MaxHeaderListSize = uint32(max(p.MaxHeaderBytes, 16<<10))
	u.wfr = http2.NewFramer(u.bw, nil)
	u.enc = hpack.NewEncoder(&u.encB)
	// No dynamic table: header strings point into reused buffers.
	u.enc.SetMaxDynamicTableSizeLimit(0)
	fail := func(err error) (*h2Up, error) {
		u.close()
		return nil, backend.ConnectFailed(err)
	}
	err = u.write(func() error {
		if _, err := u.bw.WriteString(preface); err != nil {
			return err
		}
		if err := u.wfr.WriteSettings(
			http2.Setting{ID: http2.SettingEnablePush, Val: 0},
			http2.Setting{ID: http2.SettingInitialWindowSize, Val: upStreamWindow},
			http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: u.fr.MaxHeaderListSize},
		); err != nil {
			return err
		}
		return u.wfr.WriteWindowUpdate(0, upConnWindow-65535)
	}, false, false)
	if err != nil {
		return fail(err)
	}
	if t := be.TimeoutConnect; t > 0 {
		conn.SetReadDeadline(time.Now().Add(t))
	}
	f, err := u.fr.ReadFrame()
	conn.SetReadDeadline(time.Time{})
	if err != nil {
		l4.ServerRefusedTLS(be, srv, err, p.Log)
		return fail(err)
	}
	sf, ok := f.(*http2.SettingsFrame)
	if !ok || sf.IsAck() {
		return fail(errors.New("server did not start with SETTINGS"))
	}
	if err := u.settings(sf); err != nil {
		return fail(err)
	}
	// The caller's stream is counted once the server's limit is known: a
	// server taking none (shedding load) gets none, and no connection
	// kept open that can carry nothing.
	if u.maxStreams == 0 {
		u.close()
		return nil, errUpNoStreams
	}
	u.active = 1
	pool.mu.Lock()
	if pool.dead {
		u.goaway = true
	}
	pool.conns = append(pool.conns, u)
	pool.mu.Unlock()
	go u.readLoop()
	return u, nil
}

// write runs fn under the write lock and flushes unless another writer
// waits (it will flush), lazy, or (reader) more input is buffered: the
// reader flushes before it blocks. fn nil: flush only.
func (u *h2Up) write(fn func() error, reader, lazy bool) error {
	u.wwait.Add(1)
	u.wmu.Lock()
	u.wwait.Add(-1)
	defer u.unlockW()
	return u.writeLocked(fn, reader, lazy)
}

// upWin is a stream's WINDOW_UPDATE waiting to be written.
type upWin struct {
	id  uint32
	inc int64
}

// unlockW lets go of the write lock, then writes the WINDOW_UPDATEs left
// for its holder.
func (u *h2Up) unlockW() {
	u.wmu.Unlock()
	if u.pending.Load() {
		u.flushWindows()
	}
}

// flushWindows writes the pending WINDOW_UPDATEs when the write lock is
// free; when it is not, its holder does (unlockW). Those added while it
// writes are written too.
func (u *h2Up) flushWindows() {
	for u.pending.Load() {
		if !u.wmu.TryLock() {
			return // the holder's unlockW writes them
		}
		u.pmu.Lock()
		conn, wins := u.pendConn, u.pendWins
		u.pendConn, u.pendWins = 0, nil
		u.pending.Store(false)
		u.pmu.Unlock()
		u.writeLocked(func() error {
			if conn > 0 {
				if err := u.wfr.WriteWindowUpdate(0, uint32(conn)); err != nil {
					return err
				}
			}
			for _, w := range wins {
				if err := u.wfr.WriteWindowUpdate(w.id, uint32(w.inc)); err != nil {
					return err
				}
			}
			return nil
		}, false, false)
		u.wmu.Unlock()
	}
}

func (u *h2Up) writeLocked(fn func() error, reader, lazy bool) error {
	if u.werr != nil {
		return u.werr
	}
	// The deadline moves before fn: a frame larger than the buffer's
	// room goes to the socket at once.
	if t, ok := u.wdl.next(); ok {
		u.conn.SetWriteDeadline(t)
	}
	var err error
	if fn != nil {
		err = fn()
	}
	if err == nil {
		if u.wwait.Load() > 0 || reader && u.br.Buffered() > 0 || lazy {
			u.dirty.Store(true)
			return nil
		}
		if u.bw.Buffered() > 0 {
			err = u.bw.Flush()
		}
		u.dirty.Store(false)
	}
	if err != nil {
		u.werr = err
		u.conn.Close()
	}
	return err
}

// open sends the request head of cl as a new stream; ub (nil: no body)
// says what of the body goes with it. The stream was reserved (active).
func (u *h2Up) open(cl upClient, ub *upBody) (*upStream, error) {
	us := &upStream{u: u, recvWin: upStreamWindow, clen: -1, rd: newWaker(), wr: newWaker()}
	batch, err := u.openLocked(us, cl, ub == nil)
	if err != nil {
		return nil, err
	}
	if batch {
		// The client connections' readers start their streams in
		// batches, whose goroutines run one after the other and never
		// meet at the write lock: each head waits in the buffer while its
		// goroutine yields once, and the first of the batch back flushes
		// them all in one write.
		runtime.Gosched()
		if u.dirty.Load() {
			u.write(nil, false, false)
		}
	}
	return us, nil
}

// openLocked is open's part under the write lock: it numbers us, writes
// its head and reports whether the flush was left to a batch (a request
// without a body while other streams are open).
func (u *h2Up) openLocked(us *upStream, cl upClient, end bool) (batch bool, err error) {
	u.wwait.Add(1)
	u.wmu.Lock()
	u.wwait.Add(-1)
	defer u.unlockW()
	u.mu.Lock()
	if u.goaway || u.closed || u.werr != nil || u.nextID > 1<<31-1 {
		u.mu.Unlock()
		u.unreserve()
		return false, errUpRefused
	}
	batch = end && u.active > 1
	us.id = u.nextID
	u.nextID += 2
	if u.nextID > 1<<31-1 {
		u.goaway = true
	}
	us.sendWin = u.peerInitWin
	us.local = end
	u.streams[us.id] = us
	maxFrame := int(u.peerMaxFrame)
	u.mu.Unlock()
	err = u.writeLocked(func() error {
		u.encB.b = u.encB.b[:0]
		cl.encodeUpHead(u.enc)
		return u.writeBlock(us.id, u.encB.b, end, maxFrame)
	}, false, !end || batch)
	if err != nil {
		us.release()
		return false, err
	}
	return batch, nil
}

// writeBlock writes a header block on stream id as HEADERS then
// CONTINUATION frames of at most maxFrame (the server's
// SETTINGS_MAX_FRAME_SIZE): a larger frame is a connection error that
// would end every stream on the shared connection. u.wmu held.
func (u *h2Up) writeBlock(id uint32, block []byte, end bool, maxFrame int) error {
	first := true
	for first || len(block) > 0 {
		n := min(len(block), maxFrame)
		frag := block[:n]
		block = block[n:]
		var err error
		if first {
			err = u.wfr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: frag,
				EndStream: end, EndHeaders: len(block) == 0})
		} else {
			err = u.wfr.WriteContinuation(id, len(block) == 0, frag)
		}
		if err != nil {
			return err
		}
		first = false
	}
	return nil
}

// unreserve gives back a stream reserved and never opened.
func (u *h2Up) unreserve() {
	u.mu.Lock()
	u.active--
	u.idleLocked()
	u.mu.Unlock()
}

// idleLocked arms the idle timer of a connection left without a stream,
// or closes it when it takes no more. u.mu held.
func (u *h2Up) idleLocked() {
	if u.active > 0 {
		return
	}
	if !u.isIdle && !u.goaway && !u.closed && u.maxStreams > 0 && u.idle > 0 && u.maxIdle > 0 &&
		!u.p.draining.Load() {
		if int(u.pool.idle.Add(1)) <= u.maxIdle {
			u.isIdle = true
		} else {
			u.pool.idle.Add(-1) // pool_max_idle idle connections are kept already
		}
	}
	if !u.isIdle {
		u.goaway = true
		go u.close()
		return
	}
	u.idleTimer.Reset(u.idle)
}

// notIdleLocked takes the connection out of its pool's idle count. u.mu
// held.
func (u *h2Up) notIdleLocked() {
	if u.isIdle {
		u.isIdle = false
		u.pool.idle.Add(-1)
	}
}

// idleCheck closes the connection if it is still idle.
func (u *h2Up) idleCheck() {
	u.pool.mu.Lock()
	u.mu.Lock()
	idle := u.active == 0
	if idle {
		u.goaway = true
	}
	u.mu.Unlock()
	u.pool.mu.Unlock()
	if idle {
		u.close()
	}
}

// close closes the connection; its reader ends every stream.
func (u *h2Up) close() {
	u.mu.Lock()
	if u.closed {
		u.mu.Unlock()
		return
	}
	u.closed = true
	u.goaway = true
	u.idleTimer.Stop()
	u.notIdleLocked()
	u.mu.Unlock()
	u.pool.remove(u)
	u.conn.Close()
	u.budget.Release()
}

// readLoop reads frames until the connection ends, then ends its streams.
func (u *h2Up) readLoop() {
	var err error
	for {
		var f http2.Frame
		f, err = u.fr.ReadFrame()
		if err != nil {
			var se http2.StreamError
			if errors.As(err, &se) {
				// A malformed response head: that stream only.
				u.resetStream(se.StreamID, se.Code, upReset(http2.ErrCodeProtocol))
				continue
			}
			break
		}
		if err = u.handle(f); err != nil {
			break
		}
	}
	var ce http2.ConnectionError
	if errors.As(err, &ce) {
		u.write(func() error { return u.wfr.WriteGoAway(0, http2.ErrCode(ce), nil) }, false, false)
	}
	u.close()
	u.mu.Lock()
	for _, us := range u.streams {
		if us.err == nil {
			us.err = errUpGone
		}
		us.gone = true
		us.wakeLocked()
	}
	u.mu.Unlock()
}

func (us *upStream) wakeLocked() {
	us.rd.wake()
	us.wr.wake()
}

// resetStream resets stream id towards the server, the stream failing
// with err.
func (u *h2Up) resetStream(id uint32, code http2.ErrCode, err error) {
	u.mu.Lock()
	if us := u.streams[id]; us != nil {
		if us.err == nil {
			us.err = err
		}
		us.gone = true
		us.wakeLocked()
	}
	u.mu.Unlock()
	u.write(func() error { return u.wfr.WriteRSTStream(id, code) }, true, false)
}

func (u *h2Up) handle(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.SettingsFrame:
		if f.IsAck() {
			return nil
		}
		if err := u.settings(f); err != nil {
			return err
		}
		// A server that now takes no stream: an idle connection to it
		// carries nothing until it says otherwise, it is not kept.
		u.mu.Lock()
		useless := u.maxStreams == 0 && u.active == 0
		if useless {
			u.goaway = true
		}
		u.mu.Unlock()
		if useless {
			u.close()
		}
		return nil
	case *http2.MetaHeadersFrame:
		return u.headers(f)
	case *http2.DataFrame:
		return u.data(f)
	case *http2.RSTStreamFrame:
		u.mu.Lock()
		if us := u.streams[f.StreamID]; us != nil {
			if us.err == nil {
				if f.ErrCode == http2.ErrCodeRefusedStream && !us.gotHead {
					us.err = errUpRefused
				} else {
					us.err = upReset(f.ErrCode)
				}
			}
			us.gone = true
			us.wakeLocked()
		}
		u.mu.Unlock()
		return nil
	case *http2.WindowUpdateFrame:
		u.mu.Lock()
		defer u.mu.Unlock()
		if f.StreamID == 0 {
			u.sendWin += int64(f.Increment)
			if u.sendWin > 1<<31-1 {
				return http2.ConnectionError(http2.ErrCodeFlowControl)
			}
			for _, us := range u.streams {
				us.wr.wake()
			}
			return nil
		}
		if us := u.streams[f.StreamID]; us != nil {
			us.sendWin += int64(f.Increment)
			us.wr.wake()
		}
		return nil
	case *http2.PingFrame:
		if f.IsAck() {
			return nil
		}
		return u.write(func() error { return u.wfr.WritePing(true, f.Data) }, true, false)
	case *http2.GoAwayFrame:
		u.mu.Lock()
		u.goaway = true
		u.goawayID = f.LastStreamID
		for id, us := range u.streams {
			if id > f.LastStreamID && us.err == nil {
				us.err = errUpRefused // never processed: sent again elsewhere
				us.gone = true
				us.wakeLocked()
			}
		}
		idle := u.active == 0
		u.mu.Unlock()
		u.pool.remove(u)
		if idle {
			u.close()
		}
		return nil
	case *http2.PushPromiseFrame:
		return http2.ConnectionError(http2.ErrCodeProtocol) // push is off
	}
	return nil
}

func (u *h2Up) settings(f *http2.SettingsFrame) error {
	err := f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			return err
		}
		u.mu.Lock()
		defer u.mu.Unlock()
		switch s.ID {
		case http2.SettingMaxConcurrentStreams:
			u.maxStreams = s.Val
		case http2.SettingMaxFrameSize:
			u.peerMaxFrame = s.Val
		case http2.SettingInitialWindowSize:
			delta := int64(s.Val) - u.peerInitWin
			u.peerInitWin = int64(s.Val)
			for _, us := range u.streams {
				us.sendWin += delta
				us.wr.wake()
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return u.write(func() error { return u.wfr.WriteSettingsAck() }, true, false)
}

func (u *h2Up) headers(f *http2.MetaHeadersFrame) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	us := u.streams[f.StreamID]
	if us == nil || us.ended {
		return nil // reset by us, or gone: its bytes were counted by hpack
	}
	if f.Truncated {
		us.err = upReset(http2.ErrCodeProtocol)
		us.wakeLocked()
		return nil
	}
	if !us.gotHead {
		st := f.PseudoValue("status")
		code, ok := parseDigits(bytesOf(st))
		// Three digits, the first not 0 (RFC 9110 §15): "099" is no status.
		if !ok || len(st) != 3 || code < 100 {
			us.err = errUpBadResponse
			us.wakeLocked()
			return nil
		}
		if code >= 100 && code < 200 {
			// A 1xx ending the stream, or a 101 (RFC 9113 §8.6: no
			// upgrade in HTTP/2), can never be followed by a final
			// response: a bad response now, not a wait for
			// timeout_server.
			if code == 101 || f.StreamEnded() {
				us.err = errUpBadResponse
				us.wakeLocked()
				return nil
			}
			us.interim = int(code)
			us.rd.wake()
			return nil
		}
		us.status = int(code)
		us.head = f.RegularFields()
		us.gotHead = true
		us.clen = contentLength(us.head)
	} else {
		if !f.StreamEnded() {
			us.err = upReset(http2.ErrCodeProtocol)
			us.wakeLocked()
			return nil
		}
		us.trailers = f.RegularFields()
	}
	if f.StreamEnded() {
		us.ended = true
	}
	us.rd.wake()
	return nil
}

func (u *h2Up) data(f *http2.DataFrame) error {
	n := int64(f.Length)
	u.mu.Lock()
	us := u.streams[f.StreamID]
	if us == nil || us.ended || us.err != nil || !us.gotHead {
		// Reset by us, or ours is in flight: given back at once.
		inc := u.giveBackLocked(n)
		u.mu.Unlock()
		u.sendWindow(inc, 0, 0)
		return nil
	}
	if n > us.recvWin {
		inc := u.giveBackLocked(n)
		u.mu.Unlock()
		u.sendWindow(inc, 0, 0)
		u.resetStream(f.StreamID, http2.ErrCodeFlowControl, upReset(http2.ErrCodeFlowControl))
		return nil
	}
	us.recvWin -= n
	data := f.Data()
	inc := u.giveBackLocked(n - int64(len(data))) // padding
	if us.clen >= 0 && int64(len(data)) > us.clen {
		// DATA beyond the content-length: a malformed response (RFC
		// 9113 §8.1.1). What was announced goes on, the rest nowhere;
		// the client's side is reset as for a broken response.
		us.in = append(us.in, data[:us.clen]...)
		inc += u.giveBackLocked(int64(len(data)) - us.clen)
		us.clen = 0
		u.mu.Unlock()
		u.sendWindow(inc, 0, 0)
		u.resetStream(f.StreamID, http2.ErrCodeProtocol, errUpLength)
		return nil
	}
	if us.clen >= 0 {
		us.clen -= int64(len(data))
	}
	us.in = append(us.in, data...)
	if f.StreamEnded() {
		us.ended = true
	}
	us.rd.wake()
	u.mu.Unlock()
	u.sendWindow(inc, 0, 0)
	return nil
}

// contentLength is the value of the content-length fields of head, -1
// when there is none or they are not one number (not enforced then).
func contentLength(head []hpack.HeaderField) int64 {
	cl := int64(-1)
	for _, f := range head {
		if f.Name != "content-length" {
			continue
		}
		n, ok := parseDigits(bytesOf(f.Value))
		if !ok || cl >= 0 && n != cl {
			return -1
		}
		cl = n
	}
	return cl
}

// giveBackLocked returns n consumed bytes to the connection's window and
// says how much WINDOW_UPDATE to send. u.mu held.
func (u *h2Up) giveBackLocked(n int64) int64 {
	u.connUnacked += n
	if u.connUnacked < upConnWindow/4 {
		return 0
	}
	inc := u.connUnacked
	u.connUnacked = 0
	return inc
}

// sendWindow gives window back to the server, without waiting for the
// write lock (see pending).
func (u *h2Up) sendWindow(connInc int64, id uint32, inc int64) {
	if connInc == 0 && inc == 0 {
		return
	}
	u.pmu.Lock()
	u.pendConn += connInc
	if inc > 0 {
		u.pendWins = append(u.pendWins, upWin{id, inc})
	}
	u.pending.Store(true)
	u.pmu.Unlock()
	u.flushWindows()
}

// release ends the stream on our side (RST_STREAM CANCEL if it is still
// open) and gives its place on the connection back.
func (us *upStream) release() {
	u := us.u
	u.mu.Lock()
	if us.released {
		u.mu.Unlock()
		return
	}
	us.released = true
	rst := !us.gone && !(us.local && us.ended)
	if us.err == nil {
		us.err = errUpClosed
	}
	us.wakeLocked()
	delete(u.streams, us.id)
	inc := u.giveBackLocked(int64(len(us.in)))
	us.in = nil
	u.active--
	u.idleLocked()
	u.mu.Unlock()
	if rst {
		u.write(func() error { return u.wfr.WriteRSTStream(us.id, http2.ErrCodeCancel) }, false, false)
	}
	u.sendWindow(inc, 0, 0)
}

// take moves up to len(b) bytes of response body into b; it reports the
// state once nothing is left: ended (with trailers), or err.
func (us *upStream) take(b []byte) (n int, ended bool, trailers []hpack.HeaderField, err error) {
	u := us.u
	u.mu.Lock()
	if len(us.in) > 0 {
		n = copy(b, us.in)
		us.in = us.in[:copy(us.in, us.in[n:])]
		var inc int64
		us.unacked += int64(n)
		if !us.ended && us.unacked >= upStreamWindow/4 {
			inc, us.unacked = us.unacked, 0
			us.recvWin += inc
		}
		connInc := u.giveBackLocked(int64(n))
		last := len(us.in) == 0 && us.ended && us.trailers == nil
		u.mu.Unlock()
		u.sendWindow(connInc, us.id, inc)
		return n, last, nil, nil
	}
	ended, trailers, err = us.ended, us.trailers, us.err
	u.mu.Unlock()
	if ended {
		return 0, true, trailers, nil
	}
	return 0, false, nil, err
}

// wait waits for the server (rd) or the client's stream context, at most
// t (0: no limit); false when t ran out.
func (w *waker) waitCtx(done <-chan struct{}, t time.Duration) bool {
	if t <= 0 {
		select {
		case <-w.ch:
		case <-done:
		}
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
	case <-done:
		w.timer.Stop()
		return true
	case <-w.timer.C:
		return false
	}
}

// writeData sends b as DATA frames as the server's windows allow, waiting
// at most t each time; end ends the stream.
func (us *upStream) writeData(b []byte, end bool, t time.Duration) error {
	u := us.u
	for {
		u.mu.Lock()
		if us.err != nil {
			u.mu.Unlock()
			return us.err
		}
		if len(b) == 0 {
			if end {
				us.local = true
			}
			u.mu.Unlock()
			if !end {
				return nil
			}
			return u.write(func() error { return u.wfr.WriteData(us.id, true, nil) }, false, false)
		}
		n := min(int64(len(b)), us.sendWin, u.sendWin, int64(u.peerMaxFrame))
		if n <= 0 {
			u.mu.Unlock()
			if !us.wr.wait(t) {
				return serverTimeout{}
			}
			continue
		}
		us.sendWin -= n
		u.sendWin -= n
		last := end && n == int64(len(b))
		if last {
			us.local = true
		}
		u.mu.Unlock()
		chunk := b[:n]
		if err := u.write(func() error { return u.wfr.WriteData(us.id, last, chunk) }, false, false); err != nil {
			return err
		}
		b = b[n:]
		if last {
			return nil
		}
	}
}

// writeTrailers ends the stream with the client's request trailers.
func (us *upStream) writeTrailers(fields []hpack.HeaderField) error {
	u := us.u
	u.mu.Lock()
	if us.err != nil {
		u.mu.Unlock()
		return us.err
	}
	us.local = true
	maxFrame := int(u.peerMaxFrame)
	u.mu.Unlock()
	return u.write(func() error {
		u.encB.b = u.encB.b[:0]
		for _, f := range fields {
			if n := bytesOf(f.Name); !connSpecific(n) && !isForwarding(n) {
				u.enc.WriteField(f)
			}
		}
		return u.writeBlock(us.id, u.encB.b, true, maxFrame)
	}, false, false)
}

// upBody is the request body's copy to the server: what of it was sent,
// kept for a stream the server refuses, and its progress for
// timeout_server.
type upBody struct {
	replay   []byte
	noReplay bool // more was sent than replay keeps
	sent     int64
	last     atomic.Int64 // when a write last ended (UnixNano)
	reading  atomic.Bool  // waiting for the client
	done     chan error
}

// replayable reports whether the body sent on a refused stream can go
// again: read once its copy has ended (wait), as the copy writes it.
func replayable(ub *upBody, wait func() error) bool {
	if ub == nil {
		return true
	}
	wait()
	return !ub.noReplay
}

// copyUp sends the request body of cl on us: first what an earlier,
// refused stream had sent, then the rest as the client sends it.
func copyUp(cl upClient, us *upStream, ub *upBody, be *backend.Backend) error {
	p := cl.proxy()
	t := be.TimeoutServer
	if len(ub.replay) > 0 {
		if err := us.writeData(ub.replay, false, t); err != nil {
			return err
		}
	}
	bp := copyBufPool.Get().(*[]byte)
	defer copyBufPool.Put(bp)
	buf := (*bp)[:16384]
	for {
		ub.reading.Store(true)
		n, err := cl.Read(buf)
		ub.reading.Store(false)
		ub.last.Store(time.Now().UnixNano())
		if n > 0 {
			if !ub.noReplay {
				if len(ub.replay)+n <= upReplayMax {
					ub.replay = append(ub.replay, buf[:n]...)
				} else {
					ub.noReplay, ub.replay = true, nil
				}
			}
			if werr := us.writeData(buf[:n], false, t); werr != nil {
				return werr
			}
			ub.sent += int64(n)
			ub.last.Store(time.Now().UnixNano())
			p.Counters.BytesIn.Add(uint64(n))
			us.u.srv.Counters.BytesIn.Add(uint64(n))
		}
		if err == io.EOF {
			if tr := cl.upTrailers(); len(tr) > 0 {
				return us.writeTrailers(tr)
			}
			return us.writeData(nil, true, t)
		}
		if err != nil {
			return writeError{err} // the client's side
		}
	}
}

// encodeUpHead encodes the request head for an HTTP/2 server.
func (s *h2Stream) encodeUpHead(e *hpack.Encoder) {
	s.c.p.encodeUpHead(e, &s.req, &s.c.info, s.c.addr, &s.lname, false, s.edits, uint64(s.id), &s.val)
}

// encodeUpHead encodes the head of req for an HTTP/2 server: the fields
// as the client sent them but the connection-specific and forwarding ones
// (and, h1, Expect: the HTTP/1 side answers 100-continue itself), then
// sluice's forwarding headers (as buildRequestHead writes them to HTTP/1
// servers), with the policy's edits (seq: the request's number for
// {request_id}). lname and val are scratch space for lower-cased names and
// edited values.
func (p *Proxy) encodeUpHead(e *hpack.Encoder, req *message, info *ConnInfo, addr string, lname *[]byte, h1 bool, edits, seq uint64, val *[]byte) {
	e.WriteField(hpack.HeaderField{Name: ":method", Value: stringOf(req.method)})
	e.WriteField(hpack.HeaderField{Name: ":scheme", Value: "http"})
	if req.host != nil {
		e.WriteField(hpack.HeaderField{Name: ":authority", Value: stringOf(req.host)})
	}
	e.WriteField(hpack.HeaderField{Name: ":path", Value: stringOf(pathOf(req.target))})
	for _, f := range req.fields {
		switch {
		case equalFold(f.name, "host"), isForwarding(f.name), equalFold(f.name, "transfer-encoding"):
			continue
		case equalFold(f.name, "te"):
			if !equalFold(f.value, "trailers") {
				continue
			}
		case connSpecific(f.name), req.hopByHop(f.name):
			continue
		case h1 && equalFold(f.name, "expect"):
			continue
		case p.dropsField(edits, false, f.name):
			continue
		}
		lowerField(e, lname, f.name, f.value)
	}
	p.encodeEdits(e, edits, false, info, seq, val)
	v := h1View(req)
	var buf [256]byte
	for i, name := range fwdNames {
		lowerField(e, lname, bytesOf(name), p.appendForwardValue(buf[:0], i, &v, info, addr))
	}
	if cc := info.Cert; cc != nil {
		for i, val := range cc.values() {
			e.WriteField(hpack.HeaderField{Name: certNamesLower[i], Value: val})
		}
	}
}

// fail ends the stream for err from our side (the request body's copy
// broke): the response's reader wakes to it.
func (us *upStream) fail(err error) {
	u := us.u
	u.mu.Lock()
	if us.err == nil {
		us.err = err
	}
	us.wakeLocked()
	u.mu.Unlock()
}

// forwardUp sends the stream to an h2c server of be over sluice's own
// HTTP/2 client and relays the response; mv is a request moved here from
// the HTTP/1 path.
func (s *h2Stream) forwardUp(be *backend.Backend, x *exchange, mv moved) {
	defer s.unready() // upWhole's (a recovered panic's too): the last ready stream flushes
	if mv, ok := forwardUp(s, be, x, !s.endStream, nil, mv); ok {
		s.forward(be, x, mv) // the server chose HTTP/1.1 (alpn.go)
	}
}

// forwardUp sends the request of cl (body: it has one) to an h2c server
// of be over sluice's own HTTP/2 client and relays the response: forward's
// connect, retry and observation rules. watch is an HTTP/1 client's
// connection, watched while the request waits in the queue. A stream the
// server refused (GOAWAY above it, REFUSED_STREAM) was never processed: it
// goes again, on another connection.
//
// A server of an alpn = ["h2", "http/1.1"] backend that speaks HTTP/1.1
// (alpn.go) ends it before anything was sent: the request, mv, goes to
// the HTTP/1 path, and ok is true.
func forwardUp(cl upClient, be *backend.Backend, x *exchange, body bool, watch net.Conn, from moved) (mv moved, ok bool) {
	p := cl.proxy()
	cn := backend.Connect{Client: backend.Client{Addr: cl.upInfo().Client.Addr()}, Budget: p.ServerConns, Watch: watch,
		Held: from.srv, Retries: from.retries}
	var cookie []byte
	if be.Sticky == "cookie" {
		v := h1View(cl.upReq())
		cookie = v.cookie(be.StickyCookie)
		cn.Pinned = pinned(be, cookie)
	}
	var ub *upBody
	if body {
		ub = &upBody{}
	}
	var us *upStream
	dials := 0
	dial := func(ctx context.Context, srv *backend.Server) error {
		if moveOn(be, srv, true, from) {
			return backend.ErrMoved
		}
		var err error
		us, err = openUp(ctx, cl, &cn, be, ub, &dials)
		return err
	}
	for refused := 0; ; refused++ {
		err := be.Connect(cl.upCtx(), &cn, dial)
		x.retries = cn.Retries
		if cn.Server != nil {
			x.server, x.srv = cn.Server.Name, cn.Server
		}
		if err == backend.ErrMoved {
			if mv, ok := from.next(&cn); ok {
				return mv, true
			}
			cl.fail(failConnect, be, x)
			return
		}
		if errors.Is(err, errUpNoStreams) {
			cl.upRefused(be, x)
			return
		}
		if notConnected(cl, err, be, x) {
			return
		}
		srv := cn.Server
		x.connected = time.Now()
		retry := exchangeUp(cl, us, ub, be, x, setCookie(be, cookie, srv))
		srv.Release()
		observe(srv, x, retry)
		if !retry {
			return
		}
		if refused >= upMaxRefused {
			srv.Counters.RespErrors.Add(1)
			cl.fail(failServerError, be, x)
			return
		}
		cn.Pinned = srv
	}
}

// upClientCode is the code a stream the server reset after its response
// head is reset with towards the client: the server's own, but for the
// codes that name a fault of this hop's connection.
func upClientCode(c http2.ErrCode) http2.ErrCode {
	switch c {
	case http2.ErrCodeNo, http2.ErrCodeCancel, http2.ErrCodeRefusedStream, http2.ErrCodeEnhanceYourCalm,
		http2.ErrCodeInadequateSecurity, http2.ErrCodeHTTP11Required, http2.ErrCodeInternal:
		return c
	}
	return http2.ErrCodeInternal
}

// upTake is how much of a response body exchangeUp takes from the server's
// stream at a time.
const upTake = 16384

// exchangeUp relays the response of us to the client, the request body
// going up meanwhile (its own goroutine, only for a request with a body).
// It returns whether the server refused the stream and the request may go
// again.
func exchangeUp(cl upClient, us *upStream, ub *upBody, be *backend.Backend, x *exchange, sticky bool) (retry bool) {
	p := cl.proxy()
	u := us.u
	srv := u.srv
	t := be.TimeoutServer
	if ub != nil {
		cl.startBody()
		ub.done = make(chan error, 1)
		go func() {
			err := copyUp(cl, us, ub, be)
			if err != nil {
				us.fail(err)
			}
			ub.done <- err
		}()
	}
	// bodyErr waits for the body's copy to end; us is released (or the
	// client answered, or its body stopped) first, so that it does.
	bodyErr := func() error {
		if ub == nil || ub.done == nil {
			return nil
		}
		err := <-ub.done
		ub.done = nil
		return err
	}
	ctx := cl.upCtx()
	done := ctx.Done()
	failed := func(f failure) bool {
		us.release()
		cl.fail(f, be, x)
		bodyErr()
		return false
	}
	gone := func(term string) bool {
		cl.stopBody()
		bodyErr()
		x.terminated = term
		cl.log(x)
		return false
	}
	for {
		u.mu.Lock()
		got, interim, err := us.gotHead, us.interim, us.err
		us.interim = 0
		u.mu.Unlock()
		if got {
			break
		}
		if interim != 0 {
			cl.upInterim(interim)
			continue
		}
		if ctx.Err() != nil {
			us.release()
			return gone("client")
		}
		if err != nil {
			us.release()
			var berr error
			var werr writeError
			switch {
			case ub == nil:
			case errors.As(err, &werr):
				berr = bodyErr() // the body's copy failed the stream and is ending
			default:
				select {
				case berr = <-ub.done:
					ub.done = nil
				default:
				}
			}
			switch {
			case errors.As(berr, &werr) && errors.Is(werr.err, errClientStalled):
				return failed(failClientTimeout)
			case errors.As(berr, &werr) && errors.Is(werr.err, errBadChunk):
				return failed(failBadRequest)
			case errors.As(berr, &werr):
				return gone("client")
			case err == errUpRefused && cl.canResend() && replayable(ub, bodyErr):
				return true
			case isTimeout(err):
				srv.Counters.RespErrors.Add(1)
				return failed(failServerTimeout)
			case err == errUpBadResponse:
				srv.Counters.RespErrors.Add(1)
				return failed(failBadResponse)
			}
			srv.Counters.RespErrors.Add(1)
			return failed(failServerError)
		}
		if !us.rd.waitCtx(done, t) {
			if ub != nil && ub.done != nil && (ub.reading.Load() || time.Since(time.Unix(0, ub.last.Load())) < t) {
				continue // the request body still moves: the wait starts at its end
			}
			srv.Counters.RespErrors.Add(1)
			return failed(failServerTimeout)
		}
	}
	x.respHead = time.Now()
	u.mu.Lock()
	status, head := us.status, us.head
	endNow := us.ended && len(us.in) == 0 && us.trailers == nil
	lazy := !endNow && len(us.in) > 0
	// A ready stream must not wait on the server connection (its last
	// frames wait for the last ready stream's flush): only a bodiless
	// request's (the release of a stream whose upload still goes writes
	// an RST_STREAM, under the write lock an upload to a server that
	// stopped reading may hold), and its body is taken and its window
	// given back before it counts ready (below).
	whole := ub == nil && us.ended && us.trailers == nil && len(us.in) <= upTake
	u.mu.Unlock()
	x.status = status
	cookie := ""
	if sticky {
		cookie = be.StickyCookie
	}
	p.count(srv, status, 0) // bytes are counted as they pass
	bp := copyBufPool.Get().(*[]byte)
	defer copyBufPool.Put(bp)
	buf := (*bp)[:upTake]
	taken := 0 // body bytes in buf before the loop
	if whole {
		// Taken whole and released (the WINDOW_UPDATE written, which a
		// server that stopped reading may hold up) before the stream
		// counts ready: then it writes to its client only.
		taken, _, _, _ = us.take(buf)
		us.release()
		cl.upWhole()
	}
	err := cl.upHead(status, head, cookie, srv, endNow, lazy)
	for err == nil && !endNow {
		var n int
		var last bool
		var trailers []hpack.HeaderField
		var uerr error
		if taken > 0 {
			n, last, taken = taken, true, 0 // the whole body, taken above
		} else {
			n, last, trailers, uerr = us.take(buf)
		}
		if n > 0 {
			if err = cl.writeData(buf[:n], last); err != nil {
				break
			}
			x.bytesOut += int64(n)
			p.Counters.BytesOut.Add(uint64(n))
			srv.Counters.BytesOut.Add(uint64(n))
			endNow = last
			continue
		}
		if last {
			err = cl.upEnd(trailers)
			endNow = true
			break
		}
		if ctx.Err() != nil {
			err = errStreamGone
			break
		}
		if uerr != nil {
			// The server broke off the response: the client's stream is
			// reset as it was (an HTTP/1 client's connection closes).
			us.release()
			code := http2.ErrCodeInternal
			var rst upReset
			if errors.As(uerr, &rst) {
				code = upClientCode(http2.ErrCode(rst))
			}
			cl.upAbort(code)
			bodyErr()
			x.serverBroke(srv)
			cl.log(x)
			return false
		}
		if !us.rd.waitCtx(done, t) {
			us.release()
			cl.upAbort(http2.ErrCodeCancel)
			bodyErr()
			srv.Counters.RespErrors.Add(1)
			x.terminated = "server-timeout"
			cl.log(x)
			return false
		}
	}
	us.release()
	if err != nil {
		cl.clientBroke(writeError{err})
		bodyErr()
		x.terminated = "client" // writing to it failed: it left, reset or stopped reading
		cl.log(x)
		return false
	}
	cl.upDone()
	bodyErr()
	cl.log(x)
	return false
}

// The upClient side of an HTTP/2 stream.

func (s *h2Stream) proxy() *Proxy              { return s.c.p }
func (s *h2Stream) upInfo() *ConnInfo          { return &s.c.info }
func (s *h2Stream) upReq() *message            { return &s.req }
func (s *h2Stream) upCtx() context.Context     { return s.ctx }
func (s *h2Stream) startBody()                 {}
func (s *h2Stream) canResend() bool            { return true }
func (s *h2Stream) stopBody()                  { s.endBody() }
func (s *h2Stream) upAbort(code http2.ErrCode) { s.abort(code); s.endBody() }
func (s *h2Stream) upDone()                    { s.endBody(); s.served = true }
func (s *h2Stream) upWhole()                   { s.setReady() }
func (s *h2Stream) upRefused(be *backend.Backend, x *exchange) {
	s.c.p.countFailure(failNoServer, be)
	x.terminated = failures[failNoServer].term
	s.abort(http2.ErrCodeRefusedStream)
	s.endBody()
	s.log(x)
}
func (s *h2Stream) upInterim(code int) {
	s.sendHead(func(e *hpack.Encoder) { s.status(e, code) }, false)
}
func (s *h2Stream) upTrailers() []hpack.HeaderField {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	return s.trailers
}

func (s *h2Stream) upHead(status int, head []hpack.HeaderField, cookie string, srv *backend.Server, end, lazy bool) error {
	return s.sendHeadLazy(func(e *hpack.Encoder) {
		s.status(e, status)
		for _, f := range head {
			if !connSpecific(bytesOf(f.Name)) && !s.c.p.dropsField(s.edits, true, bytesOf(f.Name)) {
				e.WriteField(f)
			}
		}
		s.encodeEdits(e, s.edits, true)
		if cookie != "" {
			var buf [128]byte
			s.field(e, []byte("set-cookie"), appendStickyCookie(buf[:0], cookie, srv.ID))
		}
	}, end, lazy || end && s.batched())
}

func (s *h2Stream) upEnd(trailers []hpack.HeaderField) error {
	if len(trailers) == 0 {
		return s.writeData(nil, true)
	}
	return s.sendHead(func(e *hpack.Encoder) {
		for _, f := range trailers {
			if !connSpecific(bytesOf(f.Name)) {
				e.WriteField(f)
			}
		}
	}, true)
}
