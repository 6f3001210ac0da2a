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

// Review of issue 16: an HTTP/1 client of an h2c backend waits in the
// queue with its connection watched; when it closes, the watch ends the
// wait (Connect returns the watch's own context error) while the
// request's context is still alive. roundTrip took that for an exchange
// that failed after the request went out and counted it against the
// server it never picked (nil: a panic, one connection lost and logged as
// a bug); stdError then answered 502 to nobody and counted it.
func TestH1ClientOfH2cBackendLeavesQueue(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	let := func() { once.Do(func() { close(release) }) }
	defer let()
	addr, _ := startHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "live")
		if r.URL.Path != "/hold" {
			return
		}
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}), true)
	eng, front := testutil.Start(t, fmt.Sprintf(`
[defaults]
timeout_client = "30s"
timeout_server = "30s"
[frontend.web]
mode = "http"
bind = ["{{FRONT}}"]
default_backend = "b"
[backend.b]
proto = "h2c"
queue_timeout = "30s"
[[backend.b.server]]
name = "live"
address = %q
maxconn = 1
`, addr))
	be := eng.Backends["b"]
	srv := be.Server("live")
	f := eng.Front.Frontends[0]

	hold := testutil.Dial(t, front)
	io.WriteString(hold, "GET /hold HTTP/1.1\r\nHost: a\r\n\r\n")
	hold.SetReadDeadline(time.Now().Add(5 * time.Second))
	if line, err := bufio.NewReader(hold).ReadString('\n'); err != nil || !strings.Contains(line, "200") {
		t.Fatalf("first request: %q, %v", line, err)
	}

	queued := testutil.Dial(t, front)
	io.WriteString(queued, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	testutil.WaitFor(t, "the second request in the queue", 5*time.Second, func() bool { return be.Counters.Queue.Load() == 1 })
	queued.Close()
	testutil.WaitFor(t, "the queue to empty", 5*time.Second, func() bool { return be.Counters.Queue.Load() == 0 })

	// The connection's goroutine ends after the queue does: a third
	// request on the held connection's server after it, served in turn,
	// orders the checks below after it.
	let()
	testutil.WaitFor(t, "the held request to end", 5*time.Second, func() bool { return srv.Active() == 0 && f.Counters.Current.Load() <= 1 })
	if n := f.Counters.Panics.Load(); n != 0 {
		t.Errorf("Panics = %d: a client leaving the queue crashed its connection", n)
	}
	p := f.HTTP()
	if n := p.Counters.BadGateway502.Load(); n != 0 {
		t.Errorf("BadGateway502 = %d: a client that left the queue was counted as a 502", n)
	}
	if n := srv.Counters.RespErrors.Load(); n != 0 {
		t.Errorf("server RespErrors = %d for a request it never saw", n)
	}
}

// Review of issue 16: one access-log record for every HTTP path. A client
// that leaves while its request is queued is logged on the net/http
// paths (termination "client") and was not logged at all on the HTTP/1
// path: the request vanished from the log while it did count in
// Requests.
func TestQueueLeaverLoggedEveryProtocol(t *testing.T) {
	for _, m := range connectModes(t) {
		if m.name == "tcp" || m.name == "udp" {
			continue
		}
		t.Run(m.name, func(t *testing.T) {
			file := t.TempDir() + "/access.log"
			m.front = fmt.Sprintf("access_log = true\naccess_log_file = %q\n", file) + m.front
			_, be, _, cancel, done, release := connectQueued(t, m)
			cancel()
			testutil.WaitFor(t, "the queue to empty", 5*time.Second, func() bool { return be.Counters.Queue.Load() == 0 })
			<-done
			release()
			// The held request is logged when it ends; the one that left
			// before it.
			testutil.WaitFor(t, "two access log lines", 5*time.Second, func() bool { return len(logLines(file)) >= 2 })
			var left map[string]string
			for _, l := range logLines(file) {
				if f := logFields(l); f["path"] == "/hold" && f["termination"] == "client" {
					left = f
				}
			}
			if left == nil {
				t.Fatalf("no line for the request that left the queue: %q", logLines(file))
			}
			if left["status"] != "0" || left["backend"] != "b" || left["server"] != "" {
				t.Errorf("line of the request that left the queue: %v", left)
			}
		})
	}
}

// secondRequestCloser is an HTTP/1.1 server that answers the first request
// of each connection (keep-alive, the path echoed in the body) and closes
// the connection on the second without answering: a pooled connection the
// server dropped as the request arrived. It records every request line.
func secondRequestCloser(t *testing.T) (addr string, lines func() []string) {
	var mu sync.Mutex
	var got []string
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for n := 0; ; n++ {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					io.Copy(io.Discard, req.Body)
					mu.Lock()
					got = append(got, req.Method+" "+req.URL.Path)
					mu.Unlock()
					if n == 1 {
						return
					}
					fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(req.URL.Path), req.URL.Path)
				}
			}()
		}
	}()
	return ln.Addr().String(), func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), got...)
	}
}

// Review of issue 16: a request sent on a pooled connection that the
// server closed before answering is sent again on a new one (retryStale)
// while retries last. With none left, forward returned "keep the client
// connection" without answering: the client's next (pipelined) request
// was answered in its place, and a body that came with the head, put
// back in the read buffer for the resend, was parsed as the client's next
// request and forwarded (smuggled).
func TestStaleResendWithoutRetriesAnswers(t *testing.T) {
	for _, tc := range []struct {
		name, second string
	}{
		{"pipelined GET", "GET /2 HTTP/1.1\r\nHost: a\r\n\r\nGET /3 HTTP/1.1\r\nHost: a\r\n\r\n"},
		{"PUT whose body is a request", "PUT /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 35\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, lines := secondRequestCloser(t)
			_, front := testutil.Start(t, fmt.Sprintf(`
[defaults]
timeout_client = "5s"
timeout_server = "5s"
[frontend.web]
mode = "http"
bind = ["{{FRONT}}"]
default_backend = "b"
[backend.b]
retries = 0
[[backend.b.server]]
name = "s"
address = %q
`, addr))
			c := testutil.Dial(t, front)
			c.SetDeadline(time.Now().Add(10 * time.Second))
			br := bufio.NewReader(c)
			io.WriteString(c, "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n")
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			if string(body) != "/1" {
				t.Fatalf("first answer %q", body)
			}
			io.WriteString(c, tc.second)
			resp, err = http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("no answer to /2: %v (server saw %q)", err, lines())
			}
			body, _ = io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusBadGateway {
				t.Errorf("answer to /2: %d %q, want 502 (server saw %q)", resp.StatusCode, body, lines())
			}
			for _, l := range lines() {
				if strings.HasSuffix(l, "/smuggled") {
					t.Errorf("the request body reached the server as a request: %q", lines())
				}
			}
		})
	}
}
