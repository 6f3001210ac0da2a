package l7

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"sluice/backend"
)

// HTTP/1 clients of proto = "h2c" servers: the current request of a client
// connection goes over sluice's own HTTP/2 client (h2up.go) through the
// same connect, retry and exchange code as an HTTP/2 stream's. h1Up is its
// upClient: the body is read from the connection's head reader (fixed or
// chunked, 100-continue answered here), the response written back as
// HTTP/1.1 (Content-Length when the server gave one, else chunked with its
// trailers, or until close for HTTP/1.0), and the connection goes on with
// its next request on the lean path.

var (
	errBodyStopped = errors.New("request body read after the exchange ended")
	// errUpLength is a server whose DATA did not match its content-length:
	// the HTTP/1 client's framing would be wrong, the connection closes.
	errUpLength = errors.New("response body does not match its content-length")
)

// h1Up is one request of an HTTP/1 client connection to an h2c server;
// it lives in its clientConn and is reset for each request.
type h1Up struct {
	c     *clientConn
	lname []byte // scratch for lower-cased header names (kept across requests)
	val   []byte // scratch for edited header values (kept across requests)

	// The request body, read by copyUp's goroutine while the connection's
	// goroutine writes the response; stop ends the reads before the
	// connection reads its next request.
	mu       sync.Mutex // held while a body read uses the connection
	body     bool
	chunked  bool
	left     int64 // fixed: bytes left; chunked: bytes left in this chunk
	eof      bool
	berr     error
	stopped  atomic.Bool
	expect   bool // "100 Continue" to send before the body moves
	resend   bool // the body (if any) was read with the head: the head is intact for a resend
	rdl      lazyDeadline
	trailers []hpack.HeaderField

	// The response.
	isHead, http10 bool
	close          bool  // "Connection: close": the connection ends after this response
	chunkedOut     bool  // the body goes chunked
	noBody         bool  // HEAD, 204, 304: nothing follows the head
	fixed          int64 // Content-Length bytes still to come; -1: not so framed
	srv            *backend.Server
	keep           bool // the connection may serve another request
}

// forwardUp forwards the current request, routed to be (proto = "h2c",
// or alpn listing "h2" first), and reports whether the connection may
// serve another request; mv is a request moved here from the HTTP/1 path.
func (c *clientConn) forwardUp(be *backend.Backend, x *exchange, mv moved) bool {
	req := c.req
	if equalFold(req.method, "CONNECT") {
		if mv.srv != nil {
			mv.srv.Release() // moved here: the server chose h2
		}
		return c.fail(failBadRequest, be, x) // no tunnel through an HTTP/2 server
	}
	if c.up == nil {
		c.up = new(h1Up) // only clients of h2c servers pay for it; kept with c in its pool
	}
	u := c.up
	lname, val := u.lname, u.val
	*u = h1Up{c: c, lname: lname, val: val, body: c.hasBody(), chunked: req.chunked, left: req.contentLength,
		expect: req.expectCont && !req.http10, isHead: equalFold(req.method, "HEAD"), http10: req.http10,
		close: req.connClose || c.p.draining.Load(), fixed: -1}
	if req.chunked {
		u.left = 0
	}
	u.resend = !u.body || !req.chunked && req.contentLength <= int64(c.hr.buffered())
	u.rdl.timeout = c.p.TimeoutClient
	c.w = deadlineWriter{conn: c.conn, dl: &c.dl, timeout: c.p.TimeoutClient}
	if mv, ok := forwardUp(u, be, x, u.body, c.conn, mv); ok {
		return c.forward(be, x, mv) // the server chose HTTP/1.1 (alpn.go)
	}
	return u.keep
}

func (u *h1Up) proxy() *Proxy          { return u.c.p }
func (u *h1Up) upInfo() *ConnInfo      { return &u.c.info }
func (u *h1Up) upReq() *message        { return u.c.req }
func (u *h1Up) upCtx() context.Context { return u.c.p.stopCtx() }
func (u *h1Up) canResend() bool        { return u.resend }
func (u *h1Up) log(x *exchange)        { u.c.log(x) }

func (u *h1Up) encodeUpHead(e *hpack.Encoder) {
	c := u.c
	c.p.encodeUpHead(e, c.req, &c.info, c.addr, &u.lname, true, c.edits, c.seq, &u.val)
}

// startBody tells a client waiting with "Expect: 100-continue" to send
// its body: a server was found and the request is on its way.
func (u *h1Up) startBody() {
	if u.expect {
		u.expect = false
		u.c.w.Write([]byte("HTTP/1.1 100 Continue\r\n\r\n"))
	}
}

