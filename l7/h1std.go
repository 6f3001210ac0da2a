package l7

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"sluice/backend"
)

// forwardStd forwards the current request of an HTTP/1 client connection,
// already read, parsed and routed to be, through the net/http side: the way
// to backends with proto = "h2c" (gRPC-web and plain HTTP/1 clients of an
// h2c server). The request's framing has been checked by the HTTP/1 path,
// the body is read from the connection's own buffer and the response
// written back as HTTP/1.1, so the connection goes on with the next request
// on the lean path. It returns whether the connection may serve another
// request.
func (c *clientConn) forwardStd(be *backend.Backend, x *exchange) bool {
	p := c.p
	req := c.req
	u, err := url.ParseRequestURI(string(req.target))
	if err != nil {
		return c.fail(failBadRequest, be, x)
	}
	r := &http.Request{
		Method:     string(req.method),
		URL:        u,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     make(http.Header, len(req.fields)),
		Host:       string(req.host),
		RequestURI: string(req.target),
		RemoteAddr: c.info.Client.String(),
		Body:       http.NoBody,
	}
	if req.http10 {
		r.Proto, r.ProtoMinor = "HTTP/1.0", 0
	}
	for _, f := range req.fields {
		switch {
		case equalFold(f.name, "host"), equalFold(f.name, "content-length"),
			equalFold(f.name, "transfer-encoding"), equalFold(f.name, "expect"),
			equalFold(f.name, "upgrade"), equalFold(f.name, "trailer"):
			continue // framing is ours; an h2c server cannot switch protocols
		case !equalFold(f.name, "te") && req.hopByHop(f.name):
			continue // ReverseProxy keeps "TE: trailers" alone
		}
		k := http.CanonicalHeaderKey(string(f.name))
		r.Header[k] = append(r.Header[k], string(f.value))
	}
	w := &h1Writer{
		c:       c,
		hdr:     make(http.Header),
		isHead:  r.Method == "HEAD",
		http10:  req.http10,
		close:   req.connClose || p.draining.Load(), // an HTTP/1.0 keep-alive client keeps it
		hasBody: req.chunked || req.contentLength > 0,
	}
	w.bw = bufio.NewWriterSize(countWriter{w}, 8<<10)
	var body *h1Body
	switch {
	case req.chunked:
		body = &h1Body{c: c, w: w, chunked: true, expect: req.expectCont}
		r.Body, r.ContentLength = body, -1
	case req.contentLength > 0:
		body = &h1Body{c: c, w: w, left: req.contentLength, expect: req.expectCont}
		r.Body, r.ContentLength = body, req.contentLength
	}
	sr := &stdReq{be: be, info: &c.info, watch: c.conn}
	sr.start = x.start
	// ReverseProxy aborts a response it cannot finish with a panic of
	// http.ErrAbortHandler when it runs under a server; we are that server.
	s := p.std()
	ctx := context.WithValue(context.WithValue(p.stopCtx(), http.ServerContextKey, s.hs), stdReqKey{}, sr)
	aborted := false
	func() {
		defer func() {
			if e := recover(); e != nil {
				if e != http.ErrAbortHandler {
					panic(e)
				}
				aborted = true
			}
		}()
		s.rp.ServeHTTP(w, r.WithContext(ctx))
	}()
	bodyDone := true
	if body != nil {
		bodyDone = body.stop()
		if errors.Is(body.err, errBadChunk) {
			p.Counters.BadRequest.Add(1)
		}
	}
	if !aborted {
		w.finish()
	}
	if s := sr.srv.Load(); s != nil {
		x.server = s.Name
	}
	x.connected, x.respHead = sr.connected, sr.respHead
	x.status, x.retries = sr.status, sr.retries
	x.bytesOut = w.written()
	x.terminated = sr.terminated
	if aborted {
		x.terminated = "body"
	}
	c.log(x)
	return !aborted && w.err == nil && !w.close && bodyDone
}

