package l7

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// sluice's own HTTP/2 server side (RFC 9113), for clients: x/net's Framer
// and hpack do the framing and header compression; this file keeps the
// connection (one reader goroutine decoding frames, stream states, flow
// control both ways, graceful drain, defences), h2stream.go turns streams
// into requests through the same policy core as the HTTP/1 path.
//
// Memory per connection is bounded: what a client may send ahead is
// bounded by the windows advertised (h2ConnWindow for the connection,
// h2StreamWindow per stream, buffered until a stream's request body is
// read to its server), and what goes to it by its own windows, one copy
// buffer per stream in flight: a client that never opens its window makes
// the stream wait (and reset after timeout_client), never buffer.

const (
	h2StreamWindow = 1 << 16 // receive window of each stream: what it may buffer
	h2ConnWindow   = 1 << 20 // receive window of the connection
	h2MaxFrame     = 16384   // SETTINGS_MAX_FRAME_SIZE we read
	// h2MaxContinuations bounds the CONTINUATION frames of one header
	// block (CVE-2024-27316: an endless block of empty ones).
	h2MaxContinuations = 64
	// h2CalmBudget is how many streams a client may reset while sluice
	// still works on them, net of those served to the end, before the
	// connection ends with ENHANCE_YOUR_CALM (CVE-2023-44487).
	h2CalmBudget = 2 * MaxH2Streams
	// h2MaxMeanless bounds control frames that cost a reply or work
	// without moving a request (SETTINGS, PING, empty DATA, PRIORITY,
	// WINDOW_UPDATE on idle streams), net of requests served.
	h2MaxMeanless = 10000
	// h2MaxParked bounds the stream goroutines a connection keeps parked
	// for its next streams (h2Conn.park).
	h2MaxParked = 32
	// h2ParkIdle is how long a connection without a stream in flight
	// keeps its parked stream goroutines.
	h2ParkIdle = time.Second
)

// h2Conn is one HTTP/2 client connection.
type h2Conn struct {
	p    *Proxy
	conn net.Conn
	info ConnInfo
	addr string
	fr   *http2.Framer // reads from br
	br   *bufio.Reader
	dec  *hpack.Decoder

	// The writer: every frame is written under wmu to bw and flushed by
	// the last writer waiting; the reader's own replies are flushed
	// before it blocks on a read (dirty), so a burst of PINGs costs one
	// write, and a client that does not read stops the reader
	// (back-pressure): replies never queue.
	wmu   sync.Mutex
	bw    *bufio.Writer
	wfr   *http2.Framer
	enc   *hpack.Encoder
	encB  h2Buf
	lname []byte // a lower-cased header name being encoded (h2Stream.field)
	werr  error
	wdl   lazyDeadline
	wwait atomic.Int32
	dirty atomic.Bool
	// ready counts the streams holding a whole response about to be
	// written (nothing left to wait on but the write lock): the last
	// write of each is left unflushed, and the one that takes ready to 0
	// yields once (the streams woken with it write theirs) and flushes,
	// so responses finishing together go out in one write, not one each.
	ready atomic.Int32

	// Header block decoding (reader goroutine only).
	hblock   []byte
	hfields  []hpack.HeaderField
	hcap     int // fields in the last head, capped: the next slice's size
	hsize    int
	hbad     bool
	hregular bool
	hlarge   bool
	// acked: the client acknowledged our SETTINGS (reader only); before,
	// it cannot know extended CONNECT is allowed (RFC 8441 §3).
	acked bool

	// ctx is the parent of the streams' contexts: one per connection, so
	// a stream's start and end lock this connection's context, not the
	// Proxy's.
	ctx       context.Context
	ctxCancel context.CancelFunc

	mu           sync.Mutex
	streams      map[uint32]*h2Stream
	working      int    // stream goroutines running, reset or not
	halfOpen     int    // streams without a goroutine discarding their request body
	lastID       uint32 // highest stream id the client opened
	sendWin      int64  // connection send window
	recvWin      int64  // connection receive window left
	connUnacked  int64  // bytes consumed, not yet given back
	peerInitWin  int64
	peerMaxFrame uint32
	calm         int
	meanless     int
	draining     bool // first GOAWAY sent
	final        bool // final GOAWAY decided: streams above goawayID are ignored
	// goawaySent: the final GOAWAY is written. Only then may the last
	// stream's end close the connection: closing between final and the
	// write lost the GOAWAY, and the client never learnt which of its
	// streams were refused.
	goawaySent bool
	// resetSent holds the last streams sluice reset: frames the client
	// sent before it saw the RST_STREAM are ignored, not answered with
	// another reset each (RFC 9113 §5.1, "closed").
	resetSent  [16]uint32
	resetNext  int
	goawayID   uint32 // last stream id of the final GOAWAY
	closed     bool
	wclosed    bool          // write side half-closed (closeGracefully); under wmu
	own        []*serverConn // idle server connections of this client (send_proxy)
	wg         sync.WaitGroup
	drainTimer *time.Timer
	// The fast path's writer (h2fast_linux.go): frames the loop made, and
	// the streams they end, written and finished by one goroutine of the
	// connection's, started by a fast stream when none runs.
	omu      sync.Mutex
	obuf     []byte
	ospare   []byte
	odone    []*h2Stream
	odspare  []*h2Stream
	ofast    int  // fast streams not yet finished (under omu)
	oclosed  bool // the connection is gone: the writer ends once ofast is 0
	owriter  bool // the writer runs (under omu): it ends after h2ParkIdle without a fast stream
	owake    chan struct{}
	otouched bool // the loop has frames of this connection's in its batch (the loop's own)
	owbuf    []byte
	owrite   func() error
	// Stream goroutines are reused: one that served a stream parks for
	// the next (parked of them wait on work) instead of exiting, so a
	// stream costs no goroutine start nor the growth of a fresh stack.
	// Parked ones leave when the connection ends or has been without a
	// stream for h2ParkIdle (parkTimer).
	work      chan *h2Stream
	parked    int
	parkTimer *time.Timer
}

