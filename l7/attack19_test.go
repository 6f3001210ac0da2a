package l7_test

// Attack tests for the HTTP/2 client side (issue 19): an edge attacker's
// view of sluice's own h2 handler in front of pooled HTTP/1.1 server
// connections. Raw http2.Framer clients, real HTTP/1.1 servers.

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"sluice/engine"
	"sluice/internal/testutil"
)

// a19Stream is what a client saw on one stream.
type a19Stream struct {
	heads    []http2.MetaHeadersFrame // every HEADERS block, in order
	body     bytes.Buffer
	ended    bool
	rst      bool
	rstCode  http2.ErrCode
	dataSeen chan struct{} // closed at the first DATA byte
	corrupt  error         // the framer refused its header block
}

// a19Client is an HTTP/2 client made of a bare Framer; a sync.Cond wakes
// waiters on every frame, the connection deadline bounds every wait.
type a19Client struct {
	t    *testing.T
	conn net.Conn
	fr   *http2.Framer
	wmu  sync.Mutex
	enc  *hpack.Encoder
	hb   bytes.Buffer

	mu       sync.Mutex
	cond     *sync.Cond
	streams  map[uint32]*a19Stream
	goaways  []http2.GoAwayFrame
	pings    [][8]byte
	closed   bool
	autoWin  bool // windows as large as can be: the client reads all at once
	sentBack uint32
	readErr  error
}

func a19Dial(t *testing.T, front string, autoWin bool, settings ...http2.Setting) *a19Client {
	t.Helper()
	conn := testutil.Dial(t, front)
	// Generous: under -race on a loaded 2-core machine the heaviest test
	// here moves tens of MiB; a stall still ends the test.
	conn.SetDeadline(time.Now().Add(120 * time.Second))
	c := &a19Client{t: t, conn: conn, fr: http2.NewFramer(conn, conn), streams: map[uint32]*a19Stream{}, autoWin: autoWin}
	c.cond = sync.NewCond(&c.mu)
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.fr.MaxHeaderListSize = 1 << 20
	c.enc = hpack.NewEncoder(&c.hb)
	if _, err := conn.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	if autoWin {
		settings = append(settings, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1<<31 - 1})
	}
	if err := c.fr.WriteSettings(settings...); err != nil {
		t.Fatal(err)
	}
	if autoWin {
		// Windows at most from the start, and more as DATA comes.
		if err := c.fr.WriteWindowUpdate(0, 1<<30); err != nil {
			t.Fatal(err)
		}
	}
	go c.read()
	return c
}

func (c *a19Client) stream(id uint32) *a19Stream {
	s := c.streams[id]
	if s == nil {
		s = &a19Stream{dataSeen: make(chan struct{})}
		c.streams[id] = s
	}
	return s
}

func (c *a19Client) read() {
	defer func() {
		c.mu.Lock()
		c.closed = true
		c.cond.Broadcast()
		c.mu.Unlock()
	}()
	for {
		f, err := c.fr.ReadFrame()
		var se http2.StreamError
		if errors.As(err, &se) {
			// A header block no HTTP/2 peer may send (e.g. a name with
			// CR LF): recorded, as the stream's end.
			c.mu.Lock()
			s := c.stream(se.StreamID)
			s.corrupt, s.rst = se, true
			c.cond.Broadcast()
			c.mu.Unlock()
			continue
		}
		if err != nil {
			c.mu.Lock()
			c.readErr = err
			c.mu.Unlock()
			return
		}
		c.mu.Lock()
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				c.send(func(fr *http2.Framer) error { return fr.WriteSettingsAck() })
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				c.pings = append(c.pings, f.Data)
			}
		case *http2.MetaHeadersFrame:
			s := c.stream(f.StreamID)
			s.heads = append(s.heads, *f)
			if f.StreamEnded() {
				s.ended = true
			}
		case *http2.DataFrame:
			s := c.stream(f.StreamID)
			if s.body.Len() == 0 && len(f.Data()) > 0 {
				close(s.dataSeen)
			}
			s.body.Write(f.Data())
			if f.StreamEnded() {
				s.ended = true
			}
			if n := uint32(len(f.Data())); c.autoWin && n > 0 {
				// Not under wmu: a writer blocked on a peer that does not
				// read must not stop this reader.
				c.sentBack += n
				if c.sentBack > 1<<29 {
					c.sentBack = 0
					go c.send(func(fr *http2.Framer) error { return fr.WriteWindowUpdate(0, 1<<29) })
				}
			}
		case *http2.RSTStreamFrame:
			s := c.stream(f.StreamID)
			s.rst, s.rstCode = true, f.ErrCode
		case *http2.GoAwayFrame:
			c.goaways = append(c.goaways, *f)
		}
		c.cond.Broadcast()
		c.mu.Unlock()
	}
}