// h1Body is a request body read from an HTTP/1 client connection, decoding
// chunked encoding. The transport may read it from its own goroutine; stop
// ends that before the connection reads its next request.
type h1Body struct {
	mu      sync.Mutex // held while reading the connection
	c       *clientConn
	w       *h1Writer
	chunked bool
	left    int64 // fixed: bytes left; chunked: bytes left in this chunk
	expect  bool  // send "100 Continue" before the first read
	eof     bool
	err     error
	stopped atomic.Bool
}

var errBodyStopped = errors.New("request body read after the exchange ended")

func (b *h1Body) Read(q []byte) (int, error) {
	if b.stopped.Load() {
		return 0, errBodyStopped
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.stopped.Load():
		return 0, errBodyStopped
	case b.eof:
		return 0, io.EOF
	case b.err != nil:
		return 0, b.err
	}
	c := b.c
	if b.expect {
		b.expect = false
		if err := b.w.sendContinue(); err != nil {
			b.err = err
			return 0, err
		}
	}
	if c.p.TimeoutClient > 0 {
		c.conn.SetReadDeadline(time.Now().Add(c.p.TimeoutClient))
	}
	n, err := b.read(q)
	if err != nil && err != io.EOF {
		b.err = err
	}
	return n, err
}

func (b *h1Body) read(q []byte) (int, error) {
	hr := b.c.hr
	if !b.chunked {
		if int64(len(q)) > b.left {
			q = q[:b.left]
		}
		n, err := hr.Read(q)
		b.left -= int64(n)
		if b.left == 0 {
			b.eof = true
			return n, io.EOF
		}
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return n, err
	}
	if b.left == 0 {
		line, err := hr.readLine()
		if err != nil {
			return 0, chunkErr(err)
		}
		size, ok := parseChunkSize(line)
		if !ok {
			return 0, errBadChunk
		}
		if size == 0 {
			// Trailers of a request body are read and dropped: ReverseProxy
			// has no way to pass them on.
			for {
				t, err := hr.readLine()
				if err != nil {
					return 0, chunkErr(err)
				}
				if !validTrailer(t) {
					return 0, errBadChunk
				}
				if len(t) == 0 {
					b.eof = true
					return 0, io.EOF
				}
			}
		}
		b.left = size
	}
	if int64(len(q)) > b.left {
		q = q[:b.left]
	}
	n, err := hr.Read(q)
	b.left -= int64(n)
	if err != nil {
		return n, chunkErr(err)
	}
	if b.left == 0 {
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

// Close does nothing: the exchange ends the body with stop.
func (b *h1Body) Close() error { return nil }

// stop ends reading: a read blocked on the connection is woken, later ones
// fail. It reports whether the body was read to its end, so the connection
// is at the next request.
func (b *h1Body) stop() bool {
	b.stopped.Store(true)
	b.c.conn.SetReadDeadline(time.Now()) // wake a blocked read, if any
	b.mu.Lock()
	done := b.eof
	b.mu.Unlock()
	b.c.conn.SetReadDeadline(time.Time{})
	return done
}

// h1Writer is the http.ResponseWriter of forwardStd: it writes HTTP/1.1
// to the client, chunked when the length is unknown, with trailers.
type h1Writer struct {
	c           *clientConn
	bw          *bufio.Writer
	hdr         http.Header
	wroteHeader bool
	status      int
	chunked     bool
	noBody      bool
	isHead      bool
	http10      bool
	close       bool // close the connection after this response
	hasBody     bool // the request has a body
	untilClose  bool // body framed by closing the connection
	err         error

	// The body's reader may send "100 Continue" from the transport's
	// goroutine: writes to the connection take wmu.
	wmu  sync.Mutex
	sent bool  // some of the response went out
	n    int64 // bytes written to the client
}

type countWriter struct{ w *h1Writer }

func (cw countWriter) Write(b []byte) (int, error) {
	w := cw.w
	w.wmu.Lock()
	defer w.wmu.Unlock()
	w.sent = true
	if t := w.c.p.TimeoutClient; t > 0 {
		w.c.conn.SetWriteDeadline(time.Now().Add(t))
	}
	n, err := w.c.conn.Write(b)
	w.n += int64(n)
	return n, err
}

// sendContinue tells a client waiting with "Expect: 100-continue" to send
// its body, unless the response has begun.
func (w *h1Writer) sendContinue() error {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	if w.sent {
		return nil
	}
	w.c.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := w.c.conn.Write([]byte("HTTP/1.1 100 Continue\r\n\r\n"))
	return err
}

func (w *h1Writer) Header() http.Header { return w.hdr }

func (w *h1Writer) written() int64 {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	return w.n
}

func (w *h1Writer) WriteHeader(code int) {
	if w.wroteHeader || w.err != nil {
		return
	}
	if code >= 100 && code < 200 {
		if code == 101 {
			code = http.StatusBadGateway // never asked for: the Upgrade header was dropped
		} else {
			w.writeHead(code, false)
			w.FlushError()
			return
		}
	}
	w.wroteHeader = true
	w.status = code
	cl := w.hdr.Get("Content-Length")
	switch {
	case w.isHead || code == 204 || code == 304:
		w.noBody = true
	case cl != "":
	case w.http10:
		w.untilClose, w.close = true, true
	default:
		w.chunked = true
	}
	w.writeHead(code, true)
}

func (w *h1Writer) writeHead(code int, final bool) {
	b := w.bw
	b.WriteString("HTTP/1.1 ")
	b.WriteString(strconv.Itoa(code))
	b.WriteByte(' ')
	b.WriteString(http.StatusText(code))
	b.WriteString("\r\n")
	for k, vs := range w.hdr {
		if strings.HasPrefix(k, http.TrailerPrefix) || k == "Trailer" && !w.chunked {
			continue
		}
		if final && (k == "Transfer-Encoding" || k == "Connection") {
			continue
		}
		for _, v := range vs {
			b.WriteString(k)
			b.WriteString(": ")
			b.WriteString(v)
			b.WriteString("\r\n")
		}
	}
	if final {
		if w.chunked {
			b.WriteString("Transfer-Encoding: chunked\r\n")
		}
		if w.close {
			b.WriteString("Connection: close\r\n")
		} else if w.http10 {
			b.WriteString("Connection: keep-alive\r\n")
		}
	}
	b.WriteString("\r\n")
}

func (w *h1Writer) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.err != nil {
		return 0, w.err
	}
	if w.noBody || len(p) == 0 {
		return len(p), nil
	}
	if w.chunked {
		w.bw.WriteString(strconv.FormatInt(int64(len(p)), 16))
		w.bw.WriteString("\r\n")
		w.bw.Write(p)
		_, err := w.bw.WriteString("\r\n")
		if err != nil {
			w.err = err
			return 0, err
		}
		return len(p), nil
	}
	n, err := w.bw.Write(p)
	if err != nil {
		w.err = err
	}
	return n, err
}

// FlushError sends what is buffered to the client (ReverseProxy flushes
// after every write: streaming).
func (w *h1Writer) FlushError() error {
	if w.err != nil {
		return w.err
	}
	if err := w.bw.Flush(); err != nil {
		w.err = err
	}
	return w.err
}

func (w *h1Writer) Flush() { w.FlushError() }

// finish ends the response: the last chunk with the trailers.
func (w *h1Writer) finish() {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.err != nil {
		return
	}
	if w.chunked {
		b := w.bw
		b.WriteString("0\r\n")
		for _, decl := range w.hdr["Trailer"] {
			for k := range strings.SplitSeq(decl, ",") {
				k = http.CanonicalHeaderKey(strings.TrimSpace(k))
				for _, v := range w.hdr[k] {
					b.WriteString(k + ": " + v + "\r\n")
				}
			}
		}
		for k, vs := range w.hdr {
			if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok {
				for _, v := range vs {
					b.WriteString(name + ": " + v + "\r\n")
				}
			}
		}
		b.WriteString("\r\n")
	}
	w.FlushError()
}