// h2Buf is a bytes buffer for the HPACK encoder.
type h2Buf struct{ b []byte }

func (b *h2Buf) Write(p []byte) (int, error) { b.b = append(b.b, p...); return len(p), nil }

var drainPing = [8]byte{'s', 'l', 'u', 'i', 'c', 'e', 'g', 'o'}

// h2Reader reads the connection for the framer: it flushes the replies
// left by the reader first, and holds an idle deadline (timeout_client)
// that only ends a connection without a stream in flight.
type h2Reader struct {
	c  *h2Conn
	dl lazyDeadline
}

func (r *h2Reader) Read(b []byte) (int, error) {
	c := r.c
	if c.dirty.Load() {
		c.write(nil, true)
	}
	for {
		if t, ok := r.dl.next(); ok {
			c.conn.SetReadDeadline(t)
		}
		n, err := c.conn.Read(b)
		if n == 0 && err != nil && isTimeout(err) {
			c.mu.Lock()
			busy := c.working > 0
			c.mu.Unlock()
			if busy {
				r.dl.set = time.Time{}
				continue
			}
		}
		return n, err
	}
}

// serveH2 serves HTTP/2 on conn until the client or a drain ends it.
func (p *Proxy) serveH2(conn net.Conn, info ConnInfo) {
	c := &h2Conn{p: p, conn: conn, info: info, addr: info.Client.Addr().String(),
		streams: map[uint32]*h2Stream{}, sendWin: 65535, recvWin: 65535,
		peerInitWin: 65535, peerMaxFrame: 16384, calm: h2CalmBudget, work: make(chan *h2Stream)}
	if c.info.priv == nil && p.sendsProxy() {
		c.info.priv = &privConns{}
	}
	rd := &h2Reader{c: c, dl: lazyDeadline{timeout: p.TimeoutClient}}
	c.br = bufio.NewReaderSize(rd, 16<<10)
	c.bw = bufio.NewWriterSize(conn, 16<<10)
	c.wdl.timeout = p.TimeoutClient
	c.fr = http2.NewFramer(nil, c.br)
	c.fr.SetMaxReadFrameSize(h2MaxFrame)
	c.wfr = http2.NewFramer(c.bw, nil)
	c.enc = hpack.NewEncoder(&c.encB)
	// No dynamic table on the way out (as HAProxy): header strings can
	// then point into reused buffers, and no state is kept per client.
	c.enc.SetMaxDynamicTableSizeLimit(0)
	maxStr := max(p.MaxHeaderBytes, 16<<10)
	c.dec = hpack.NewDecoder(4096, c.emit)
	c.dec.SetMaxStringLength(maxStr)
	c.ctx, c.ctxCancel = context.WithCancel(p.stopCtx())
	p.h2conns.Store(c, struct{}{})
	defer func() {
		c.ctxCancel()
		p.h2conns.Delete(c)
		c.shutdown()
		c.unpark(false)
		c.wg.Wait()
		for _, sc := range c.own {
			sc.close()
		}
		c.info.priv.close()
	}()

	// The preface, then our SETTINGS and a larger connection window.
	start := info.Accepted
	if start.IsZero() {
		start = time.Now()
	}
	conn.SetReadDeadline(start.Add(p.handshakeTimeout()))
	var pre [len(preface)]byte
	if _, err := io.ReadFull(conn, pre[:]); err != nil || string(pre[:]) != preface {
		return
	}
	conn.SetReadDeadline(time.Time{})
	settings := []http2.Setting{
		{ID: http2.SettingMaxConcurrentStreams, Val: MaxH2Streams},
		{ID: http2.SettingInitialWindowSize, Val: h2StreamWindow},
		{ID: http2.SettingEnablePush, Val: 0},
		// WebSocket over HTTP/2 (RFC 8441 §3): extended CONNECT, h2ws.go.
		{ID: http2.SettingEnableConnectProtocol, Val: 1},
	}
	if p.MaxHeaderBytes > 0 {
		settings = append(settings, http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: uint32(p.MaxHeaderBytes)})
	}
	c.recvWin = h2ConnWindow
	c.write(func() error {
		if err := c.wfr.WriteSettings(settings...); err != nil {
			return err
		}
		return c.wfr.WriteWindowUpdate(0, h2ConnWindow-65535)
	}, false)
	if p.draining.Load() {
		c.drain()
	}
	c.readLoop()
}