func (c *a19Client) send(fn func(fr *http2.Framer) error) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return fn(c.fr)
}

// open sends a request head on stream id: the pseudo-headers and fields
// as given, in order (no checks: an attacker's head).
func (c *a19Client) open(id uint32, end bool, fields ...string) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.hb.Reset()
	for i := 0; i+1 < len(fields); i += 2 {
		c.enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	return c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: c.hb.Bytes(), EndStream: end, EndHeaders: true})
}

// get opens stream id with a GET for path.
func (c *a19Client) get(id uint32, path string, extra ...string) error {
	return c.open(id, true, append([]string{":method", "GET", ":scheme", "http", ":authority", "x", ":path", path}, extra...)...)
}

// wait waits until cond (called with c.mu held) holds or the connection
// ends; it reports cond.
func (c *a19Client) wait(cond func() bool) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for !cond() && !c.closed {
		c.cond.Wait()
	}
	return cond()
}

// result waits for stream id to end (END_STREAM or RST_STREAM) and returns
// its final status, body and reset code.
func (c *a19Client) result(id uint32) (status, body string, rst http2.ErrCode, ok bool) {
	ended := c.wait(func() bool { s := c.streams[id]; return s != nil && (s.ended || s.rst) })
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.streams[id]
	if s == nil {
		return "", "", 0, false
	}
	for _, h := range s.heads {
		if st := h.PseudoValue("status"); st != "" && st[0] != '1' {
			status = st
		}
	}
	if s.rst {
		rst = s.rstCode
	}
	return status, s.body.String(), rst, ended
}

// a19Server is a real HTTP/1.1 server written by hand, so that it can
// answer with any framing; answer writes the response for one request
// (head as read, body) and reports whether to keep the connection.
type a19Server struct {
	addr  string
	mu    sync.Mutex
	heads []string
	conns int
}

func a19Serve(t *testing.T, answer func(w *bufio.Writer, head string, body []byte, c net.Conn) bool) *a19Server {
	s := &a19Server{}
	s.addr = a19Listen(t, func(c net.Conn) {
		s.mu.Lock()
		s.conns++
		s.mu.Unlock()
		br := bufio.NewReader(c)
		w := bufio.NewWriter(c)
		for {
			head, body, err := a19ReadRequest(br)
			if err != nil {
				return
			}
			s.mu.Lock()
			s.heads = append(s.heads, head)
			s.mu.Unlock()
			keep := answer(w, head, body, c)
			if w.Flush() != nil || !keep {
				return
			}
		}
	})
	return s
}

// a19Listen serves each connection with serve until the test ends.
func a19Listen(t *testing.T, serve func(c net.Conn)) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var open []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range open {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			open = append(open, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				serve(c)
			}()
		}
	}()
	return ln.Addr().String()
}

// a19ReadRequest reads one HTTP/1.1 request: its head and its body
// (Content-Length or chunked).
func a19ReadRequest(br *bufio.Reader) (string, []byte, error) {
	var head strings.Builder
	cl, chunked := -1, false
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return "", nil, err
		}
		head.WriteString(line)
		if line == "\r\n" {
			break
		}
		k, v, _ := strings.Cut(strings.TrimRight(line, "\r\n"), ":")
		switch strings.ToLower(k) {
		case "content-length":
			cl, _ = strconv.Atoi(strings.TrimSpace(v))
		case "transfer-encoding":
			chunked = strings.Contains(strings.ToLower(v), "chunked")
		}
	}
	var body []byte
	switch {
	case chunked:
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return "", nil, err
			}
			n, err := strconv.ParseInt(strings.TrimSpace(line), 16, 64)
			if err != nil {
				return "", nil, err
			}
			if n == 0 {
				for {
					l, err := br.ReadString('\n')
					if err != nil {
						return "", nil, err
					}
					if l == "\r\n" {
						break
					}
				}
				break
			}
			b := make([]byte, n+2)
			if _, err := io.ReadFull(br, b); err != nil {
				return "", nil, err
			}
			body = append(body, b[:n]...)
		}
	case cl > 0:
		body = make([]byte, cl)
		if _, err := io.ReadFull(br, body); err != nil {
			return "", nil, err
		}
	}
	return head.String(), body, nil
}

func (s *a19Server) lastHead() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.heads) == 0 {
		return ""
	}
	return s.heads[len(s.heads)-1]
}

