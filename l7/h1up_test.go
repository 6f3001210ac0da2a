package l7_test

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"sluice/engine"
	"sluice/internal/testutil"
)

// Tests of HTTP/1 clients of proto = "h2c" servers (h1up.go): a raw
// HTTP/1.1 client on one side, x/net's h2c server on the other.

// h1UpEcho answers with what it got: method, proto, body and its trailer
// X-Req-Sum. ?cl=1 sets Content-Length, ?trailer=1 sends a trailer,
// ?flush=1 sends the head before the body (x/net's server gives a small
// body it has whole a content-length).
func h1UpEcho() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		out := fmt.Sprintf("%s %s %s body=%s reqtrailer=%s xff=%s", r.Method, r.URL.RequestURI(), r.Proto, body,
			r.Trailer.Get("X-Req-Sum"), r.Header.Get("X-Forwarded-For"))
		if r.URL.Query().Get("trailer") == "1" {
			w.Header().Set("Trailer", "X-Sum")
		}
		if r.URL.Query().Get("cl") == "1" {
			w.Header().Set("Content-Length", fmt.Sprint(len(out)))
		}
		w.Header().Set("X-Method", r.Method)
		if r.URL.Query().Get("flush") == "1" {
			w.(http.Flusher).Flush() // no Content-Length: chunked to HTTP/1.1
		}
		io.WriteString(w, out)
		if r.URL.Query().Get("trailer") == "1" {
			w.Header().Set("X-Sum", fmt.Sprint(len(body)))
		}
	})
}

func h1UpFront(t *testing.T, addr, extra string) (*engine.Engine, string) {
	t.Helper()
	return testutil.Start(t, h2Config(`default_backend = "app"`, "",
		map[string]h2Backend{"app": {extra: "proto = \"h2c\"\n" + extra, addrs: []string{addr}}}))
}

// readRaw reads one response from br and returns its head (as text, for
// framing checks) and the parsed response, body read.
func readRaw(t *testing.T, br *bufio.Reader, method string) (*http.Response, string) {
	t.Helper()
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp, string(b)
}