// Read reads the request body from the client connection.
func (u *h1Up) Read(q []byte) (int, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	// The deadline is set before stopped is looked at: a stop after the
	// look sets its own (now) after ours, and the read wakes.
	if t, ok := u.rdl.next(); ok {
		u.c.conn.SetReadDeadline(t)
	}
	switch {
	case u.stopped.Load():
		return 0, errBodyStopped
	case u.eof:
		return 0, io.EOF
	case u.berr != nil:
		return 0, u.berr
	}
	n, err := u.read(q)
	if err != nil && err != io.EOF {
		if isTimeout(err) && !u.stopped.Load() {
			err = errClientStalled // timeout_client: 408
		}
		u.berr = err
	}
	return n, err
}

func (u *h1Up) read(q []byte) (int, error) {
	hr := u.c.hr
	if !u.chunked {
		if int64(len(q)) > u.left {
			q = q[:u.left]
		}
		n, err := hr.Read(q)
		u.left -= int64(n)
		if u.left == 0 {
			u.eof = true
			return n, io.EOF
		}
		if err == io.EOF || err == nil && n == 0 {
			err = io.ErrUnexpectedEOF
		}
		return n, err
	}
	if u.left == 0 {
		line, err := hr.readLine()
		if err != nil {
			return 0, chunkErr(err)
		}
		size, ok := parseChunkSize(line)
		if !ok {
			return 0, errBadChunk
		}
		if size == 0 {
			return 0, u.readTrailers()
		}
		u.left = size
	}
	if int64(len(q)) > u.left {
		q = q[:u.left]
	}
	n, err := hr.Read(q)
	u.left -= int64(n)
	if err != nil {
		return n, chunkErr(err)
	}
	if u.left == 0 {
		crlf, err := hr.readLine()
		if err != nil {
			return n, chunkErr(err)
		}
		if len(crlf) != 0 {
			return n, errBadChunk
		}
	}
	return n, nil
}

// readTrailers reads the trailers of a chunked request body: they go to
// the server as HTTP/2 trailers (copies: the read buffer is reused).
func (u *h1Up) readTrailers() error {
	hr := u.c.hr
	for {
		t, err := hr.readLine()
		if err != nil {
			return chunkErr(err)
		}
		if !validTrailer(t) {
			return errBadChunk
		}
		if len(t) == 0 {
			u.eof = true
			return io.EOF
		}
		colon := bytes.IndexByte(t, ':')
		name, value := t[:colon], trimOWS(t[colon+1:])
		if connSpecific(name) || framing(name) || equalFold(name, "host") || len(u.trailers) >= 64 {
			continue
		}
		l := []byte(string(name))
		for i, ch := range l {
			if ch >= 'A' && ch <= 'Z' {
				l[i] = ch + 'a' - 'A'
			}
		}
		u.trailers = append(u.trailers, hpack.HeaderField{Name: string(l), Value: string(value)})
	}
}

func (u *h1Up) upTrailers() []hpack.HeaderField { return u.trailers }

// stop ends the body's reads: one blocked on the connection is woken,
// later ones fail. It reports whether the body was read to its end, so
// the connection is at the next request.
func (u *h1Up) stop() bool {
	if !u.body {
		return true
	}
	u.stopped.Store(true)
	conn := u.c.conn
	conn.SetReadDeadline(time.Now()) // wake a blocked read, if any
	u.mu.Lock()
	done := u.eof
	u.mu.Unlock()
	conn.SetReadDeadline(time.Time{})
	return done
}

// stopBody is stop for an exchange that is not answered with a failure:
// a malformed chunked body is counted here (fail counts its own).
func (u *h1Up) stopBody() {
	u.stop()
	u.mu.Lock()
	bad := errors.Is(u.berr, errBadChunk)
	u.berr = nil // counted once
	u.mu.Unlock()
	if bad {
		u.c.p.Counters.BadRequest.Add(1)
	}
}

// fail answers with sluice's own answer for f, as clientConn.fail does;
// a request whose body may be left half read closes the connection, and
// the answer says so.
func (u *h1Up) fail(f failure, be *backend.Backend, x *exchange) {
	c := u.c
	if !u.body {
		u.keep = c.fail(f, be, x)
		return
	}
	u.stop()
	a := &failures[f]
	c.p.countFailure(f, be)
	x.terminated = a.term
	if a.after == refuseConn {
		c.refuse(a.status, x)
	} else {
		c.reply(a.status, x, true)
	}
	u.keep = false
}

// upRefused: the server takes no stream; the request was never sent.
func (u *h1Up) upRefused(be *backend.Backend, x *exchange) { u.fail(failNoServer, be, x) }

// upInterim passes an interim response on (not to HTTP/1.0 clients; 100
// Continue is this side's own business).
func (u *h1Up) upInterim(code int) {
	if u.http10 || code == 100 {
		return
	}
	c := u.c
	b := appendStatusLine(c.out[:0], code)
	c.out = append(b, "\r\n"...)
	u.flush()
}

func appendStatusLine(b []byte, code int) []byte {
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(code), 10)
	b = append(b, ' ')
	b = append(b, http.StatusText(code)...)
	return append(b, "\r\n"...)
}

