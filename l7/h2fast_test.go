package l7_test

import (
	"bufio"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"sluice/internal/testutil"
	"sluice/l7"
)

// The HTTP/2 fast path (h2fast_linux.go): what it serves itself, what it
// hands to a stream goroutine, and the server connections it keeps.

// fastFront starts an h2c frontend in front of addr (beExtra: keys of
// its backend) and returns its address and a reader of its fast-path
// counter.
func fastFront(t *testing.T, beExtra, addr string) (string, func() uint64) {
	eng, front := a19Start(t, "", beExtra, addr)
	return front, eng.Front.Frontends[0].HTTP().Counters.H2Fast.Load
}

// fastEcho answers every request with its own path as the body.
func fastEcho(w *bufio.Writer, head string, _ []byte, _ net.Conn) bool {
	path := strings.Fields(requestLine(head))[1]
	fmt.Fprintf(w, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(path), path)
	return true
}

// fastGet asks for path on stream id and wants its own answer: 200 with
// the path as the body.
func fastGet(t *testing.T, c *a19Client, id uint32, path string) {
	t.Helper()
	if err := c.get(id, path); err != nil {
		t.Fatal(err)
	}
	if status, body, rst, ok := c.result(id); !ok || status != "200" || body != path || rst != 0 {
		t.Fatalf("stream %d: status %q body %q rst %v ended %v", id, status, body, rst, ok)
	}
}

