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

// evil is a complete response a server (or content it was given) puts where
// no body belongs: if sluice pools the connection with these bytes still
// unread, the next client, on another connection, gets them as its answer.
const evil = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nEVIL!"

var leftoverResponses = map[string]string{
	"head-body":     "HTTP/1.1 200 OK\r\nContent-Length: 44\r\n\r\n" + evil,
	"204-body":      "HTTP/1.1 204 No Content\r\n\r\n" + evil,
	"304-body":      "HTTP/1.1 304 Not Modified\r\nContent-Length: 44\r\n\r\n" + evil,
	"cl-short":      "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" + evil,
	"chunked-extra": "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n" + evil,
}

// Review of issue 15: a server connection whose response left bytes unread
// (a body to HEAD, a body on 204/304, more bytes than Content-Length) went
// back to the pool, and the next client, on another connection, got those
// bytes as its response: one client's response (here one the server was
// made to write) reaches another. HAProxy closes such a connection and the
// next client gets its own response.
func TestLeftoverResponseBytesNeverReachTheNextClient(t *testing.T) {
	for _, name := range []string{"head-body", "204-body", "304-body", "cl-short", "chunked-extra"} {
		t.Run(name, func(t *testing.T) {
			// A fresh proxy each: a desync must not leak into the next case.
			rec := startRecorder(t, leftoverResponses)
			_, addr := testutil.Start(t, httpConfig(`default_backend = "app"`, "", map[string][]string{"app": {rec.addr}}))
			method := "GET"
			if name == "head-body" {
				method = "HEAD"
			}
			c := testutil.Dial(t, addr)
			c.SetDeadline(time.Now().Add(5 * time.Second))
			io.WriteString(c, method+" /resp/"+name+" HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
			io.ReadAll(c)
			c.Close()

			v := testutil.Dial(t, addr)
			v.SetDeadline(time.Now().Add(5 * time.Second))
			io.WriteString(v, "GET /victim HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
			resp, err := http.ReadResponse(bufio.NewReader(v), nil)
			if err != nil {
				t.Fatalf("victim: %v", err)
			}
			b, _ := io.ReadAll(resp.Body)
			if string(b) != "resp:/victim" {
				t.Fatalf("a new client asking /victim got %d %q: bytes left on a pooled server connection", resp.StatusCode, b)
			}
		})
	}
}

// Review of issue 15: a 101 Switching Protocols answering a request that
// asked for no upgrade reached the client as a 101 (with "Connection:
// upgrade" added by sluice) and the server connection, switched to who
// knows what, went back to the pool with the server's next bytes. HAProxy
// answers 502 and closes the server connection.
func TestUnaskedSwitchingProtocolsIsBadGateway(t *testing.T) {
	rec := startRecorder(t, map[string]string{
		"101": "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: x\r\nContent-Length: 0\r\n\r\n" + evil,
	})
	_, addr := testutil.Start(t, httpConfig(`default_backend = "app"`, "", map[string][]string{"app": {rec.addr}}))
	out := rawExchange(t, addr, "GET /resp/101 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
	if !strings.HasPrefix(out, "HTTP/1.1 502") {
		t.Errorf("a 101 to a request without Upgrade: client got %q, want 502", statusOf(out))
	}
	if out := rawExchange(t, addr, "GET /victim HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"); !strings.HasSuffix(out, "resp:/victim") {
		t.Errorf("the next client got %q", out)
	}
}

// Review of issue 15: bytes a server sends on a connection after its
// response ended, while the connection waits in the pool, are read as the
// response to the next request sent on it: a HEAD body written late
// reaches another client. HAProxy watches idle server connections and
// closes one that speaks; sluice should at least check a pooled connection
// for unread bytes (and for EOF) before reusing it.
func TestBytesOnAnIdlePooledConnectionAreNotAResponse(t *testing.T) {
	spoke, wrote := make(chan struct{}), make(chan struct{})
	be := testutil.Serve(t, "late", func(c net.Conn) {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(c)
		for first := true; ; first = false {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			if first && req.Method == "HEAD" {
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 44\r\n\r\n")
				<-spoke
				io.WriteString(c, evil)
				close(wrote)
				continue
			}
			body := "resp:" + req.URL.Path
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		}
	})
	_, addr := testutil.Start(t, httpConfig(`default_backend = "app"`, "", map[string][]string{"app": {be.Addr}}))
	out := rawExchange(t, addr, "HEAD /late HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
	if !strings.HasPrefix(out, "HTTP/1.1 200") {
		t.Fatalf("HEAD: %q", out)
	}
	close(spoke)
	<-wrote
	if out := rawExchange(t, addr, "GET /victim HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"); !strings.HasSuffix(out, "resp:/victim") {
		t.Errorf("the next client got %q", out)
	}
}

// Review of issue 15: the stale-connection retry sends a POST again when a
// reused connection ends with no response byte, but that also happens when
// the server read the POST, acted on it and then died or closed: the POST
// reaches the server twice. HAProxy sends it once (the client gets an
// error). A connection the server closed while idle can be told apart
// before the request is written (it is readable: EOF); only then is a
// resend safe for a request that is not idempotent.
func TestPostNeverReachesTheServerTwice(t *testing.T) {
	var mu sync.Mutex
	var posts []string
	be := testutil.Serve(t, "dies", func(c net.Conn) {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(c)
		for n := 1; ; n++ {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			b, _ := io.ReadAll(req.Body)
			if req.Method == "POST" {
				mu.Lock()
				posts = append(posts, string(b))
				mu.Unlock()
				if n == 2 {
					return // acted on it, then died before answering
				}
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	_, addr := testutil.Start(t, httpConfig(`default_backend = "app"`, "retries = 2", map[string][]string{"app": {be.Addr}}))
	c := testutil.Dial(t, addr)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.ReadAll(resp.Body)
	io.WriteString(c, "POST /pay HTTP/1.1\r\nHost: h\r\nContent-Length: 9\r\n\r\namount=10")
	if resp, err := http.ReadResponse(br, nil); err == nil {
		io.ReadAll(resp.Body)
	}
	c.Close()
	mu.Lock()
	defer mu.Unlock()
	if len(posts) != 1 {
		t.Fatalf("the server received the POST %d times: %q", len(posts), posts)
	}
}