// GET, POST with Content-Length and chunked (request trailers included),
// HEAD, a response with trailers as chunked trailers and one with
// Content-Length: all on one client connection, over one server
// connection.
func TestH1UpMethodsAndBodies(t *testing.T) {
	addr, conns := h2cServer(t, h1UpEcho(), nil)
	_, front := h1UpFront(t, addr, "")
	c := testutil.Dial(t, front)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	for i, tc := range []struct {
		raw, method, want string
		chunked           bool // the response comes chunked
		trailer           string
	}{
		{"GET /g?flush=1 HTTP/1.1\r\nHost: h\r\n\r\n", "GET", "GET /g?flush=1 HTTP/2.0 body= reqtrailer= xff=127.0.0.1", true, ""},
		{"POST /p?cl=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello", "POST", "POST /p?cl=1 HTTP/2.0 body=hello reqtrailer= xff=127.0.0.1", false, ""},
		{"POST /c?trailer=1 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTrailer: X-Req-Sum\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\nX-Req-Sum: 7\r\n\r\n", "POST",
			"POST /c?trailer=1 HTTP/2.0 body=abcdefg reqtrailer=7 xff=127.0.0.1", true, "7"},
		{"HEAD /h?cl=1 HTTP/1.1\r\nHost: h\r\n\r\n", "HEAD", "", false, ""},
		{"GET /last HTTP/1.1\r\nHost: h\r\n\r\n", "GET", "GET /last HTTP/2.0 body= reqtrailer= xff=127.0.0.1", false, ""},
	} {
		if _, err := io.WriteString(c, tc.raw); err != nil {
			t.Fatal(err)
		}
		resp, body := readRaw(t, br, tc.method)
		if resp.StatusCode != 200 || body != tc.want || resp.Header.Get("X-Method") != tc.method {
			t.Fatalf("request %d: %d %q (headers %v), want %q", i, resp.StatusCode, body, resp.Header, tc.want)
		}
		if chunked := len(resp.TransferEncoding) > 0; chunked != tc.chunked {
			t.Fatalf("request %d: chunked %v, want %v", i, chunked, tc.chunked)
		}
		if !tc.chunked && tc.method != "HEAD" && resp.ContentLength != int64(len(tc.want)) {
			t.Fatalf("request %d: Content-Length %d", i, resp.ContentLength)
		}
		if got := resp.Trailer.Get("X-Sum"); got != tc.trailer {
			t.Fatalf("request %d: trailer X-Sum %q, want %q", i, got, tc.trailer)
		}
		if resp.Close {
			t.Fatalf("request %d: the connection closes", i)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("%d server connections for one keep-alive client, want 1", n)
	}
}

// Three requests on one client connection reuse one HTTP/2 connection to
// the server; so do three clients one after another.
func TestH1UpKeepAliveReusesServerConn(t *testing.T) {
	addr, conns := h2cServer(t, h1UpEcho(), nil)
	_, front := h1UpFront(t, addr, "")
	for range 3 {
		c := testutil.Dial(t, front)
		c.SetDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(c)
		for i := range 3 {
			fmt.Fprintf(c, "GET /k%d HTTP/1.1\r\nHost: h\r\n\r\n", i)
			resp, body := readRaw(t, br, "GET")
			if resp.StatusCode != 200 || !strings.HasPrefix(body, fmt.Sprintf("GET /k%d HTTP/2.0", i)) {
				t.Fatalf("%d %q", resp.StatusCode, body)
			}
		}
		c.Close()
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("%d server connections, want 1", n)
	}
}

// A client waiting with "Expect: 100-continue" gets the 100 from sluice
// and then its answer; the Expect header does not reach the server.
func TestH1Up100Continue(t *testing.T) {
	addr, _ := h2cServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "expect=%q body=%s", r.Header.Get("Expect"), b)
	}), nil)
	_, front := h1UpFront(t, addr, "")
	c := testutil.Dial(t, front)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	io.WriteString(c, "PUT /u HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
	line, err := br.ReadString('\n')
	if err != nil || line != "HTTP/1.1 100 Continue\r\n" {
		t.Fatalf("first line %q, %v: want the 100 before the body is sent", line, err)
	}
	if blank, _ := br.ReadString('\n'); blank != "\r\n" {
		t.Fatalf("after the 100: %q", blank)
	}
	io.WriteString(c, "data")
	resp, body := readRaw(t, br, "PUT")
	if resp.StatusCode != 200 || body != `expect="" body=data` {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
}

// An HTTP/1.0 client without keep-alive: a response of unknown length is
// framed by the close, and says so.
func TestH1UpHTTP10(t *testing.T) {
	addr, _ := h2cServer(t, h1UpEcho(), nil)
	_, front := h1UpFront(t, addr, "")
	c := testutil.Dial(t, front)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "GET /old HTTP/1.0\r\nHost: h\r\n\r\n")
	all, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	s := string(all)
	if !strings.HasPrefix(s, "HTTP/1.1 200 ") || !strings.Contains(strings.ToLower(s), "connection: close\r\n") ||
		strings.Contains(strings.ToLower(s), "transfer-encoding") || !strings.HasSuffix(s, "GET /old HTTP/2.0 body= reqtrailer= xff=127.0.0.1") {
		t.Fatalf("response %q", s)
	}
}

