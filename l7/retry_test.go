package l7_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"sluice/internal/testutil"
)

// oneShotServer answers one request per connection and then closes it
// without saying so (no "Connection: close"), as a server does whose
// keep-alive timeout ran out while sluice held the connection idle.
type oneShotServer struct {
	addr   string
	mu     sync.Mutex
	bodies []string      // the body of every request received
	closed chan struct{} // a value each time the server closed a connection
}

func serveOneShot(t *testing.T) *oneShotServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	s := &oneShotServer{addr: ln.Addr().String(), closed: make(chan struct{}, 16)}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer func() {
					c.Close()
					s.closed <- struct{}{}
				}()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				req, err := http.ReadRequest(bufio.NewReader(c))
				if err != nil {
					return
				}
				body, _ := io.ReadAll(req.Body)
				s.mu.Lock()
				s.bodies = append(s.bodies, string(body))
				s.mu.Unlock()
				fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body)+2, "ok"+string(body))
			}()
		}
	}()
	return s
}

// Issue 15: a POST sent on a pooled connection the server had closed while
// idle got 502, where a GET was retried. With its small body sent whole
// with the head and no response byte back, it is sent again on a fresh
// connection, and reaches the server once.
func TestPostRetriedOnStalePooledConn(t *testing.T) {
	be := serveOneShot(t)
	_, front := testutil.Start(t, httpConfig(`default_backend = "app"`, "retries = 1",
		map[string][]string{"app": {be.addr}}))

	c := testutil.Dial(t, front)
	br := bufio.NewReader(c)
	do := func(req string) (string, string) {
		t.Helper()
		if _, err := io.WriteString(c, req); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		return resp.Status, string(body)
	}
	if st, _ := do("GET / HTTP/1.1\r\nHost: x\r\n\r\n"); !strings.HasPrefix(st, "200") {
		t.Fatalf("GET: %s", st)
	}
	// The server closed that connection; sluice pooled it. Once the
	// server's close returned, its FIN is in sluice's receive queue.
	<-be.closed
	st, body := do("POST /form HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\nname=once")
	if !strings.HasPrefix(st, "200") || body != "okname=once" {
		t.Fatalf("POST on a stale pooled connection: %s %q", st, body)
	}
	be.mu.Lock()
	defer be.mu.Unlock()
	n := 0
	for _, b := range be.bodies {
		if b == "name=once" {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("the POST body reached the server %d times, want 1 (%q)", n, be.bodies)
	}
}

// A request that reached the server on a reused connection which then
// ended without an answer is sent again once at most, on a fresh
// connection, never on the next pooled one: a request that kills server
// processes reaches two of them, not retries+1.
func TestDeliveredRequestResentOnceAtMost(t *testing.T) {
	var mu sync.Mutex
	booms := 0
	hold := make(chan struct{})
	var held sync.WaitGroup
	held.Add(3)
	be := testutil.Serve(t, "s", func(c net.Conn) {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			switch req.URL.Path {
			case "/boom":
				mu.Lock()
				booms++
				mu.Unlock()
				return // read it, then die without a word
			case "/hold":
				// Three at once: sluice opens three server connections,
				// which it pools afterwards.
				held.Done()
				<-hold
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	_, front := testutil.Start(t, httpConfig(`default_backend = "app"`, "retries = 3", map[string][]string{"app": {be.Addr}}))
	done := make(chan string, 3)
	for range 3 {
		go func() {
			c, err := net.DialTimeout("tcp", front, 5*time.Second)
			if err != nil {
				done <- err.Error()
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			io.WriteString(c, "GET /hold HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
			b, _ := io.ReadAll(c)
			done <- string(b)
		}()
	}
	held.Wait()
	close(hold)
	for range 3 {
		if out := <-done; !strings.HasPrefix(out, "HTTP/1.1 200") {
			t.Fatalf("warm-up: %q", out)
		}
	}
	out := rawExchange(t, front, "GET /boom HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
	if !strings.HasPrefix(out, "HTTP/1.1 502") {
		t.Fatalf("GET /boom: %q, want 502", out)
	}
	mu.Lock()
	defer mu.Unlock()
	if booms != 2 {
		t.Fatalf("the server received GET /boom %d times with 3 pooled connections and retries = 3, want 2 (once, then once on a fresh connection)", booms)
	}
}

// A request whose body came with its head is resent from the bytes built
// for the first go (the read buffer may be back in its pool by then). When
// the resend cannot connect, the 503 keeps the connection, and the body,
// already read, must not be read again from the connection: the next
// pipelined request is answered as a request, not eaten as that body.
func TestResendBodyNotDiscardedTwice(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		// One connection only: the resend's dial is refused.
		c, err := ln.Accept()
		ln.Close()
		if err != nil {
			return
		}
		defer c.Close()
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		io.Copy(io.Discard, req.Body)
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		http.ReadRequest(br) // the second request: closed unanswered
	}()
	_, front := testutil.Start(t, fmt.Sprintf(`
[defaults]
timeout_client = "5s"
timeout_server = "5s"
[frontend.web]
mode = "http"
bind = ["{{FRONT}}"]
default_backend = "b"
[backend.b]
retries = 1
[[backend.b.server]]
name = "s"
address = %q
`, ln.Addr().String()))
	c := testutil.Dial(t, front)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	io.WriteString(c, "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.ReadAll(resp.Body)
	io.WriteString(c, "PUT /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET /3 HTTP/1.1\r\nHost: a\r\n\r\n")
	for _, path := range []string{"/2", "/3"} {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("no answer to %s: %v", path, err)
		}
		io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("answer to %s: %d, want 503", path, resp.StatusCode)
		}
	}
}
