//go:build linux

package frontend_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"sluice/internal/testutil"
)

// An http frontend (no TLS, no accept_proxy) accepts on the bare
// descriptor: its connections are fdconn's, entering Go's poller only to
// wait. A request sent with the connect and one sent late are both
// answered, the access log names the client and its connection id, and a
// hard stop cuts a client still waiting.
func TestHTTPAcceptsBareDescriptors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	logFile := t.TempDir() + "/access.log"
	eng, front := testutil.Start(t, fmt.Sprintf(`[global]
hard_stop_after = "5s"
[frontend.f]
mode = "http"
bind = ["{{FRONT}}"]
access_log = true
access_log_file = %q
default_backend = "b"
[[backend.b.server]]
address = %q
`, logFile, ln.Addr().String()))

	get := func(c net.Conn, split bool) {
		t.Helper()
		req := "GET /x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
		if split {
			// The head in two writes: the second may find the connection
			// waiting in the poller.
			c.Write([]byte(req[:10]))
			req = req[10:]
		}
		c.Write([]byte(req))
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || string(b) != "ok" {
			t.Fatalf("status %d body %q", resp.StatusCode, b)
		}
	}
	c := dialFrom(t, "127.0.0.3", front)
	get(c, false)
	get(dialFrom(t, "127.0.0.3", front), true)
	client := c.LocalAddr().String()
	waitUntil(t, func() bool { b, _ := os.ReadFile(logFile); return strings.Count(string(b), "\n") >= 2 }, "two access log lines")
	lines, _ := os.ReadFile(logFile)
	if !strings.Contains(string(lines), "client="+client) || !strings.Contains(string(lines), " id=") {
		t.Fatalf("access log %q, want client=%s and an id", lines, client)
	}

	// A client that sends nothing is tracked as an fdconn and cut at a
	// hard stop.
	quiet := dialFrom(t, "127.0.0.4", front)
	quiet.Write([]byte("GET / HT"))
	waitUntil(t, func() bool { return len(eng.Front.TrackedTypes()) == 1 }, "the quiet client tracked")
	if got := eng.Front.TrackedTypes(); got[0] != "*fdconn.Conn" {
		t.Fatalf("tracked %v, want *fdconn.Conn", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // a hard stop at once
	if cut := eng.Front.Shutdown(ctx); cut != 1 {
		t.Fatalf("hard stop cut %d connections, want 1", cut)
	}
	quiet.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadAll(quiet); err != nil && !isReset(err) {
		t.Fatalf("quiet client: %v, want its connection closed", err)
	}
	if n := eng.Front.Tracked(); n != 0 {
		t.Fatalf("%d connections still tracked", n)
	}
}
