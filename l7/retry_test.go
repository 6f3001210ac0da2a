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
