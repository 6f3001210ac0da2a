package l7_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"sluice/internal/testutil"
)

// healthyAlongside opens a keep-alive connection before the bad input and
// checks it still works after: a refusal must touch only its own connection.
func healthyAlongside(t *testing.T, front string) func() {
	c := testutil.Dial(t, front)
	r := bufio.NewReader(c)
	ask := func() {
		t.Helper()
		fmt.Fprint(c, "GET /healthy HTTP/1.1\r\nHost: h\r\n\r\n")
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			t.Fatalf("healthy connection broken: %v", err)
		}
		io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("healthy connection got %d", resp.StatusCode)
		}
	}
	ask()
	return ask
}

func TestRefusals(t *testing.T) {
	var seen atomic.Int64
	be := serveHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// /x is the path of the chunked cases, whose head legitimately
		// reaches the server before the broken body does; its handler may
		// run late, during a later case, so it is not counted.
		if r.URL.Path != "/healthy" && r.URL.Path != "/x" {
			seen.Add(1)
		}
		io.Copy(io.Discard, r.Body)
		w.Write([]byte("ok"))
	}))
	front := "default_backend = \"app\"\ntimeout_http_request = \"400ms\"\nmax_header_bytes = 2048\n"
	eng, addr := testutil.Start(t, httpConfig(front, "", map[string][]string{"app": {be.Addr}}))
	counters := &eng.Front.Frontends[0].HTTP().Counters

	smuggled := "GET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n"
	for _, tc := range []struct {
		desc    string
		req     string
		status  string
		counter *atomic.Uint64
	}{
		{"malformed request line", "GARBAGE\r\n\r\n", "400", &counters.BadRequest},
		{"space before colon", "GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n", "400", &counters.BadRequest},
		{"obs-fold", "GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n  folded\r\n\r\n", "400", &counters.BadRequest},
		{"HTTP/1.1 without Host", "GET / HTTP/1.1\r\n\r\n", "400", &counters.BadRequest},
		{"unknown version", "GET / HTTP/3.7\r\nHost: h\r\n\r\n", "400", &counters.BadRequest},
		{"Content-Length with Transfer-Encoding",
			"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled, "400", &counters.BadRequest},
		{"differing Content-Length",
			"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 40\r\n\r\nabc" + smuggled, "400", &counters.BadRequest},
		{"bad Content-Length", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n", "400", &counters.BadRequest},
		{"Transfer-Encoding other than chunked",
			"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n" + smuggled, "400", &counters.BadRequest},
		{"Transfer-Encoding twice",
			"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "400", &counters.BadRequest},
		{"bad chunk size",
			"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n" + smuggled, "400", &counters.BadRequest},
		{"chunk without its CRLF",
			"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n" + smuggled, "400", &counters.BadRequest},
		{"head too large", "GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + strings.Repeat("a", 4096) + "\r\n\r\n", "431", &counters.TooLarge431},
		{"slowloris head", "GET / HTTP/1.1\r\nHost: h\r\nX-Slow: 1\r\n", "408", &counters.Timeout408},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			again := healthyAlongside(t, addr)
			before := tc.counter.Load()
			seenBefore := seen.Load()
			out := rawExchange(t, addr, tc.req)
			if want := "HTTP/1.1 " + tc.status; !strings.HasPrefix(out, want) {
				t.Fatalf("got %q, want %s…", statusOf(out), want)
			}
			if !strings.Contains(out, "Connection: close") {
				t.Errorf("refusal without Connection: close:\n%s", out)
			}
			if strings.Count(out, "HTTP/1.1 ") != 1 {
				t.Errorf("a request after the refused one was answered (smuggled):\n%s", out)
			}
			if tc.counter.Load() != before+1 {
				t.Errorf("counter went %d -> %d, want +1", before, tc.counter.Load())
			}
			if seen.Load() != seenBefore {
				t.Errorf("the refused request reached the server")
			}
			again()
		})
	}
}

func TestServerErrors(t *testing.T) {
	slow := serveHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	}))
	ok := serveHTTP(t, named("ok"))
	dead := testutil.ClosedAddr(t)
	front := `default_backend = "ok"
[[frontend.web.route]]
path_prefix = "/slow"
backend = "slow"
[[frontend.web.route]]
path_prefix = "/dead"
backend = "dead"
[[frontend.web.route]]
path_prefix = "/down"
backend = "down"
`
	src := httpConfig(front, "retries = 0\ntimeout_server = \"300ms\"", map[string][]string{
		"slow": {slow.Addr}, "ok": {ok.Addr}, "dead": {dead}, "down": {ok.Addr},
	})
	eng, addr := testutil.Start(t, src)
	eng.Backends["down"].Servers()[0].SetUp(false)
	again := healthyAlongside(t, addr)
	for _, tc := range []struct{ path, status string }{
		{"/down", "503"},
		{"/dead", "503"},
		{"/slow", "504"},
	} {
		t.Run(tc.path, func(t *testing.T) {
			be := eng.Backends[tc.path[1:]]
			before := be.Counters.Resp[5].Load()
			out := rawExchange(t, addr, "GET "+tc.path+" HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
			if want := "HTTP/1.1 " + tc.status; !strings.HasPrefix(out, want) {
				t.Fatalf("got %q, want %s", statusOf(out), want)
			}
			// The backend's 5xx count has the answer sluice gave for it
			// (HAProxy's BACKEND row has its own 503s and 504s).
			if n := be.Counters.Resp[5].Load() - before; n != 1 {
				t.Errorf("backend %s: %d more 5xx answers counted, want 1", be.Name, n)
			}
			again()
		})
	}
}