// upHead writes the response head; lazy keeps it for the body bytes that
// follow at once (one write).
func (u *h1Up) upHead(status int, head []hpack.HeaderField, cookie string, srv *backend.Server, end, lazy bool) error {
	c := u.c
	u.srv = srv
	cl, clOK, trailers := int64(-1), true, false
	for _, f := range head {
		switch f.Name {
		case "content-length":
			n, ok := parseDigits(bytesOf(f.Value))
			if !ok || cl >= 0 && n != cl {
				clOK = false
			}
			cl = n
		case "trailer":
			trailers = true
		}
	}
	if !clOK {
		cl = -1 // no framing to trust: the body's own end decides
	}
	u.noBody = u.isHead || status == 204 || status == 304
	switch {
	case u.noBody:
	case trailers && !u.http10 && !end:
		u.chunkedOut = true // the announced trailers have a place
	case cl >= 0:
		u.fixed = cl
	case end:
		u.fixed = 0 // the whole response is here: its length is known
	case u.http10:
		u.close = true // framed by the close
	default:
		u.chunkedOut = true
	}
	b := appendStatusLine(c.out[:0], status)
	for _, f := range head {
		name := bytesOf(f.Name)
		if connSpecific(name) || f.Name == "content-length" || !u.chunkedOut && f.Name == "trailer" ||
			c.p.dropsField(c.edits, true, name) {
			continue
		}
		b = append(b, f.Name...)
		b = append(b, ": "...)
		b = append(b, f.Value...)
		b = append(b, "\r\n"...)
	}
	b = c.p.appendEdits(b, c.edits, true, &c.info, c.seq)
	switch {
	case u.fixed >= 0 || u.noBody && cl >= 0 && status != 204:
		b = append(b, "content-length: "...)
		b = strconv.AppendInt(b, max(u.fixed, cl), 10)
		b = append(b, "\r\n"...)
	case u.chunkedOut:
		b = append(b, "transfer-encoding: chunked\r\n"...)
	}
	if cookie != "" {
		b = append(b, "set-cookie: "...)
		b = appendStickyCookie(b, cookie, srv.ID)
		b = append(b, "\r\n"...)
	}
	if u.close {
		b = append(b, "connection: close\r\n"...)
	} else if u.http10 {
		b = append(b, "connection: keep-alive\r\n"...)
	}
	c.out = append(b, "\r\n"...)
	c.p.Counters.BytesOut.Add(uint64(len(c.out)))
	srv.Counters.BytesOut.Add(uint64(len(c.out)))
	if lazy {
		return nil
	}
	return u.flush()
}

// flush writes what c.out holds.
func (u *h1Up) flush() error {
	c := u.c
	if len(c.out) == 0 {
		return nil
	}
	_, err := c.w.Write(c.out)
	c.out = c.out[:0]
	return err
}

// writeData writes body bytes, framed as the head said; end: the last.
func (u *h1Up) writeData(b []byte, end bool) error {
	c := u.c
	switch {
	case u.noBody:
		b = nil // a server's body on HEAD, 204, 304 goes nowhere
	case u.fixed >= 0:
		if int64(len(b)) > u.fixed {
			return errUpLength
		}
		u.fixed -= int64(len(b))
		c.out = append(c.out, b...)
	case u.chunkedOut && len(b) > 0:
		c.out = strconv.AppendInt(c.out, int64(len(b)), 16)
		c.out = append(c.out, "\r\n"...)
		c.out = append(c.out, b...)
		c.out = append(c.out, "\r\n"...)
	default:
		c.out = append(c.out, b...)
	}
	if end {
		return u.upEnd(nil)
	}
	return u.flush()
}

// upEnd ends the body: the last chunk with the trailers, when chunked.
func (u *h1Up) upEnd(trailers []hpack.HeaderField) error {
	c := u.c
	if u.fixed > 0 {
		u.flush()
		return errUpLength // the server ended short of its content-length
	}
	if u.chunkedOut {
		c.out = append(c.out, "0\r\n"...)
		for _, f := range trailers {
			if connSpecific(bytesOf(f.Name)) {
				continue
			}
			c.out = append(c.out, f.Name...)
			c.out = append(c.out, ": "...)
			c.out = append(c.out, f.Value...)
			c.out = append(c.out, "\r\n"...)
		}
		c.out = append(c.out, "\r\n"...)
	}
	return u.flush()
}

// upAbort: the server broke off its response; the client learns it from
// the connection's close (a chunked body without its last chunk, a body
// short of its length).
func (u *h1Up) upAbort(http2.ErrCode) {
	u.flush()
	u.stopBody()
	u.keep = false
}

func (u *h1Up) clientBroke(error) {
	u.stopBody()
	u.keep = false
}

// upDone: the response went out whole; the connection goes on if the
// request body was read to its end and nothing asked for the close.
func (u *h1Up) upWhole() {} // one response at a time: nothing to batch

func (u *h1Up) upDone() {
	done := u.stop()
	u.stopBody() // counts a malformed body
	u.keep = done && !u.close
}