// write runs fn under the write lock and flushes unless another writer
// waits (it will flush) or, for the reader (reader true), unless more
// input is buffered (it flushes before its next read). fn nil: flush only.
func (c *h2Conn) write(fn func() error, reader bool) error { return c.writeFlush(fn, reader, false) }

// writeFlush is write; lazy leaves the flush to the writer's next write
// (or to the reader, before it blocks).
func (c *h2Conn) writeFlush(fn func() error, reader, lazy bool) error {
	c.wwait.Add(1)
	c.wmu.Lock()
	c.wwait.Add(-1)
	defer c.wmu.Unlock()
	if c.werr != nil {
		return c.werr
	}
	if c.wclosed {
		// Half-closed after the final GOAWAY: nothing more is owed (a
		// PING or WINDOW_UPDATE reply); the reader waits for the EOF.
		return nil
	}
	var err error
	if fn != nil {
		err = fn()
	}
	if err == nil {
		if c.wwait.Load() > 0 || reader && fn != nil && c.br.Buffered() > 0 || lazy {
			c.dirty.Store(true)
			return nil
		}
		if c.bw.Buffered() > 0 {
			if t, ok := c.wdl.next(); ok {
				c.conn.SetWriteDeadline(t)
			}
			err = c.bw.Flush()
		}
		c.dirty.Store(false)
	}
	if err != nil {
		c.werr = err
		c.conn.Close()
	}
	return err
}

// flushDirty flushes what a writer left unflushed, before a wait.
func (c *h2Conn) flushDirty() {
	if c.dirty.Load() {
		c.write(nil, false)
	}
}

// goAway ends the connection with code: GOAWAY naming the last stream
// read, then close.
func (c *h2Conn) goAway(code http2.ErrCode) {
	c.mu.Lock()
	last := c.lastID
	c.mu.Unlock()
	if code == http2.ErrCodeEnhanceYourCalm {
		c.p.Counters.H2Calm.Add(1)
	}
	c.write(func() error { return c.wfr.WriteGoAway(last, code, nil) }, false)
}

// linger lets the client read a GOAWAY before the close: a close with
// unread input would reset the connection and could destroy it.
func (c *h2Conn) linger() {
	cw, ok := c.conn.(interface{ CloseWrite() error })
	if !ok {
		return
	}
	c.write(nil, false)
	cw.CloseWrite()
	c.conn.SetReadDeadline(time.Now().Add(time.Second))
	var buf [4096]byte
	for range 256 { // at most 1 MiB, within a second
		if _, err := c.conn.Read(buf[:]); err != nil {
			return
		}
	}
}

// rst resets stream id towards the client.
func (c *h2Conn) rst(id uint32, code http2.ErrCode, reader bool) {
	c.mu.Lock()
	c.resetSent[c.resetNext%len(c.resetSent)] = id
	c.resetNext++
	c.mu.Unlock()
	c.write(func() error { return c.wfr.WriteRSTStream(id, code) }, reader)
}

