package l7_test

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"sluice/internal/testutil"
)

// httpBackend is a real net/http server on loopback that counts the TCP
// connections it accepted.
type httpBackend struct {
	Addr  string
	Conns atomic.Int64
}

func serveHTTP(t *testing.T, h http.Handler) *httpBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &httpBackend{Addr: ln.Addr().String()}
	srv := &http.Server{Handler: h, ConnState: func(c net.Conn, s http.ConnState) {
		if s == http.StateNew {
			b.Conns.Add(1)
		}
	}}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return b
}

func httpConfig(front, extra string, backends map[string][]string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "[frontend.web]\nmode = \"http\"\nbind = [\"{{FRONT}}\"]\n%s\n", front)
	for name, addrs := range backends {
		fmt.Fprintf(&b, "[backend.%s]\n%s\n", name, extra)
		for i, a := range addrs {
			fmt.Fprintf(&b, "[[backend.%s.server]]\nname = \"%s%d\"\naddress = %q\n", name, name, i+1, a)
		}
	}
	return b.String()
}

func named(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Server", name)
		fmt.Fprintf(w, "%s %s", name, r.URL.Path)
	})
}

// rawExchange writes req on a fresh connection and returns everything read
// until the proxy closes it (or the deadline passes).
func rawExchange(t *testing.T, front, req string) string {
	t.Helper()
	c := testutil.Dial(t, front)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(c)
	return string(out)
}

func statusOf(resp string) string {
	line, _, _ := strings.Cut(resp, "\r\n")
	return line
}

func TestKeepAliveReusesServerConnections(t *testing.T) {
	be := serveHTTP(t, named("a"))
	_, front := testutil.Start(t, httpConfig(`default_backend = "app"`, "", map[string][]string{"app": {be.Addr}}))
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	defer client.CloseIdleConnections()
	for i := range 50 {
		resp, err := client.Get("http://" + front + fmt.Sprintf("/r%d", i))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := fmt.Sprintf("a /r%d", i); string(body) != want {
			t.Fatalf("body %q, want %q", body, want)
		}
	}
	if n := be.Conns.Load(); n != 1 {
		t.Fatalf("server saw %d connections for 50 sequential requests, want 1 (pooled)", n)
	}
	// New client connections also reuse the pooled server connection.
	for range 5 {
		out := rawExchange(t, front, "GET /x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
		if !strings.HasPrefix(out, "HTTP/1.1 200") {
			t.Fatalf("got %q", out)
		}
	}
	if n := be.Conns.Load(); n != 1 {
		t.Fatalf("server saw %d connections, want 1", n)
	}
}

func TestForwardingHeaders(t *testing.T) {
	got := make(chan http.Header, 1)
	be := serveHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Clone()
		w.Header().Set("Connection", "X-Secret")
		w.Header().Set("X-Secret", "server-hop")
		w.Header().Set("Keep-Alive", "timeout=5")
	}))
	_, front := testutil.Start(t, httpConfig(`default_backend = "app"`, "", map[string][]string{"app": {be.Addr}}))
	_, port, _ := net.SplitHostPort(front)
	out := rawExchange(t, front, "GET / HTTP/1.1\r\nHost: example.com\r\n"+
		"X-Forwarded-For: 203.0.113.7\r\nForwarded: for=203.0.113.7\r\nX-Forwarded-Proto: https\r\n"+
		"Connection: close, X-Hop\r\nX-Hop: secret\r\nKeep-Alive: 300\r\nProxy-Connection: keep-alive\r\n\r\n")
	h := <-got
	for _, tc := range []struct{ name, want string }{
		{"X-Forwarded-For", "203.0.113.7, 127.0.0.1"},
		{"X-Forwarded-Proto", "http"},
		{"X-Forwarded-Port", port},
		{"Forwarded", `for=203.0.113.7, for=127.0.0.1;proto=http;host="example.com"`},
		{"X-Hop", ""},
		{"Keep-Alive", ""},
		{"Proxy-Connection", ""},
	} {
		if v := strings.Join(h.Values(tc.name), ","); v != tc.want {
			t.Errorf("%s = %q, want %q", tc.name, v, tc.want)
		}
	}
	if strings.Contains(out, "X-Secret") || strings.Contains(out, "timeout=5") {
		t.Errorf("hop-by-hop response headers leaked to the client:\n%s", out)
	}
}

func TestRouting(t *testing.T) {
	backends := map[string][]string{}
	for _, n := range []string{"api", "wild", "static", "canary", "def"} {
		backends[n] = []string{serveHTTP(t, named(n)).Addr}
	}
	front := `default_backend = "def"
[[frontend.web.route]]
host = "api.example.com"
backend = "api"
[[frontend.web.route]]
host = "*.example.org"
backend = "wild"
[[frontend.web.route]]
path_prefix = "/static/"
backend = "static"
[[frontend.web.route]]
header = { "X-Canary" = "1" }
backend = "canary"
`
	_, addr := testutil.Start(t, httpConfig(front, "", backends))
	for _, tc := range []struct {
		desc, host, path, extra, want string
	}{
		{"exact host", "api.example.com", "/", "", "api"},
		{"exact host with port, any case", "API.example.com:8080", "/static/x", "", "api"},
		{"wildcard host", "a.b.example.org", "/", "", "wild"},
		{"wildcard does not match the apex", "example.org", "/", "", "def"},
		{"path prefix", "other", "/static/app.js", "", "static"},
		{"header", "other", "/", "X-Canary: 1\r\n", "canary"},
		{"header value must match", "other", "/", "X-Canary: 2\r\n", "def"},
		{"default", "other", "/", "", "def"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			out := rawExchange(t, addr, "GET "+tc.path+" HTTP/1.1\r\nHost: "+tc.host+"\r\n"+tc.extra+"Connection: close\r\n\r\n")
			if !strings.Contains(out, "X-Server: "+tc.want+"\r\n") {
				t.Fatalf("want backend %s, got:\n%s", tc.want, out)
			}
		})
	}
}