func TestConnectFailureRetriedOnAnotherServer(t *testing.T) {
	ok := serveHTTP(t, named("ok"))
	src := httpConfig(`default_backend = "app"`, "retries = 1", map[string][]string{"app": {testutil.ClosedAddr(t), ok.Addr}})
	_, addr := testutil.Start(t, src)
	for i := range 6 {
		out := rawExchange(t, addr, "POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi")
		if !strings.HasPrefix(out, "HTTP/1.1 200") {
			t.Fatalf("request %d: %q", i, statusOf(out))
		}
	}
}

func TestCustomErrorPage(t *testing.T) {
	page := t.TempDir() + "/503.html"
	if err := writeString(page, "<p>we will be back</p>"); err != nil {
		t.Fatal(err)
	}
	ok := serveHTTP(t, named("ok"))
	eng, addr := testutil.Start(t, httpConfig(fmt.Sprintf("default_backend = \"app\"\nerror_page_503 = %q\n", page), "", map[string][]string{"app": {ok.Addr}}))
	eng.Backends["app"].Servers()[0].SetUp(false)
	out := rawExchange(t, addr, "GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
	if !strings.HasPrefix(out, "HTTP/1.1 503") || !strings.HasSuffix(out, "<p>we will be back</p>") {
		t.Fatalf("got %q", out)
	}
}

func writeString(path, s string) error { return os.WriteFile(path, []byte(s), 0o644) }

// A server that breaks off its body after the head is counted in its
// response errors (HAProxy's eresp) and server aborts, over HTTP/1.1 and
// HTTP/2 alike.
func TestServerBodyBreakCounted(t *testing.T) {
	cut := testutil.Serve(t, "cut", func(c net.Conn) {
		if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789")
	})
	eng, front := testutil.Start(t, httpConfig("default_backend = \"app\"\nh2c = true", "retries = 0", map[string][]string{"app": {cut.Addr}}))
	srv := eng.Backends["app"].Servers()[0]
	for _, c := range []*http.Client{{Transport: &http.Transport{DisableKeepAlives: true}}, h2cClient()} {
		before := srv.Counters.RespErrors.Load()
		resp, err := c.Get("http://" + front + "/")
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		if err == nil {
			t.Fatal("read the whole of a body the server cut")
		}
		testutil.WaitFor(t, "the response error counted", 5*time.Second, func() bool { return srv.Counters.RespErrors.Load() == before+1 })
		if n := srv.Counters.ServerAborts.Load(); n != before+1 {
			t.Errorf("server aborts = %d, want %d (srv_abrt)", n, before+1)
		}
	}
	if n := srv.Counters.ClientAborts.Load(); n != 0 {
		t.Errorf("client aborts = %d: the server broke off, not the client", n)
	}
}

// A client that leaves while its response streams is counted in the
// server's client aborts (HAProxy's cli_abrt), over HTTP/1.1 and HTTP/2.
func TestClientAbortCounted(t *testing.T) {
	big := testutil.Serve(t, "big", func(c net.Conn) {
		if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
			return
		}
		const size = 64 << 20
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: "+fmt.Sprint(size)+"\r\n\r\n")
		chunk := make([]byte, 64<<10)
		for sent := 0; sent < size; sent += len(chunk) {
			if _, err := c.Write(chunk); err != nil {
				return
			}
		}
	})
	eng, front := testutil.Start(t, httpConfig("default_backend = \"app\"\nh2c = true", "retries = 0", map[string][]string{"app": {big.Addr}}))
	srv := eng.Backends["app"].Servers()[0]
	for i, c := range []*http.Client{{Transport: &http.Transport{DisableKeepAlives: true}}, h2cClient()} {
		resp, err := c.Get("http://" + front + "/")
		if err != nil {
			t.Fatal(err)
		}
		io.ReadFull(resp.Body, make([]byte, 1000))
		resp.Body.Close() // leaves with most of the body still to come
		if tr, ok := c.Transport.(*http.Transport); ok {
			tr.CloseIdleConnections()
		}
		testutil.WaitFor(t, "the client abort counted", 10*time.Second, func() bool { return srv.Counters.ClientAborts.Load() == uint64(i+1) })
	}
	if n := srv.Counters.ServerAborts.Load(); n != 0 {
		t.Errorf("server aborts = %d: the client left, not the server", n)
	}
}

// sluice's own error answer to a HEAD carries no body (RFC 9110 §9.3.2):
// on the kept connection, the next request's answer comes next, not the
// error page's bytes.
func TestHeadErrorHasNoBody(t *testing.T) {
	ok := serveHTTP(t, named("ok"))
	front := "default_backend = \"ok\"\n[[frontend.web.route]]\npath_prefix = \"/dead\"\nbackend = \"dead\"\n"
	_, addr := testutil.Start(t, httpConfig(front, "retries = 0", map[string][]string{"ok": {ok.Addr}, "dead": {testutil.ClosedAddr(t)}}))
	c := testutil.Dial(t, addr)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "HEAD /dead HTTP/1.1\r\nHost: h\r\n\r\nGET /next HTTP/1.1\r\nHost: h\r\n\r\n")
	br := bufio.NewReader(c)
	head, err := http.ReadResponse(br, &http.Request{Method: "HEAD"})
	if err != nil || head.StatusCode != 503 {
		t.Fatalf("HEAD: %v %v, want 503", head, err)
	}
	next, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("the answer after the HEAD's: %v (the error page's body left on the connection?)", err)
	}
	body, _ := io.ReadAll(next.Body)
	if next.StatusCode != 200 || !strings.Contains(string(body), "ok") {
		t.Fatalf("answer to GET /next: %d %q", next.StatusCode, body)
	}
}