// drain starts the graceful shutdown of RFC 9113 §6.8: GOAWAY with the
// largest stream id and a PING; the final GOAWAY, naming the last stream
// really read, goes when the PING comes back (or after a bound), so a
// stream the client sent before it saw the first one is still served.
func (c *h2Conn) drain() {
	c.mu.Lock()
	if c.draining || c.closed {
		c.mu.Unlock()
		return
	}
	c.draining = true
	wait := c.p.TimeoutClient
	if wait <= 0 || wait > 5*time.Second {
		wait = 5 * time.Second
	}
	c.drainTimer = time.AfterFunc(wait, c.finalGoAway)
	c.mu.Unlock()
	c.write(func() error {
		if err := c.wfr.WriteGoAway(1<<31-1, http2.ErrCodeNo, nil); err != nil {
			return err
		}
		return c.wfr.WritePing(false, drainPing)
	}, false)
}

func (c *h2Conn) finalGoAway() {
	c.mu.Lock()
	if c.final || c.closed {
		c.mu.Unlock()
		return
	}
	c.final, c.goawayID = true, c.lastID
	id := c.goawayID
	c.mu.Unlock()
	if h := testFinalHook.Load(); h != nil {
		(*h)()
	}
	c.write(func() error { return c.wfr.WriteGoAway(id, http2.ErrCodeNo, nil) }, false)
	// A stream ending from here on closes the connection itself.
	c.mu.Lock()
	c.goawaySent = true
	idle := c.working == 0
	c.mu.Unlock()
	if idle {
		c.closeGracefully()
	}
}

// closeGracefully closes a connection whose streams are all done after
// the final GOAWAY: our side first, so the client reads everything sent.
func (c *h2Conn) closeGracefully() {
	cw, ok := c.conn.(interface{ CloseWrite() error })
	if !ok {
		c.conn.Close()
		return
	}
	// Flush and half-close under the write lock: write(nil) leaves the
	// flush to a writer waiting for the lock, which would then write after
	// the FIN and lose what was buffered.
	c.wmu.Lock()
	if c.werr == nil && !c.wclosed {
		if c.bw.Buffered() > 0 {
			c.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
			c.werr = c.bw.Flush()
		}
		c.dirty.Store(false)
		if c.werr != nil {
			c.conn.Close()
		} else {
			c.wclosed = true
			cw.CloseWrite()
		}
	}
	c.wmu.Unlock()
	c.conn.SetReadDeadline(time.Now().Add(time.Second))
	// The reader sees EOF (or the deadline) and ends.
}

// shutdown ends every stream: the connection is gone.
func (c *h2Conn) shutdown() {
	c.conn.Close()
	c.mu.Lock()
	c.closed = true
	if c.drainTimer != nil {
		c.drainTimer.Stop()
	}
	for _, s := range c.streams {
		s.resetLocked(errStreamGone)
	}
	c.mu.Unlock()
	c.fastClosed()
}

// emit collects one decoded header field, checking it as RFC 9113 §8.2
// asks and counting it against max_header_bytes.
func (c *h2Conn) emit(f hpack.HeaderField) {
	if c.hbad || c.hlarge {
		return
	}
	c.hsize += len(f.Name) + len(f.Value) + 32
	if lim := c.p.MaxHeaderBytes; lim > 0 && c.hsize > lim {
		c.hlarge = true
		return
	}
	if !httpguts.ValidHeaderFieldValue(f.Value) {
		c.hbad = true
		return
	}
	if len(f.Name) > 0 && f.Name[0] == ':' {
		if c.hregular {
			c.hbad = true
			return
		}
	} else {
		c.hregular = true
		if !validH2Name(f.Name) {
			c.hbad = true
			return
		}
	}
	if n := c.p.MaxHeaderCount; n > 0 && len(c.hfields) >= n+4 {
		c.hlarge = true
		return
	}
	c.hfields = append(c.hfields, f)
}

// validH2Name accepts a lower-case token (RFC 9113 §8.2.1).
func validH2Name(n string) bool {
	if n == "" {
		return false
	}
	for i := 0; i < len(n); i++ {
		ch := n[i]
		if !tokenTable[ch] || ch >= 'A' && ch <= 'Z' {
			return false
		}
	}
	return true
}

type errCode = http2.ErrCode

// connErr ends the connection with a GOAWAY of its code.
type connErr errCode

func (e connErr) Error() string { return "http2 connection error " + errCode(e).String() }