func a19Front(t *testing.T, frontExtra, beExtra string, addr string) string {
	_, front := a19Start(t, frontExtra, beExtra, addr)
	return front
}

// a19Start is a19Front, with the engine.
func a19Start(t *testing.T, frontExtra, beExtra string, addr string) (*engine.Engine, string) {
	return testutil.Start(t, fmt.Sprintf(`
[frontend.web]
mode = "http"
bind = ["{{FRONT}}"]
h2c = true
default_backend = "app"
%s
[backend.app]
%s
[[backend.app.server]]
name = "a"
address = %q
`, frontExtra, beExtra, addr))
}

func requestLine(head string) string {
	l, _, _ := strings.Cut(head, "\r\n")
	return l
}

// Cookie crumbs (RFC 9113 §8.2.3) separated by another header must still
// reach the HTTP/1.1 server as one well-formed cookie header, and the
// header between them, and those after, intact. Browsers do send crumbs
// apart (hpack-indexed cookies first, literal ones later).
func TestA19CookieCrumbsAroundOtherHeader(t *testing.T) {
	srv := a19Serve(t, func(w *bufio.Writer, head string, _ []byte, _ net.Conn) bool {
		fmt.Fprintf(w, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		return true
	})
	front := a19Front(t, "", "", srv.addr)
	c := a19Dial(t, front, true)
	if err := c.get(1, "/c", "cookie", "a=1", "x-mid", "m", "cookie", "b=2", "x-last", "l"); err != nil {
		t.Fatal(err)
	}
	status, body, rst, _ := c.result(1)
	if status != "200" || body != "ok" {
		t.Fatalf("stream 1: %q %q rst %v; server saw %q", status, body, rst, srv.lastHead())
	}
	head := srv.lastHead()
	var cookies []string
	for _, l := range strings.Split(head, "\r\n")[1:] {
		if l == "" {
			continue
		}
		k, v, ok := strings.Cut(l, ":")
		if !ok || strings.ContainsAny(k, " ;") {
			t.Errorf("malformed header line %q in\n%s", l, head)
			continue
		}
		if strings.EqualFold(k, "cookie") {
			cookies = append(cookies, strings.TrimSpace(v))
		}
	}
	if len(cookies) != 1 || cookies[0] != "a=1; b=2" {
		t.Errorf("cookies %q, want one \"a=1; b=2\"", cookies)
	}
	if !strings.Contains(head, "\r\nx-mid: m\r\n") || !strings.Contains(head, "\r\nx-last: l\r\n") {
		t.Errorf("headers lost:\n%s", head)
	}
}

// A request body still coming in while the response goes out (a server
// that answers as it reads: streaming, echo, gRPC-web over HTTP/1.1):
// the stream's body reader and its response writer both wait on the
// client. A WINDOW_UPDATE must wake the writer even while the reader waits
// for DATA; sluice gives both one wake channel (and one timer), the
// reader, waiting first, takes the wake-up meant for the writer, and the
// response stalls until timeout_client resets the stream.
func TestA19WindowUpdateWakesWriterWhileBodyReaderWaits(t *testing.T) {
	const size = 200
	addr := a19Listen(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			line, err := br.ReadString('\n')
			if err != nil || line == "\r\n" {
				break
			}
		}
		// The whole answer at once, before the request body.
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", size, strings.Repeat("e", size))
		io.Copy(io.Discard, br)
	})
	front := a19Front(t, `timeout_client = "2s"`, "", addr)
	// Window 0: the response moves one byte per WINDOW_UPDATE.
	c := a19Dial(t, front, false, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
	if err := c.open(1, false, ":method", "POST", ":scheme", "http", ":authority", "x", ":path", "/echo"); err != nil {
		t.Fatal(err)
	}
	c.wait(func() bool { s := c.streams[1]; return s != nil && len(s.heads) > 0 || c.closed })
	for i := 1; i <= size; i++ {
		if err := c.send(func(fr *http2.Framer) error { return fr.WriteWindowUpdate(1, 1) }); err != nil {
			t.Fatal(err)
		}
		c.wait(func() bool { s := c.streams[1]; return s.body.Len() >= i || s.rst })
		c.mu.Lock()
		s := c.streams[1]
		n, rst, code := s.body.Len(), s.rst, s.rstCode
		c.mu.Unlock()
		if n < i {
			t.Fatalf("after %d window updates of 1, %d bytes and reset %v %v: a window update did not wake the response writer", i, n, rst, code)
		}
	}
	c.send(func(fr *http2.Framer) error { return fr.WriteData(1, true, nil) })
	if _, body, rst, _ := c.result(1); len(body) != size || rst != 0 {
		t.Fatalf("body %d bytes, reset %v", len(body), rst)
	}
}

