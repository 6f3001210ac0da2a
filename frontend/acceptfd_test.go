//go:build linux

package frontend_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"sluice/engine"
	"sluice/internal/testutil"
)

// An http frontend (no TLS, no accept_proxy) accepts on the bare
// descriptor: its connections are fdconn's, entering Go's poller only to
// wait. A request sent with the connect and one sent late are both
// answered, the access log names the client and its connection id, and a
// hard stop cuts a client still waiting.
func TestHTTPAcceptsBareDescriptors(t *testing.T) {
	addr := serveHTTP(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
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
`, logFile, addr))

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
		resp, b := readAnswer(t, c)
		if resp.StatusCode != 200 || b != "ok" {
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

// serveHTTP serves h on a loopback port until the test ends.
func serveHTTP(t *testing.T, h http.HandlerFunc) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// startFront runs an http frontend f (its own keys, or tables of it, in
// extra) to a backend of the one server at addr.
func startFront(t *testing.T, extra, addr string) (*engine.Engine, string) {
	t.Helper()
	return testutil.Start(t, "[frontend.f]\nmode = \"http\"\nbind = [\"{{FRONT}}\"]\ndefault_backend = \"b\"\n"+
		extra+fmt.Sprintf("[[backend.b.server]]\naddress = %q\n", addr))
}

// readAnswer reads the response to what was written on c, and its body.
func readAnswer(t *testing.T, c net.Conn) (*http.Response, string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// wantFdconns checks that the server tracks n connections, all fdconns.
func wantFdconns(t *testing.T, eng *engine.Engine, n int) {
	t.Helper()
	got := eng.Front.TrackedTypes()
	ok := len(got) == n
	for _, g := range got {
		ok = ok && g == "*fdconn.Conn"
	}
	if !ok {
		t.Fatalf("tracked %v, want %d *fdconn.Conn", got, n)
	}
}

// An h2c frontend accepts on the bare descriptor too: HTTP/2 with prior
// knowledge (requests with and without a body, on one connection kept
// open, tracked as an fdconn) and HTTP/1.1 on the same port are answered.
func TestH2CAcceptsBareDescriptors(t *testing.T) {
	addr := serveHTTP(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %s", r.Method, r.URL.Path, b)
	})
	eng, front := startFront(t, "h2c = true\n", addr)

	tr := &http2.Transport{AllowHTTP: true, DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}}
	t.Cleanup(tr.CloseIdleConnections)
	cl := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	for i := range 20 {
		var body io.Reader
		method, want := "GET", fmt.Sprintf("GET /%d ", i)
		if i%2 == 1 {
			method, body, want = "POST", strings.NewReader(strings.Repeat("b", 100*i)), fmt.Sprintf("POST /%d %s", i, strings.Repeat("b", 100*i))
		}
		req, _ := http.NewRequest(method, fmt.Sprintf("http://%s/%d", front, i), body)
		resp, err := cl.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.ProtoMajor != 2 || string(b) != want {
			t.Fatalf("%s /%d: HTTP/%d %q, want HTTP/2 %q", method, i, resp.ProtoMajor, b, want)
		}
	}
	// The HTTP/2 connection stays open between requests: tracked as an
	// fdconn.
	wantFdconns(t, eng, 1)
	c := dialFrom(t, "127.0.0.5", front)
	c.Write([]byte("GET /h1 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"))
	if _, b := readAnswer(t, c); b != "GET /h1 " {
		t.Fatalf("HTTP/1.1 on the h2c frontend: %q", b)
	}
}

// A TLS frontend accepts on the bare descriptor as well: the handshake and
// every record go through the fdconn, for HTTP/1.1 and HTTP/2 clients.
func TestTLSAcceptsBareDescriptors(t *testing.T) {
	addr := serveHTTP(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s", r.URL.Path, b)
	})
	ca := newCA(t, "bare CA")
	cert, key := writePair(t, ca.issue(t, time.Now().Add(time.Hour), "127.0.0.1"))
	eng, front := startFront(t, fmt.Sprintf("[[frontend.f.tls]]\ncert = %q\nkey = %q\n", cert, key), addr)
	for proto, cl := range alpnClients(ca) {
		for i := range 5 {
			body := strings.Repeat("x", 3000*i)
			resp, err := cl.Post(fmt.Sprintf("https://%s/%d", front, i), "text/plain", strings.NewReader(body))
			if err != nil {
				t.Fatalf("%s: %v", proto, err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.Proto != proto || string(b) != fmt.Sprintf("/%d %s", i, body) {
				t.Fatalf("%s /%d: %s, %d bytes", proto, i, resp.Proto, len(b))
			}
		}
	}
	// Both clients keep their connection open: two fdconns.
	wantFdconns(t, eng, 2)
}

// accept_proxy frontends accept on the bare descriptor too: the PROXY
// header is read from the fdconn and its source is the client's.
func TestProxyHeaderOnBareDescriptor(t *testing.T) {
	addr := serveHTTP(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Header.Get("X-Forwarded-For"))
	})
	eng, front := startFront(t, "accept_proxy = true\n", addr)
	c := dialFrom(t, "127.0.0.6", front)
	c.Write([]byte("PROXY TCP4 192.0.2.7 127.0.0.1 1234 80\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n"))
	if _, b := readAnswer(t, c); b != "192.0.2.7" {
		t.Fatalf("X-Forwarded-For %q, want the PROXY header's source", b)
	}
	// Kept alive: still tracked, as an fdconn.
	wantFdconns(t, eng, 1)
}