// readLoop reads frames until the connection ends.
func (c *h2Conn) readLoop() {
	first := true
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			var ce http2.ConnectionError
			var se http2.StreamError
			switch {
			case errors.As(err, &ce):
				c.goAway(http2.ErrCode(ce))
				c.linger()
			case errors.As(err, &se):
				if first {
					c.goAway(http2.ErrCodeProtocol)
					return
				}
				c.streamError(se.StreamID, se.Code)
				continue
			case errors.Is(err, http2.ErrFrameTooLarge):
				c.goAway(http2.ErrCodeFrameSize)
				c.linger()
			}
			return
		}
		if first {
			// The client's preface ends with a SETTINGS frame.
			if sf, ok := f.(*http2.SettingsFrame); !ok || sf.IsAck() {
				c.goAway(http2.ErrCodeProtocol)
				return
			}
			first = false
		}
		if err := c.handle(f); err != nil {
			var ce connErr
			var fe http2.ConnectionError
			switch {
			case errors.As(err, &ce):
				c.goAway(errCode(ce))
				c.linger()
			case errors.As(err, &fe): // from the framer, within a header block
				c.goAway(errCode(fe))
				c.linger()
			case errors.Is(err, http2.ErrFrameTooLarge):
				c.goAway(http2.ErrCodeFrameSize)
				c.linger()
			}
			return
		}
	}
}

// streamError resets stream id for a stream error found while reading.
// resetByUsLocked reports whether sluice recently reset stream id. c.mu held.
func (c *h2Conn) resetByUsLocked(id uint32) bool {
	for _, r := range c.resetSent {
		if r == id {
			return true
		}
	}
	return false
}

func (c *h2Conn) streamError(id uint32, code errCode) {
	c.mu.Lock()
	if s := c.streams[id]; s != nil {
		s.resetLocked(errStreamGone)
		c.closedLocked(s)
	}
	c.mu.Unlock()
	c.rst(id, code, true)
}

func (c *h2Conn) meaningless() error {
	c.mu.Lock()
	c.meanless++
	n := c.meanless
	c.mu.Unlock()
	if n > h2MaxMeanless {
		return connErr(http2.ErrCodeEnhanceYourCalm)
	}
	return nil
}

func (c *h2Conn) handle(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.SettingsFrame:
		if f.IsAck() {
			c.acked = true
			return nil
		}
		if err := c.meaningless(); err != nil {
			return err
		}
		return c.settings(f)
	case *http2.PingFrame:
		if f.IsAck() {
			if f.Data == drainPing {
				c.finalGoAway()
			}
			return nil
		}
		if err := c.meaningless(); err != nil {
			return err
		}
		return c.write(func() error { return c.wfr.WritePing(true, f.Data) }, true)
	case *http2.WindowUpdateFrame:
		return c.windowUpdate(f)
	case *http2.HeadersFrame:
		return c.headers(f)
	case *http2.DataFrame:
		return c.data(f)
	case *http2.RSTStreamFrame:
		c.mu.Lock()
		defer c.mu.Unlock()
		if f.StreamID > c.lastID {
			return connErr(http2.ErrCodeProtocol) // idle stream
		}
		if s := c.streams[f.StreamID]; s != nil {
			if !s.done {
				c.calm--
				if c.calm < 0 {
					return connErr(http2.ErrCodeEnhanceYourCalm)
				}
			}
			s.resetLocked(errStreamReset)
			c.closedLocked(s)
		}
		return nil
	case *http2.PriorityFrame:
		// Priorities are ignored (as HAProxy does), but a stream may not
		// depend on itself (RFC 9113 §5.3.1).
		if f.StreamDep == f.StreamID {
			c.streamError(f.StreamID, http2.ErrCodeProtocol)
		}
		return c.meaningless()
	case *http2.GoAwayFrame:
		// The client leaves: what is in flight finishes, then close.
		c.drain()
		return nil
	case *http2.PushPromiseFrame:
		return connErr(http2.ErrCodeProtocol)
	case *http2.ContinuationFrame:
		return connErr(http2.ErrCodeProtocol) // the framer allows none here
	}
	return nil // unknown frame types are ignored (RFC 9113 §4.1)
}

func (c *h2Conn) settings(f *http2.SettingsFrame) error {
	initWin := int64(-1)
	if err := f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			return err
		}
		switch s.ID {
		case http2.SettingInitialWindowSize:
			initWin = int64(s.Val) // applied in order: of several values the last one holds
		case http2.SettingMaxFrameSize:
			c.mu.Lock()
			c.peerMaxFrame = s.Val
			c.mu.Unlock()
		}
		return nil
	}); err != nil {
		var ce http2.ConnectionError
		if errors.As(err, &ce) {
			return connErr(errCode(ce))
		}
		return err
	}
	// A smaller window holds from before the ACK, a larger one from after
	// it: a DATA frame the new window allows then follows the ACK, as a
	// client checking the window it set expects (h2spec 6.9.2/1 drops
	// frames read while it waits for the ACK).
	if initWin >= 0 && initWin < c.peerInitWinNow() {
		c.applyInitWin(initWin)
	}
	if err := c.write(func() error { return c.wfr.WriteSettingsAck() }, true); err != nil {
		return err
	}
	if initWin >= 0 {
		return c.applyInitWin(initWin)
	}
	return nil
}

