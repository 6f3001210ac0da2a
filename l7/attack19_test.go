package l7_test

// Attack tests for the HTTP/2 client side (issue 19): an edge attacker's
// view of sluice's own h2 handler in front of pooled HTTP/1.1 server
// connections. Raw http2.Framer clients, real HTTP/1.1 servers.

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

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

	mu      sync.Mutex
	cond    *sync.Cond
	streams map[uint32]*a19Stream
	goaways []http2.GoAwayFrame
	pings   [][8]byte
	closed  bool
	autoWin bool // give back every DATA byte at once (stream and connection)
}

func a19Dial(t *testing.T, front string, autoWin bool, settings ...http2.Setting) *a19Client {
	t.Helper()
	conn := testutil.Dial(t, front)
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	c := &a19Client{t: t, conn: conn, fr: http2.NewFramer(conn, conn), streams: map[uint32]*a19Stream{}, autoWin: autoWin}
	c.cond = sync.NewCond(&c.mu)
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.fr.MaxHeaderListSize = 1 << 20
	c.enc = hpack.NewEncoder(&c.hb)
	if _, err := conn.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	if err := c.fr.WriteSettings(settings...); err != nil {
		t.Fatal(err)
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
		if err != nil {
			c.t.Logf("read: %v", err)
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
				id := f.StreamID
				c.send(func(fr *http2.Framer) error {
					if err := fr.WriteWindowUpdate(0, n); err != nil {
						return err
					}
					return fr.WriteWindowUpdate(id, n)
				})
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
	_, front := testutil.Start(t, fmt.Sprintf(`
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
	return front
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