// A client that closes its connection in the middle of a response: the
// server's stream is reset (its handler sees its context end), and the
// server connection goes on serving another client.
func TestH1UpClientLeavesMidResponse(t *testing.T) {
	var cancelled atomic.Int64
	addr, conns := h2cServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/stream" {
			io.WriteString(w, "short")
			return
		}
		rc := http.NewResponseController(w)
		chunk := strings.Repeat("s", 4096)
		for {
			if _, err := io.WriteString(w, chunk); err != nil {
				break
			}
			if rc.Flush() != nil {
				break
			}
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Millisecond):
				continue
			}
			break
		}
		if r.Context().Err() != nil {
			cancelled.Add(1)
		}
	}), nil)
	eng, front := h1UpFront(t, addr, "")
	c := testutil.Dial(t, front)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "GET /stream HTTP/1.1\r\nHost: h\r\n\r\n")
	br := bufio.NewReader(c)
	if _, err := io.ReadFull(br, make([]byte, 16<<10)); err != nil {
		t.Fatal(err)
	}
	c.Close()
	testutil.WaitFor(t, "the server's stream cancelled", 10*time.Second, func() bool { return cancelled.Load() == 1 })

	d := testutil.Dial(t, front)
	d.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(d, "GET /after HTTP/1.1\r\nHost: h\r\n\r\n")
	resp, body := readRaw(t, bufio.NewReader(d), "GET")
	if resp.StatusCode != 200 || body != "short" {
		t.Fatalf("next client: %d %q", resp.StatusCode, body)
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("%d server connections, want 1: the reset stream must not cost the connection", n)
	}
	srv := eng.Backends["app"].Server("app1")
	testutil.WaitFor(t, "the server released", 5*time.Second, func() bool { return srv.Active() == 0 })
}

// A malformed chunked request body: 400, counted, and the connection
// closes.
func TestH1UpBadChunkedBody(t *testing.T) {
	addr, _ := h2cServer(t, h1UpEcho(), nil)
	eng, front := h1UpFront(t, addr, "")
	f := eng.Front.Frontends[0].HTTP()
	before := f.Counters.BadRequest.Load()
	c := testutil.Dial(t, front)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "POST /bad HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n")
	resp, _ := readRaw(t, bufio.NewReader(c), "POST")
	if resp.StatusCode != 400 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if !resp.Close {
		t.Fatal("the connection stays open after a malformed body")
	}
	testutil.WaitFor(t, "BadRequest counted", 5*time.Second, func() bool { return f.Counters.BadRequest.Load() == before+1 })
}

// Sticky cookies: the first answer names its server in Set-Cookie; a
// request carrying it goes to that server and gets no new cookie.
func TestH1UpStickyCookie(t *testing.T) {
	serve := func(name string) string {
		addr, _ := h2cServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, name) }), nil)
		return addr
	}
	a, b := serve("a"), serve("b")
	_, front := testutil.Start(t, h2Config(`default_backend = "app"`, "", map[string]h2Backend{"app": {
		extra: "proto = \"h2c\"\nbalance = \"roundrobin\"\nsticky = \"cookie\"\nsticky_cookie = \"SRV\"", addrs: []string{a, b}}}))
	c := testutil.Dial(t, front)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
	resp, first := readRaw(t, br, "GET")
	cookie := resp.Header.Get("Set-Cookie")
	if !strings.HasPrefix(cookie, "SRV=") {
		t.Fatalf("first answer %q without the sticky cookie (headers %v)", first, resp.Header)
	}
	val, _, _ := strings.Cut(strings.TrimPrefix(cookie, "SRV="), ";")
	for range 4 {
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: h\r\nCookie: SRV=%s\r\n\r\n", val)
		resp, got := readRaw(t, br, "GET")
		if got != first || resp.Header.Get("Set-Cookie") != "" {
			t.Fatalf("pinned request went to %q (Set-Cookie %q), want %q", got, resp.Header.Get("Set-Cookie"), first)
		}
	}
}

// A server slower than timeout_server: 504 to the HTTP/1 client, whose
// connection goes on (a GET left nothing behind), and the stream reset.
func TestH1UpServerTimeout(t *testing.T) {
	var cancelled atomic.Int64
	addr, _ := h2cServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
			cancelled.Add(1)
		case <-time.After(10 * time.Second):
		}
	}), nil)
	_, front := h1UpFront(t, addr, "timeout_server = \"200ms\"")
	c := testutil.Dial(t, front)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: h\r\n\r\n")
	resp, _ := readRaw(t, bufio.NewReader(c), "GET")
	if resp.StatusCode != 504 || resp.Close {
		t.Fatalf("status %d close %v, want 504 and the connection kept", resp.StatusCode, resp.Close)
	}
	testutil.WaitFor(t, "the server's stream cancelled", 5*time.Second, func() bool { return cancelled.Load() == 1 })
}