func (c *h2Conn) peerInitWinNow() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.peerInitWin
}

// applyInitWin moves every stream's send window by the change of
// SETTINGS_INITIAL_WINDOW_SIZE to v (RFC 9113 §6.9.2).
func (c *h2Conn) applyInitWin(v int64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	delta := v - c.peerInitWin
	c.peerInitWin = v
	if delta == 0 {
		return nil
	}
	for _, st := range c.streams {
		st.sendWin += delta
		if st.sendWin > 1<<31-1 {
			return connErr(http2.ErrCodeFlowControl)
		}
		st.wakeLocked()
	}
	return nil
}

func (c *h2Conn) windowUpdate(f *http2.WindowUpdateFrame) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if f.StreamID == 0 {
		c.sendWin += int64(f.Increment)
		if c.sendWin > 1<<31-1 {
			return connErr(http2.ErrCodeFlowControl)
		}
		for _, s := range c.streams {
			s.wakeLocked()
		}
		return nil
	}
	if f.StreamID > c.lastID {
		return connErr(http2.ErrCodeProtocol)
	}
	s := c.streams[f.StreamID]
	if s == nil {
		return nil // closed: a window update may cross our END_STREAM
	}
	s.sendWin += int64(f.Increment)
	if s.sendWin > 1<<31-1 {
		s.resetLocked(errStreamGone)
		c.mu.Unlock()
		c.rst(f.StreamID, http2.ErrCodeFlowControl, true)
		c.mu.Lock() // for the deferred unlock
		return nil
	}
	s.wakeLocked()
	return nil
}

// readBlock reads the rest of a header block (CONTINUATION frames) and
// decodes it into c.hfields. It returns the decoding state: too large
// (431), malformed (stream error), or a connection error.
func (c *h2Conn) readBlock(f *http2.HeadersFrame) error {
	c.hblock = append(c.hblock[:0], f.HeaderBlockFragment()...)
	limit := 2*max(c.p.MaxHeaderBytes, 16<<10) + h2MaxFrame
	conts := 0
	ended := f.HeadersEnded()
	for !ended {
		cf, err := c.fr.ReadFrame()
		if err != nil {
			return err
		}
		cont, ok := cf.(*http2.ContinuationFrame)
		if !ok || cont.StreamID != f.StreamID {
			return connErr(http2.ErrCodeProtocol)
		}
		conts++
		c.hblock = append(c.hblock, cont.HeaderBlockFragment()...)
		if conts > h2MaxContinuations || len(c.hblock) > limit {
			return connErr(http2.ErrCodeEnhanceYourCalm)
		}
		ended = cont.HeadersEnded()
	}
	// The stream keeps the slice; the next one is made at the size the
	// last head needed, one allocation instead of a doubling per field.
	c.hfields = make([]hpack.HeaderField, 0, max(c.hcap, 8))
	c.hsize, c.hbad, c.hregular, c.hlarge = 0, false, false, false
	if _, err := c.dec.Write(c.hblock); err != nil {
		return connErr(http2.ErrCodeCompression)
	}
	if err := c.dec.Close(); err != nil {
		return connErr(http2.ErrCodeCompression)
	}
	c.hcap = min(len(c.hfields), 64)
	if cap(c.hblock) > 64<<10 {
		c.hblock = nil
	}
	return nil
}