func TestNoRouteNoDefaultIs404(t *testing.T) {
	api := serveHTTP(t, named("api"))
	front := "[[frontend.web.route]]\nhost = \"api.example.com\"\nbackend = \"api\"\n"
	_, addr := testutil.Start(t, httpConfig(front, "", map[string][]string{"api": {api.Addr}}))
	c := testutil.Dial(t, addr)
	r := bufio.NewReader(c)
	// Two requests on one connection: the 404 keeps the connection usable.
	fmt.Fprint(c, "GET / HTTP/1.1\r\nHost: nope\r\n\r\n")
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != 404 {
		t.Fatalf("status %d, want 404", resp.StatusCode)
	}
	fmt.Fprint(c, "GET / HTTP/1.1\r\nHost: api.example.com\r\n\r\n")
	resp, err = http.ReadResponse(r, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("second request: %v %v", resp, err)
	}
}

func TestLargeBodiesStreamBothWays(t *testing.T) {
	be := serveHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, _ := io.Copy(h, r.Body)
		w.Header().Set("X-Sum", fmt.Sprintf("%x", h.Sum(nil)))
		w.Header().Set("X-Len", fmt.Sprint(n))
		// Echo a large chunked body back.
		io.CopyN(w, bytes.NewReader(bytes.Repeat([]byte("0123456789abcdef"), 1<<18)), 4<<20)
	}))
	_, front := testutil.Start(t, httpConfig(`default_backend = "app"`, "", map[string][]string{"app": {be.Addr}}))
	body := make([]byte, 6<<20)
	rand.Read(body)
	sum := sha256.Sum256(body)
	for _, chunked := range []bool{false, true} {
		var rd io.Reader = bytes.NewReader(body)
		if chunked {
			rd = io.MultiReader(rd) // hides the length: the client sends chunked
		}
		req, _ := http.NewRequest("POST", "http://"+front+"/up", rd)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.Header.Get("X-Sum") != fmt.Sprintf("%x", sum) {
			t.Fatalf("chunked=%v: server got a different body (len %s)", chunked, resp.Header.Get("X-Len"))
		}
		if len(got) != 4<<20 {
			t.Fatalf("chunked=%v: response %d bytes, want %d", chunked, len(got), 4<<20)
		}
	}
}

func TestTrailersAndContinue(t *testing.T) {
	be := serveHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Trailer", "X-Checksum")
		w.Write(body)
		w.(http.Flusher).Flush()
		w.Header().Set("X-Checksum", fmt.Sprintf("%x/%s", sha256.Sum256(body), r.Trailer.Get("X-Req-Trailer")))
	}))
	_, front := testutil.Start(t, httpConfig(`default_backend = "app"`, "", map[string][]string{"app": {be.Addr}}))
	req, _ := http.NewRequest("PUT", "http://"+front+"/", io.MultiReader(strings.NewReader("payload")))
	req.Header.Set("Expect", "100-continue")
	req.Trailer = http.Header{"X-Req-Trailer": {"tv"}}
	tr := &http.Transport{ExpectContinueTimeout: 10 * time.Second}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(got) != "payload" {
		t.Fatalf("body %q", got)
	}
	want := fmt.Sprintf("%x/tv", sha256.Sum256([]byte("payload")))
	if v := resp.Trailer.Get("X-Checksum"); v != want {
		t.Fatalf("trailer %q, want %q", v, want)
	}
}

func TestPipelinedRequestsAnsweredInOrder(t *testing.T) {
	be := serveHTTP(t, named("a"))
	_, front := testutil.Start(t, httpConfig(`default_backend = "app"`, "", map[string][]string{"app": {be.Addr}}))
	c := testutil.Dial(t, front)
	fmt.Fprint(c, "GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\nGET /3 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
	r := bufio.NewReader(c)
	for i := 1; i <= 3; i++ {
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		if want := fmt.Sprintf("a /%d", i); string(body) != want {
			t.Fatalf("response %d: %q, want %q", i, body, want)
		}
	}
}

func TestWebSocketTunnel(t *testing.T) {
	be := serveHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "websocket" {
			http.Error(w, "want upgrade", 400)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		brw.Flush()
		// Echo until the client half-closes, then say goodbye.
		io.Copy(conn, brw)
		conn.Write([]byte("bye"))
		conn.(*net.TCPConn).CloseWrite()
	}))
	_, front := testutil.Start(t, httpConfig(`default_backend = "app"`, "", map[string][]string{"app": {be.Addr}}))
	c := testutil.Dial(t, front)
	fmt.Fprint(c, "GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
	r := bufio.NewReader(c)
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 101 {
		t.Fatalf("status %d, want 101", resp.StatusCode)
	}
	for i := range 5 {
		msg := fmt.Sprintf("frame-%d|", i)
		c.Write([]byte(msg))
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(r, buf); err != nil || string(buf) != msg {
			t.Fatalf("echo %q, %v", buf, err)
		}
	}
	c.CloseWrite()
	rest, err := io.ReadAll(r)
	if err != nil || string(rest) != "bye" {
		t.Fatalf("after half-close got %q, %v", rest, err)
	}
}