// a19Smuggled is a whole response a broken server sends where none belongs:
// any stream that shows it got another exchange's bytes.
const a19Smuggled = "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nSMUGGLED"

// a19Mixed answers by the path's first segment, with every framing an
// HTTP/1.1 server may use (and some it should not).
func a19Mixed(w *bufio.Writer, head string, body []byte, _ net.Conn) bool {
	rl := strings.Fields(requestLine(head))
	method, path := rl[0], rl[1]
	kind := strings.Split(path, "/")[1]
	resp := "resp:" + path
	switch kind {
	case "cl":
		fmt.Fprintf(w, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(resp), resp)
	case "chunked":
		fmt.Fprintf(w, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-trail\r\n\r\n%x\r\n%s\r\n0\r\nx-trail: %s\r\n\r\n", len(resp), resp, path)
	case "close":
		fmt.Fprintf(w, "HTTP/1.1 200 OK\r\n\r\n%s", resp)
		return false
	case "head":
		if method != "HEAD" {
			resp = "not a HEAD"
		}
		fmt.Fprintf(w, "HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n")
	case "204", "304":
		// A body where none may be, one write with the head.
		fmt.Fprintf(w, "HTTP/1.1 %s X\r\nContent-Length: %d\r\n\r\n%s", kind, len(a19Smuggled), a19Smuggled)
	case "1xx":
		fmt.Fprintf(w, "HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\nHTTP/1.1 100 Continue\r\n\r\n")
		fmt.Fprintf(w, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(resp), resp)
	case "extra":
		fmt.Fprintf(w, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s%s", len(resp), resp, a19Smuggled)
	case "mid":
		fmt.Fprintf(w, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n%s", resp)
		return false
	case "echo":
		resp = "resp:" + path + ":" + string(body)
		fmt.Fprintf(w, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(resp), resp)
	case "big":
		// Larger than any window: the client resets it midway.
		fmt.Fprintf(w, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", 1<<20)
		for range 64 {
			w.WriteString(strings.Repeat(path[len(path)-1:], 16<<10))
		}
	}
	return true
}

// Many concurrent streams on several client connections, through a small
// pool of server connections, with every response framing: each stream
// gets its own response, whole, and nothing else — including after
// servers that send bytes after a response, close mid-body, or streams
// the client resets mid-response or mid-upload. (Under -race it also
// reports the bodyless-response buffer race of the test below.)
func TestA19NoResponseMixUpAcrossStreamsAndClients(t *testing.T) {
	srv := a19Serve(t, a19Mixed)
	front := a19Front(t, `timeout_client = "10s"`, "pool_max_idle = 4", srv.addr)
	kinds := []string{"cl", "chunked", "close", "head", "204", "304", "1xx", "extra", "mid", "echo", "echo-chunked", "big", "upload-rst"}
	const conns, perConn, rounds = 4, 26, 3
	var wg sync.WaitGroup
	errs := make(chan string, conns*perConn*rounds)
	for ci := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := a19Dial(t, front, true)
			for r := range rounds {
				base := uint32(r*perConn*2 + 1)
				paths := map[uint32]string{}
				for i := range perConn {
					id := base + uint32(2*i)
					kind := kinds[(i+ci+r)%len(kinds)]
					path := fmt.Sprintf("/%s/%d-%d", kind, ci, id)
					paths[id] = path
					var err error
					switch kind {
					case "head":
						err = c.open(id, true, ":method", "HEAD", ":scheme", "http", ":authority", "x", ":path", path)
					case "echo", "echo-chunked", "upload-rst":
						path = strings.Replace(path, "/echo-chunked/", "/echo/", 1)
						path = strings.Replace(path, "/upload-rst/", "/echo/", 1)
						paths[id] = path
						f := []string{":method", "POST", ":scheme", "http", ":authority", "x", ":path", path}
						if kind == "echo" {
							f = append(f, "content-length", "9")
						}
						if err = c.open(id, false, f...); err == nil {
							err = c.send(func(fr *http2.Framer) error {
								if kind == "upload-rst" {
									if err := fr.WriteData(id, false, []byte("part")); err != nil {
										return err
									}
									return fr.WriteRSTStream(id, http2.ErrCodeCancel)
								}
								return fr.WriteData(id, true, []byte("body-"+path[len(path)-4:]))
							})
						}
					default:
						err = c.get(id, path)
					}
					if err != nil {
						errs <- fmt.Sprintf("conn %d: %v", ci, err)
						return
					}
				}
				for id, path := range paths {
					kind := strings.Split(path, "/")[1]
					if kind == "big" {
						// Reset once the response is moving.
						c.wait(func() bool { s := c.streams[id]; return s != nil && (s.body.Len() > 0 || s.rst) })
						c.send(func(fr *http2.Framer) error { return fr.WriteRSTStream(id, http2.ErrCodeCancel) })
						continue
					}
					if strings.Contains(path, "/echo/") && kinds[(int(id-base)/2+ci+r)%len(kinds)] == "upload-rst" {
						continue
					}
					status, body, rst, ok := c.result(id)
					c.mu.Lock()
					var trail string
					ended := c.streams[id] != nil && c.streams[id].ended
					if s := c.streams[id]; s != nil && len(s.heads) > 1 {
						trail = s.heads[len(s.heads)-1].Fields[0].Value
					}
					c.mu.Unlock()
					want, wantStatus := "resp:"+path, "200"
					switch kind {
					case "head", "204", "304":
						want = ""
						if kind != "head" {
							wantStatus = kind
						}
					case "echo":
						want = "resp:" + path + ":body-" + path[len(path)-4:]
					case "mid":
						// Cut short: must not look complete.
						if ended && rst == 0 {
							errs <- fmt.Sprintf("%s: a truncated body ended as complete: %q", path, body)
						}
						continue
					}
					if !ok || status != wantStatus || body != want || rst != 0 {
						errs <- fmt.Sprintf("%s (stream %d): status %q body %q rst %v ended %v", path, id, status, body, rst, ok)
					}
					if kind == "chunked" && trail != path {
						errs <- fmt.Sprintf("%s: trailer %q", path, trail)
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	n := 0
	for e := range errs {
		if n++; n <= 20 {
			t.Error(e)
		}
	}
	if n > 20 {
		t.Errorf("... %d errors in all", n)
	}
}

// Responses without a body (204, 304, HEAD, Content-Length: 0) give their
// server connection back to the pool before their HEADERS frame is
// encoded, while the response's header fields still point into that
// connection's read buffer: the next stream on it reads its own response
// over them, and a client gets another client's headers (Set-Cookie).
func TestA19BodylessResponseHeadersNotMixedUp(t *testing.T) {
	srv := a19Serve(t, func(w *bufio.Writer, head string, _ []byte, _ net.Conn) bool {
		rl := strings.Fields(requestLine(head))
		path := rl[1]
		code := "204 No Content"
		if strings.HasPrefix(path, "/304/") {
			code = "304 Not Modified"
		}
		if strings.HasPrefix(path, "/big/") {
			// Keeps the client connection's writer busy.
			fmt.Fprintf(w, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", 256<<10)
			w.Write(make([]byte, 256<<10))
			return true
		}
		// Long values: a wide window for the overwrite.
		owner := strings.Repeat(path, 20)
		fmt.Fprintf(w, "HTTP/1.1 %s\r\nx-owner: %s\r\nset-cookie: session=%s\r\n\r\n", code, owner, owner)
		return true
	})
	front := a19Front(t, "", "pool_max_idle = 1", srv.addr)
	const conns, perConn, rounds = 4, 40, 4
	var wg sync.WaitGroup
	errs := make(chan string, conns*perConn*rounds)
	for ci := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := a19Dial(t, front, true)
			for r := range rounds {
				ids := map[uint32]string{}
				for i := range perConn {
					id := uint32(2*(r*perConn+i) + 1)
					kind := []string{"204", "304", "head", "big"}[i%4]
					path := fmt.Sprintf("/%s/%d-%d", kind, ci, id)
					ids[id] = path
					var err error
					if kind == "head" {
						err = c.open(id, true, ":method", "HEAD", ":scheme", "http", ":authority", "x", ":path", path)
					} else {
						err = c.get(id, path)
					}
					if err != nil {
						errs <- err.Error()
						return
					}
				}
				for id, path := range ids {
					c.result(id)
					if strings.HasPrefix(path, "/big/") {
						continue
					}
					c.mu.Lock()
					s := c.streams[id]
					if s == nil {
						msg := fmt.Sprintf("stream %s: no answer (connection closed: %v, goaways %+v, read error %v)", path, c.closed, c.goaways, c.readErr)
						c.mu.Unlock()
						errs <- msg
						continue
					}
					var owner, cookie string
					if s != nil && len(s.heads) > 0 {
						for _, f := range s.heads[0].Fields {
							switch f.Name {
							case "x-owner":
								owner = f.Value
							case "set-cookie":
								cookie = f.Value
							}
						}
					}
					c.mu.Unlock()
					want := strings.Repeat(path, 20)
					if owner != want || cookie != "session="+want {
						c.mu.Lock()
						corrupt := s.corrupt
						c.mu.Unlock()
						errs <- fmt.Sprintf("stream %s got x-owner %.40q... set-cookie %.50q... (%v)", path, owner, cookie, corrupt)
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	n := 0
	for e := range errs {
		if n++; n <= 10 {
			t.Error(e)
		}
	}
	if n > 10 {
		t.Errorf("... %d mixed-up responses in all", n)
	}
}

// a19Case is one attacker's request head (and body) and what the HTTP/1.1
// server may see of it.
type a19Case struct {
	name   string
	fields []string
	body   []string // DATA frames; the last ends the stream
	// want: "refused" (RST_STREAM, GOAWAY or a 4xx), or "ok" with check on
	// the server's view of the request.
	want  string
	check func(head string) string
}

var a19Base = []string{":method", "GET", ":scheme", "http", ":authority", "x"}

func a19With(path string, extra ...string) []string {
	return append(append(append([]string{}, a19Base...), ":path", path), extra...)
}

func a19Cases() []a19Case {
	post := func(extra ...string) []string {
		return append([]string{":method", "POST", ":scheme", "http", ":authority", "x", ":path", "/p"}, extra...)
	}
	many := []string{}
	for i := range 200 {
		many = append(many, fmt.Sprintf("x-h%d", i), "v")
	}
	return []a19Case{
		{name: "value CRLF", fields: a19With("/v", "x-a", "1\r\nx-injected: 1"), want: "refused"},
		{name: "value LF", fields: a19With("/v", "x-a", "1\nx-injected: 1"), want: "refused"},
		{name: "value NUL", fields: a19With("/v", "x-a", "1\x00x"), want: "refused"},
		{name: "name CRLF", fields: a19With("/v", "x-a\r\nx-injected", "1"), want: "refused"},
		{name: "path space", fields: a19With("/a b HTTP/1.1\r\nx: y"), want: "refused"},
		{name: "path no slash", fields: a19With("a"), want: "refused"},
		{name: "path absolute", fields: a19With("http://evil/x"), want: "refused"},
		{name: "method with space", fields: []string{":method", "GET /smuggled HTTP/1.1\r\n", ":scheme", "http", ":authority", "x", ":path", "/"}, want: "refused"},
		{name: "authority CRLF", fields: []string{":method", "GET", ":scheme", "http", ":authority", "x\r\nx-injected: 1", ":path", "/"}, want: "refused"},
		{name: "authority vs host", fields: a19With("/h", "host", "other"), want: "ok", check: func(h string) string {
			if strings.Count(strings.ToLower(h), "\r\nhost:") != 1 || !strings.Contains(h, "\r\nHost: x\r\n") {
				return "want exactly one Host: x"
			}
			return ""
		}},
		{name: "transfer-encoding", fields: post("transfer-encoding", "chunked"), body: []string{"0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n"}, want: "refused"},
		{name: "uppercase name", fields: a19With("/u", "X-Upper", "1"), want: "refused"},
		{name: "pseudo after regular", fields: append(append([]string{}, a19Base...), "x-a", "1", ":path", "/late"), want: "refused"},
		{name: "duplicate path", fields: a19With("/a", ":path", "/b"), want: "refused"},
		{name: "connection", fields: a19With("/c", "connection", "close"), want: "refused"},
		{name: "keep-alive", fields: a19With("/c", "keep-alive", "1"), want: "refused"},
		{name: "upgrade", fields: a19With("/c", "upgrade", "websocket"), want: "refused"},
		{name: "te gzip", fields: a19With("/c", "te", "gzip"), want: "refused"},
		{name: "te trailers", fields: a19With("/c", "te", "trailers"), want: "ok", check: func(h string) string {
			if strings.Contains(strings.ToLower(h), "\r\nte:") {
				return "te passed to the server"
			}
			return ""
		}},
		{name: "cl above data", fields: post("content-length", "10"), body: []string{"abc"}, want: "refused"},
		{name: "cl below data", fields: post("content-length", "2"), body: []string{"abcdef"}, want: "refused"},
		{name: "cl twice differing", fields: post("content-length", "3", "content-length", "4"), body: []string{"abc"}, want: "refused"},
		{name: "cl with a body in a smuggled request", fields: post("content-length", "3"), body: []string{"abc"}, want: "ok", check: func(h string) string {
			if !strings.Contains(h, "Content-Length: 3\r\n") || strings.Contains(strings.ToLower(h), "transfer-encoding") {
				return "framing"
			}
			return ""
		}},
		{name: "no cl body chunked", fields: post(), body: []string{"abc", "def"}, want: "ok", check: func(h string) string {
			if !strings.Contains(h, "Transfer-Encoding: chunked\r\n") {
				return "want chunked"
			}
			return ""
		}},
		{name: "200 headers", fields: a19With("/m", many...), want: "refused"},
	}
}

// a19Run sends each case on its own connection to front and reports how it
// ended: "refused" or "ok", and the server's view if it got the request.
func a19Run(t *testing.T, front string, srv *a19Server, cs a19Case) (string, string) {
	c := a19Dial(t, front, true)
	before := srv.count()
	if err := c.open(1, len(cs.body) == 0, cs.fields...); err != nil {
		t.Fatal(err)
	}
	for i, d := range cs.body {
		last := i == len(cs.body)-1
		c.send(func(fr *http2.Framer) error { return fr.WriteData(1, last, []byte(d)) })
	}
	status, _, rst, ended := c.result(1)
	c.mu.Lock()
	gone := len(c.goaways) > 0 || c.closed
	c.mu.Unlock()
	var head string
	if srv.count() > before {
		head = srv.lastHead()
	}
	switch {
	case rst != 0 || !ended || gone && status == "":
		return "refused", head
	case status != "" && status[0] == '4':
		return "refused", head
	case status == "200":
		return "ok", head
	}
	return fmt.Sprintf("status %s rst %v", status, rst), head
}

func (s *a19Server) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.heads)
}

// Request smuggling from HTTP/2 to HTTP/1.1: what hpack lets a client put
// in a head must never become a second request, a second header or other
// framing on the server connection.
func TestA19SmugglingH2ToH1(t *testing.T) {
	srv := a19Serve(t, func(w *bufio.Writer, head string, body []byte, _ net.Conn) bool {
		fmt.Fprintf(w, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		return true
	})
	front := a19Front(t, "", "", srv.addr)
	for _, cs := range a19Cases() {
		got, head := a19Run(t, front, srv, cs)
		if strings.Contains(head, "injected") || strings.Contains(head, "smuggled") {
			t.Errorf("%s: the server saw\n%s", cs.name, head)
		}
		if got != cs.want {
			t.Errorf("%s: %s, want %s (server saw %q)", cs.name, got, cs.want, head)
			continue
		}
		if cs.check != nil && head != "" {
			if e := cs.check(head); e != "" {
				t.Errorf("%s: %s:\n%s", cs.name, e, head)
			}
		}
	}
}

// a19HAProxy runs HAProxy 2.6 in front of addr (h2c prior knowledge on its
// bind) for side-by-side runs: A19_HAPROXY=1 go test -run HAProxy ./l7/
func a19HAProxy(t *testing.T, addr string) string {
	if os.Getenv("A19_HAPROXY") == "" {
		t.Skip("A19_HAPROXY not set")
	}
	return a19HAProxyMaybe(t, addr)
}

func a19HAProxyMaybe(t *testing.T, addr string) string {
	if os.Getenv("A19_HAPROXY") == "" {
		return ""
	}
	front := testutil.FreeAddr(t)
	cfg := filepath.Join(t.TempDir(), "h.cfg")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`global
  maxconn 1000
defaults
  mode http
  timeout connect 5s
  timeout client 10s
  timeout server 10s
  option forwardfor
frontend f
  bind %s proto h2
  default_backend b
backend b
  http-reuse always
  server s1 %s
`, front, addr)), 0o644)
	cmd := exec.Command("haproxy", "-db", "-f", cfg)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	testutil.WaitFor(t, "haproxy listening", 5*time.Second, func() bool {
		c, err := net.Dial("tcp", front)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return front
}

// The smuggling cases against HAProxy, to compare (not part of the gate).
func TestA19HAProxySideBySide(t *testing.T) {
	srv := a19Serve(t, func(w *bufio.Writer, head string, body []byte, _ net.Conn) bool {
		fmt.Fprintf(w, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		return true
	})
	front := a19HAProxy(t, srv.addr)
	for _, cs := range a19Cases() {
		got, head := a19Run(t, front, srv, cs)
		t.Logf("%-22s haproxy: %s (server saw %q)", cs.name, got, requestLine(head))
	}
}

// A request body still in flight when sluice resets its stream (the
// response was complete first: RST_STREAM NO_ERROR) is ignored, as RFC
// 9113 §5.1 asks, not answered with a second reset per frame (a CI run
// saw STREAM_CLOSED overwrite NO_ERROR this way).
func TestA19DataAfterOurResetIsIgnored(t *testing.T) {
	addr := a19Listen(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			line, err := br.ReadString('\n')
			if err != nil || line == "\r\n" {
				break
			}
		}
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		io.Copy(io.Discard, br)
	})
	front := a19Front(t, `timeout_client = "5s"`, "", addr)
	c := a19Dial(t, front, true)
	if err := c.open(1, false, ":method", "POST", ":scheme", "http", ":authority", "x", ":path", "/up"); err != nil {
		t.Fatal(err)
	}
	c.wait(func() bool { s := c.streams[1]; return s != nil && s.rst || c.closed })
	c.mu.Lock()
	s := c.streams[1]
	rst, code := s.rst, s.rstCode
	c.mu.Unlock()
	if !rst || code != http2.ErrCodeNo {
		t.Fatalf("request body still open after a whole response: reset %v %v, want RST_STREAM NO_ERROR", rst, code)
	}
	for range 3 {
		c.send(func(fr *http2.Framer) error { return fr.WriteData(1, false, []byte("late body")) })
	}
	c.send(func(fr *http2.Framer) error { return fr.WriteData(1, true, nil) })
	// Frames are ordered: a reset for the late DATA would come before
	// stream 3's answer.
	c.get(3, "/next")
	if status, _, rst3, _ := c.result(3); status != "200" || rst3 != 0 {
		t.Fatalf("next stream: status %q reset %v", status, rst3)
	}
	c.mu.Lock()
	code = c.streams[1].rstCode
	c.mu.Unlock()
	if code != http2.ErrCodeNo {
		t.Fatalf("late DATA on a stream sluice reset was answered with RST_STREAM %v; it must be ignored", code)
	}
}

// Pooled server connections idle past pool_idle_timeout are closed with no
// traffic to trigger it: after a burst, a pool of hundreds must give its
// descriptors (and the servers' slots) back.
func TestIdlePoolSweptWithoutTraffic(t *testing.T) {
	const n = 6
	var accepted atomic.Int32
	closed := make(chan struct{}, n)
	addr := a19Listen(t, func(c net.Conn) {
		accepted.Add(1)
		br := bufio.NewReader(c)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				closed <- struct{}{}
				return
			}
			if line == "\r\n" {
				fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			}
		}
	})
	front := a19Front(t, "", `pool_idle_timeout = "1s"`, addr)
	// n streams at once on one HTTP/2 connection: up to n server
	// connections (fewer when a busy machine serves them in turn), all
	// pooled after.
	c := a19Dial(t, front, true)
	for i := range n {
		c.get(uint32(2*i+1), "/")
	}
	for i := range n {
		if status, _, _, _ := c.result(uint32(2*i + 1)); status != "200" {
			t.Fatalf("stream %d: status %q", 2*i+1, status)
		}
	}
	opened := int(accepted.Load())
	if opened == 0 {
		t.Fatal("no server connection was opened")
	}
	deadline := time.After(15 * time.Second)
	for got := 0; got < opened; got++ {
		select {
		case <-closed:
		case <-deadline:
			t.Fatalf("%d of %d idle pooled server connections closed 15 s after a 1 s pool_idle_timeout", got, opened)
		}
	}
}

// A server that answers before it reads the request (a "503, too busy" at
// accept): the answer is in the socket before sluice writes. Whatever the
// path's write-then-wait does, it must see those bytes at once, on HTTP/1
// and HTTP/2 alike, not wait for more until timeout_server.
func TestServerAnswerBeforeRequestIsSeen(t *testing.T) {
	addr := a19Listen(t, func(c net.Conn) {
		fmt.Fprintf(c, "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbusy")
		io.Copy(io.Discard, c)
	})
	front := a19Front(t, `timeout_client = "30s"`, `timeout_server = "30s"`, addr)
	c := a19Dial(t, front, true)
	c.get(1, "/")
	if status, body, _, _ := c.result(1); status != "503" || body != "busy" {
		t.Fatalf("HTTP/2: status %q body %q, want the server's early 503", status, body)
	}
	hc, err := net.Dial("tcp", front)
	if err != nil {
		t.Fatal(err)
	}
	defer hc.Close()
	hc.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(hc, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(hc), nil)
	if err != nil {
		t.Fatalf("HTTP/1: %v (the early answer was not seen)", err)
	}
	if resp.StatusCode != 503 {
		t.Fatalf("HTTP/1: status %d, want 503", resp.StatusCode)
	}
}