func (c *h2Conn) headers(f *http2.HeadersFrame) error {
	if err := c.readBlock(f); err != nil {
		return err
	}
	id := f.StreamID
	if id%2 == 0 {
		return connErr(http2.ErrCodeProtocol)
	}
	if f.HasPriority() && f.Priority.StreamDep == id {
		c.streamError(id, http2.ErrCodeProtocol)
		return nil
	}
	c.mu.Lock()
	if s := c.streams[id]; s != nil && !(s.remoteClosed && s.done) {
		// Trailers: they end the request.
		switch {
		case s.reset != nil && c.resetByUsLocked(id):
			c.closedLocked(s)
			c.mu.Unlock()
			return nil
		case s.remoteClosed || s.reset != nil:
			c.mu.Unlock()
			c.streamError(id, http2.ErrCodeStreamClosed)
			return nil
		case !f.StreamEnded():
			c.mu.Unlock()
			return connErr(http2.ErrCodeProtocol)
		case c.hbad || c.hlarge || hasPseudo(c.hfields):
			c.mu.Unlock()
			c.streamError(id, http2.ErrCodeProtocol)
			return nil
		}
		s.trailers = c.hfields
		err := s.endLocked()
		if err == nil {
			c.closedLocked(s)
		}
		c.mu.Unlock()
		if err != nil {
			c.streamError(id, http2.ErrCodeProtocol)
		}
		return nil
	}
	if id <= c.lastID {
		if c.resetByUsLocked(id) {
			c.mu.Unlock()
			return nil
		}
		// Closed (both sides ended, its goroutine may still be finishing).
		c.mu.Unlock()
		return connErr(http2.ErrCodeStreamClosed)
	}
	c.lastID = id
	if c.final && id > c.goawayID {
		c.mu.Unlock()
		c.p.Counters.H2AfterGoAway.Add(1)
		return nil // after the final GOAWAY: ignored (RFC 9113 §6.8)
	}
	// working counts streams until their goroutines end; a client counts
	// them until both sides ended (RFC 9113 §5.1.2) and may open the next
	// one as soon as it reads a response's end, before that goroutine has
	// logged and returned. Only streams open in the protocol's sense are
	// refused past the limit; twice the limit bounds the goroutines.
	if c.working >= MaxH2Streams && (c.working >= 2*MaxH2Streams || c.openLocked() >= MaxH2Streams) {
		c.mu.Unlock()
		c.p.Counters.H2Refused.Add(1)
		c.rst(id, http2.ErrCodeRefusedStream, true)
		return c.meaningless() // refused streams cost little, but not nothing
	}
	// Counted as working from the moment its id is read: a final GOAWAY
	// (the drain timer's) naming it must not find the connection idle
	// and close it before the stream is answered.
	c.working++
	c.mu.Unlock()
	if c.hbad {
		c.rst(id, http2.ErrCodeProtocol, true)
		c.unreserve()
		return nil
	}
	s := newH2Stream(c, id, c.hfields, f.StreamEnded(), c.hlarge)
	if s == nil {
		c.rst(id, http2.ErrCodeProtocol, true)
		c.unreserve()
		return nil
	}
	c.mu.Lock()
	if c.closed {
		c.working--
		c.mu.Unlock()
		s.cancel()
		return io.EOF
	}
	c.streams[id] = s
	c.meanless = max(c.meanless-1, 0)
	c.wg.Add(1)
	c.mu.Unlock()
	if c.fastStart(s) {
		return nil
	}
	c.dispatch(s)
	return nil
}

// dispatch has a stream goroutine serve s: a parked one, or a new one.
func (c *h2Conn) dispatch(s *h2Stream) {
	c.mu.Lock()
	parked := c.parked > 0
	if parked {
		c.parked--
	}
	c.mu.Unlock()
	if parked {
		c.work <- s
	} else {
		go c.worker(s)
	}
}

// worker serves streams: s, then those handed to it while it is parked.
func (c *h2Conn) worker(s *h2Stream) {
	for s != nil {
		s.serve()
		s = c.park()
	}
}

// park waits for the next stream to serve; nil: the goroutine ends.
func (c *h2Conn) park() *h2Stream {
	c.mu.Lock()
	if c.closed || c.parked >= h2MaxParked {
		c.mu.Unlock()
		return nil
	}
	c.parked++
	if c.working == 0 {
		if c.parkTimer == nil {
			c.parkTimer = time.AfterFunc(h2ParkIdle, func() { c.unpark(true) })
		} else {
			c.parkTimer.Reset(h2ParkIdle)
		}
	}
	c.mu.Unlock()
	return <-c.work
}

// unpark ends the parked stream goroutines (idle: only if the connection
// still has no stream in flight).
func (c *h2Conn) unpark(idle bool) {
	c.mu.Lock()
	if idle && c.working > 0 {
		c.mu.Unlock()
		return
	}
	n := c.parked
	c.parked = 0
	if c.parkTimer != nil {
		c.parkTimer.Stop()
	}
	c.mu.Unlock()
	// Each counted goroutine takes exactly one value from work.
	for range n {
		c.work <- nil
	}
}

// unreserve gives back the place headers took for a stream that did not
// start, closing the connection when it was the last one after the final
// GOAWAY.
func (c *h2Conn) unreserve() {
	c.mu.Lock()
	c.working--
	closeNow := c.working == 0 && c.goawaySent
	c.mu.Unlock()
	if closeNow {
		c.closeGracefully()
	}
}

func hasPseudo(fs []hpack.HeaderField) bool {
	for _, f := range fs {
		if len(f.Name) > 0 && f.Name[0] == ':' {
			return true
		}
	}
	return false
}