// Once a server connection is pooled, bodiless requests are answered by
// the fast path, each its own answer, over the one server connection.
func TestH2FastServesFromThePool(t *testing.T) {
	srv := a19Serve(t, func(w *bufio.Writer, head string, _ []byte, _ net.Conn) bool {
		path := strings.Fields(requestLine(head))[1]
		fmt.Fprintf(w, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Path: %s\r\n\r\n%s", len(path), path, path)
		return true
	})
	front, fast := fastFront(t, `timeout_server = "10s"`, srv.addr)
	c := a19Dial(t, front, true)
	for i := range 20 {
		id := uint32(2*i + 1)
		path := fmt.Sprintf("/r%d", id)
		if err := c.get(id, path); err != nil {
			t.Fatal(err)
		}
		status, body, rst, ok := c.result(id)
		if !ok || status != "200" || body != path || rst != 0 {
			t.Fatalf("stream %d: status %q body %q rst %v ended %v", id, status, body, rst, ok)
		}
		c.mu.Lock()
		h := c.streams[id].heads[0]
		c.mu.Unlock()
		if v := h.PseudoValue("status"); v != "200" {
			t.Fatalf("stream %d: :status %q", id, v)
		}
		found := false
		for _, f := range h.RegularFields() {
			if f.Name == "x-path" && f.Value == path {
				found = true
			}
		}
		if !found {
			t.Fatalf("stream %d: no x-path %s in %v", id, path, h.Fields)
		}
	}
	if n := fast(); n < 15 {
		t.Fatalf("fast path answered %d of 20 streams, want all but the first few", n)
	}
	srv.mu.Lock()
	n := srv.conns
	srv.mu.Unlock()
	if n != 1 {
		t.Fatalf("%d server connections, want 1 (kept and reused)", n)
	}
}

// A server that writes on, or closes, an idle pooled connection has it
// closed: the next request goes on another one and gets its own answer,
// never the stray bytes.
func TestH2FastIdleConnectionThatSpeaksIsNotReused(t *testing.T) {
	var mu sync.Mutex
	var conns []net.Conn
	ended := make(chan int, 16)
	addr := a19Listen(t, func(c net.Conn) {
		mu.Lock()
		conns = append(conns, c)
		n := len(conns)
		mu.Unlock()
		defer func() { ended <- n }()
		br := bufio.NewReader(c)
		for {
			head, _, err := a19ReadRequest(br)
			if err != nil {
				return
			}
			path := strings.Fields(requestLine(head))[1]
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Conn: %d\r\n\r\n%s", len(path), n, path)
		}
	})
	front, fast := fastFront(t, `timeout_server = "10s"`, addr)
	c := a19Dial(t, front, true)
	get := func(id uint32) { t.Helper(); fastGet(t, c, id, fmt.Sprintf("/s%d", id)) }
	waitEnd := func(want int) {
		t.Helper()
		select {
		case n := <-ended:
			if n != want {
				t.Fatalf("server connection %d ended, want %d", n, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("server connection %d still open", want)
		}
	}
	// The second request is the fast path's, on the pooled connection,
	// which its loop watches from then on.
	get(1)
	get(3)
	if fast() < 1 {
		t.Fatal("the fast path did not answer the second request")
	}
	mu.Lock()
	first := conns[0]
	mu.Unlock()
	// A whole stray response on the idle connection: taken for the next
	// request's, it would be another client's answer. sluice closes it.
	fmt.Fprintf(first, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstray")
	waitEnd(1)
	get(5)
	get(7)
	// A server that closes its idle connection: sluice closes its end,
	// and the next request still gets its answer.
	mu.Lock()
	n := len(conns)
	last := conns[n-1]
	mu.Unlock()
	last.(*net.TCPConn).CloseWrite()
	waitEnd(n)
	get(9)
	get(11)
}

// Responses the fast path does not frame itself (chunked, larger than a
// buffer, interim 1xx, a body still to come) go on in a stream goroutine
// from where the loop left them: each whole and its own.
func TestH2FastHandsOnWhatItDoesNotFrame(t *testing.T) {
	big := strings.Repeat("b", 40<<10)
	srv := a19Serve(t, func(w *bufio.Writer, head string, _ []byte, c net.Conn) bool {
		path := strings.Fields(requestLine(head))[1]
		switch {
		case strings.HasPrefix(path, "/chunked"):
			fmt.Fprintf(w, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", len(path), path)
		case strings.HasPrefix(path, "/big"):
			fmt.Fprintf(w, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(big)+len(path), big+path)
		case strings.HasPrefix(path, "/interim"):
			fmt.Fprintf(w, "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(path), path)
		case strings.HasPrefix(path, "/slow"):
			fmt.Fprintf(w, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(path), path[:2])
			w.Flush()
			time.Sleep(30 * time.Millisecond) // the rest comes in another read
			w.WriteString(path[2:])
		default:
			fmt.Fprintf(w, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(path), path)
		}
		return true
	})
	front, fast := fastFront(t, `timeout_server = "10s"`, srv.addr)
	c := a19Dial(t, front, true)
	id := uint32(1)
	for round := range 3 {
		for _, kind := range []string{"plain", "chunked", "big", "interim", "slow"} {
			path := fmt.Sprintf("/%s/%d", kind, round)
			if err := c.get(id, path); err != nil {
				t.Fatal(err)
			}
			want := path
			if kind == "big" {
				want = big + path
			}
			if status, body, rst, ok := c.result(id); !ok || status != "200" || body != want || rst != 0 {
				t.Fatalf("%s: status %q body %d bytes rst %v ended %v", path, status, len(body), rst, ok)
			}
			id += 2
		}
	}
	if fast() == 0 {
		t.Fatal("the fast path answered none of the plain requests")
	}
}

// A server that does not answer within timeout_server gets the stream a
// 504, as on the goroutine path; one the client resets while the server
// thinks ends at once, its server connection closed (its answer unread).
func TestH2FastTimeoutAndReset(t *testing.T) {
	var mu sync.Mutex
	closed := 0
	addr := a19Listen(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			head, _, err := a19ReadRequest(br)
			if err != nil {
				mu.Lock()
				closed++
				mu.Unlock()
				return
			}
			path := strings.Fields(requestLine(head))[1]
			if strings.HasPrefix(path, "/never") {
				continue // no answer: the next read sees the close
			}
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(path), path)
		}
	})
	front, fast := fastFront(t, `timeout_server = "300ms"`, addr)
	c := a19Dial(t, front, true)
	c.get(1, "/warm")
	c.result(1)
	c.get(3, "/warm2")
	c.result(3)
	testutil.WaitFor(t, "the fast path to answer", 5*time.Second, func() bool { return fast() >= 1 })
	c.get(5, "/never")
	if status, _, rst, ok := c.result(5); !ok || status != "504" || rst != 0 {
		t.Fatalf("unanswered: status %q rst %v ended %v, want 504", status, rst, ok)
	}
	// Reset while the server thinks.
	c.get(7, "/warm3")
	c.result(7)
	mu.Lock()
	before := closed
	mu.Unlock()
	c.get(9, "/never-reset")
	c.send(func(fr *http2.Framer) error { return fr.WriteRSTStream(9, http2.ErrCodeCancel) })
	testutil.WaitFor(t, "the server connection of the reset stream to close", 5*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return closed > before
	})
	// The connection goes on.
	fastGet(t, c, 11, "/after")
}

// A server may answer before the reader has marked its request sent (the
// loop sees the answer while the connection is still the reader's): the
// answer is read then, not left for an event that will not come again.
func TestH2FastAnswerBeforeTheWait(t *testing.T) {
	srv := a19Serve(t, fastEcho)
	front, fast := fastFront(t, `timeout_server = "20s"`, srv.addr)
	c := a19Dial(t, front, true)
	c.get(1, "/warm")
	c.result(1)
	var held atomic.Int32
	l7.SetFastSentHook(func(pending func() bool) {
		// Hold the reader until the loop has seen the answer.
		deadline := time.Now().Add(5 * time.Second)
		for !pending() && time.Now().Before(deadline) {
			runtime.Gosched()
		}
		if pending() {
			held.Add(1)
		}
	})
	t.Cleanup(func() { l7.SetFastSentHook(nil) })
	for i := range 5 {
		id := uint32(3 + 2*i)
		fastGet(t, c, id, fmt.Sprintf("/early/%d", id)) // fails if the early answer was not read
	}
	l7.SetFastSentHook(nil)
	if held.Load() == 0 || fast() == 0 {
		t.Fatalf("the loop saw no answer before the wait (%d) or the fast path answered none (%d)", held.Load(), fast())
	}
}

// With policy rules the fast path still serves what the policy passes,
// the rules' header edits made both ways; a request the policy denies is
// answered by a stream goroutine, once.
func TestH2FastWithPolicy(t *testing.T) {
	srv := a19Serve(t, func(w *bufio.Writer, head string, _ []byte, _ net.Conn) bool {
		path := strings.Fields(requestLine(head))[1]
		tag := ""
		if strings.Contains(strings.ToLower(head), "\nx-edge: web") {
			tag = "edge" // the request edit reached the server
		}
		fmt.Fprintf(w, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Secret: s\r\n\r\n%s", len(path+tag), path+tag)
		return true
	})
	eng, front := a19Start(t, `
[[frontend.web.rule]]
path_prefix = "/deny"
action = "deny"
[[frontend.web.rule]]
action = "add_header"
name = "X-Edge"
value = "{frontend}"
[[frontend.web.rule]]
action = "del_header"
name = "X-Secret"
response = true
[[frontend.web.rule]]
action = "add_header"
name = "X-Served"
value = "sluice"
response = true
`, `timeout_server = "10s"`, srv.addr)
	p := eng.Front.Frontends[0].HTTP()
	c := a19Dial(t, front, true)
	for i := range 10 {
		id := uint32(2*i + 1)
		path := fmt.Sprintf("/ok/%d", id)
		if i%3 == 2 {
			path = fmt.Sprintf("/deny/%d", id)
		}
		c.get(id, path)
		status, body, rst, ok := c.result(id)
		if strings.HasPrefix(path, "/deny") {
			if !ok || status != "403" || rst != 0 {
				t.Fatalf("%s: status %q rst %v ended %v, want 403", path, status, rst, ok)
			}
			continue
		}
		if !ok || status != "200" || body != path+"edge" || rst != 0 {
			t.Fatalf("%s: status %q body %q rst %v ended %v", path, status, body, rst, ok)
		}
		c.mu.Lock()
		fields := c.streams[id].heads[0].RegularFields()
		c.mu.Unlock()
		served, secret := false, false
		for _, f := range fields {
			served = served || f.Name == "x-served" && f.Value == "sluice"
			secret = secret || f.Name == "x-secret"
		}
		if !served || secret {
			t.Fatalf("%s: response edits not made: %v", path, fields)
		}
	}
	if n := p.Counters.H2Fast.Load(); n < 3 {
		t.Fatalf("fast path answered %d streams, want the passed ones after the first", n)
	}
	if n := p.Counters.Requests.Load(); n != 10 {
		t.Fatalf("%d requests counted, want 10", n)
	}
}

// A panic in the fast path's loop (a bug) resets the one stream it was
// serving; the loop, the connection and its other streams go on.
func TestH2FastLoopPanicResetsOnlyThatStream(t *testing.T) {
	srv := a19Serve(t, fastEcho)
	front, fast := fastFront(t, `timeout_server = "10s"`, srv.addr)
	c := a19Dial(t, front, true)
	c.get(1, "/warm")
	c.result(1)
	before := l7.FastLoopPanics.Load()
	l7.SetFastLoopHook(func(target string) {
		if target == "/boom" {
			panic("test: boom in the fast path's loop")
		}
	})
	t.Cleanup(func() { l7.SetFastLoopHook(nil) })
	c.get(3, "/boom")
	if _, _, rst, _ := c.result(3); rst != http2.ErrCodeInternal {
		t.Fatalf("the stream the loop panicked on: rst %v, want INTERNAL_ERROR", rst)
	}
	for i := range 5 {
		id := uint32(5 + 2*i)
		fastGet(t, c, id, fmt.Sprintf("/after/%d", id))
	}
	if n := l7.FastLoopPanics.Load() - before; n != 1 {
		t.Fatalf("%d loop panics counted, want 1", n)
	}
	if fast() < 3 {
		t.Fatalf("the fast path answered %d streams, want the ones after the panic (its connection closed, one dials anew)", fast())
	}
}

// A connection's writer goroutine goes after a second without a fast
// stream (an idle HTTP/2 connection keeps no goroutine but its reader's)
// and the next fast stream starts another.
func TestH2FastWriterGoesWhenIdle(t *testing.T) {
	srv := a19Serve(t, fastEcho)
	front, fast := fastFront(t, `timeout_server = "10s"`, srv.addr)
	c := a19Dial(t, front, true)
	get := func(id uint32) { t.Helper(); fastGet(t, c, id, fmt.Sprintf("/w%d", id)) }
	get(1)
	get(3)
	get(5)
	if fast() < 2 || l7.FastWriters() == 0 {
		t.Fatalf("fast streams %d, writers %d: the fast path did not serve", fast(), l7.FastWriters())
	}
	testutil.WaitFor(t, "the idle connection's writer to go", 10*time.Second, func() bool { return l7.FastWriters() == 0 })
	n := fast()
	get(7)
	get(9)
	if fast() < n+2 {
		t.Fatalf("after the writer went: fast streams %d, want %d", fast(), n+2)
	}
}