func (c *h2Conn) data(f *http2.DataFrame) error {
	n := int64(f.Length) // padding included: it counts against the windows
	c.mu.Lock()
	if n > c.recvWin {
		c.mu.Unlock()
		return connErr(http2.ErrCodeFlowControl)
	}
	c.recvWin -= n
	id := f.StreamID
	if id > c.lastID {
		c.mu.Unlock()
		return connErr(http2.ErrCodeProtocol) // idle stream
	}
	s := c.streams[id]
	var code errCode
	switch {
	case (s == nil || s.reset != nil) && c.resetByUsLocked(id):
		// In flight when sluice reset it: ignored, its bytes given back.
		if s != nil {
			c.closedLocked(s)
		}
		inc := c.giveBack(n)
		c.mu.Unlock()
		c.sendWindow(inc, 0, 0, true)
		return nil
	case s == nil || s.remoteClosed || s.reset != nil:
		code = http2.ErrCodeStreamClosed
	case n > s.recvWin:
		code = http2.ErrCodeFlowControl
	}
	if code != 0 {
		if s != nil {
			s.resetLocked(errStreamGone)
			c.closedLocked(s)
		}
		inc := c.giveBack(n)
		c.mu.Unlock()
		c.sendWindow(inc, 0, 0, true)
		c.rst(id, code, true)
		return nil
	}
	s.recvWin -= n
	data := f.Data()
	// Padding is no data: given back at once.
	inc := c.giveBack(n - int64(len(data)))
	if len(data) == 0 && !f.StreamEnded() {
		c.mu.Unlock()
		c.sendWindow(inc, 0, 0, true)
		return c.meaningless()
	}
	s.recvd += int64(len(data))
	bad := s.contentLength >= 0 && s.recvd > s.contentLength
	if !bad && !s.resetErr() && !s.discard {
		s.in = append(s.in, data...)
		s.wakeLocked()
	} else {
		inc += c.giveBack(int64(len(data)))
	}
	if !bad && f.StreamEnded() {
		bad = s.endLocked() != nil
	}
	if bad {
		s.resetLocked(errStreamGone)
	}
	c.closedLocked(s)
	c.mu.Unlock()
	c.sendWindow(inc, 0, 0, true)
	if bad {
		c.rst(id, http2.ErrCodeProtocol, true)
	}
	return nil
}

// openLocked counts the streams open in the protocol's sense: not reset,
// and not ended both ways (a finished stream whose goroutine still winds
// down is closed for the client). Only at the stream limit. c.mu held.
func (c *h2Conn) openLocked() int {
	n := 0
	for _, s := range c.streams {
		if s.reset == nil && !(s.done && s.remoteClosed) {
			n++
		}
	}
	return n
}

// closedLocked forgets a discarding stream whose goroutine has ended once
// the client has ended or reset it. c.mu held.
func (c *h2Conn) closedLocked(s *h2Stream) {
	if s.exited && (s.remoteClosed || s.reset != nil) && c.streams[s.id] == s {
		delete(c.streams, s.id)
		c.halfOpen--
	}
}

// streamDone is called when a stream's goroutine ends.
func (c *h2Conn) streamDone(s *h2Stream) {
	if testStreamDoneHook != nil {
		testStreamDoneHook(string(s.req.target))
	}
	c.mu.Lock()
	s.exited = true
	if c.streams[s.id] == s {
		if s.discard && !s.remoteClosed && s.reset == nil {
			c.halfOpen++ // the reader closes it at the client's END_STREAM
		} else {
			delete(c.streams, s.id)
		}
	}
	// Unread request body: its bytes go back to the connection window.
	var inc int64
	if len(s.in) > 0 {
		inc = c.giveBack(int64(len(s.in)))
		s.in = nil
	}
	if s.served && c.calm < h2CalmBudget {
		c.calm++
	}
	c.working--
	idle := c.working == 0
	closeNow := idle && c.goawaySent
	if idle && !closeNow && c.p.TimeoutClient > 0 && !c.closed {
		// The reader's idle deadline counts from now.
		c.conn.SetReadDeadline(time.Now().Add(c.p.TimeoutClient))
	}
	c.mu.Unlock()
	c.sendWindow(inc, 0, 0, false)
	c.wg.Done()
	if closeNow {
		c.closeGracefully()
	}
}

// drainH2 starts the graceful drain of every HTTP/2 client connection.
func (p *Proxy) drainH2() {
	p.h2conns.Range(func(k, _ any) bool {
		k.(*h2Conn).drain()
		return true
	})
}
