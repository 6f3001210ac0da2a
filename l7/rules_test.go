package l7_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"sluice/backend"
	"sluice/conf"
	"sluice/internal/testutil"
	"sluice/l7"
	"sluice/policy"
)

// The edge policy ([[frontend.NAME.rule]], [frontend.NAME.rate_limit]) on
// both HTTP paths, with real clients from several source addresses
// (127.0.0.2, 127.0.0.3) and real servers (HTTP/1.1 and h2c).

// syncBuf is an access log sink the test reads while the proxy writes.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// terms returns the terminations of the access log's lines, in order.
func (s *syncBuf) terms() []string {
	var out []string
	for _, m := range regexp.MustCompile(`termination=(\S*)`).FindAllStringSubmatch(s.String(), -1) {
		out = append(out, strings.Trim(m[1], `"`))
	}
	return out
}

// ruleFront is an http frontend (HTTP/1 and h2c prior knowledge) with the
// policy of fc in front of one server at serverAddr.
type ruleFront struct {
	addr string
	p    *l7.Proxy
	logs *syncBuf
}

func startRuleFront(t *testing.T, fc conf.Frontend, serverAddr string, proto conf.Proto) *ruleFront {
	t.Helper()
	fc.Name, fc.Mode = "web", conf.ModeHTTP
	pol := policy.New(&fc)
	if pol == nil {
		t.Fatal("no policy built")
	}
	be, err := backend.New(&conf.Backend{Name: "app", Mode: conf.ModeHTTP, TimeoutConnect: 2 * time.Second,
		TimeoutServer: 10 * time.Second, Servers: []conf.Server{{Name: "s1", Address: serverAddr, Weight: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	stop, cancel := context.WithCancel(context.Background())
	f := &ruleFront{addr: ln.Addr().String(), logs: &syncBuf{}}
	f.p = &l7.Proxy{Frontend: "web", Default: be, Port: port, TimeoutClient: 10 * time.Second,
		TimeoutHTTPRequest: 10 * time.Second, MaxHeaderBytes: 32 << 10,
		Backends: map[*backend.Backend]l7.BackendOptions{be: {PoolMaxIdle: 8, PoolIdleTimeout: time.Minute, Proto: proto}},
		H2C:      true, Stop: stop, Policy: pol, Access: l7.NewAccessLog(f.logs, "text")}
	var (
		mu    sync.Mutex
		conns = map[net.Conn]bool{}
		wg    sync.WaitGroup
		ids   atomic.Int64
	)
	accepting := make(chan struct{})
	go func() {
		defer close(accepting)
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[conn] = true
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				info := l7.ConnInfo{Client: netip.MustParseAddrPort(conn.RemoteAddr().String()),
					Local: netip.MustParseAddrPort(conn.LocalAddr().String()), Accepted: time.Now(),
					ConnID: fmt.Sprintf("c%d", ids.Add(1))}
				f.p.ServeClient(conn, info)
				mu.Lock()
				delete(conns, conn)
				mu.Unlock()
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-accepting
		cancel()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
		f.p.CloseIdle()
	})
	return f
}

// client is an HTTP client from one source address that follows no
// redirect and counts the connections it opens.
type client struct {
	*http.Client
	dials atomic.Int64
}

// newClient makes a client from src, HTTP/1.1 or (h2) HTTP/2 with prior
// knowledge.
func newClient(t *testing.T, src string, h2 bool) *client {
	c := &client{}
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		c.dials.Add(1)
		return d.DialContext(ctx, network, addr)
	}
	var tr http.RoundTripper
	if h2 {
		tr = &http2.Transport{AllowHTTP: true, DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			return dial(ctx, network, addr)
		}}
	} else {
		tr = &http.Transport{DialContext: dial, MaxIdleConnsPerHost: 1}
	}
	c.Client = &http.Client{Transport: tr, Timeout: 20 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	t.Cleanup(c.CloseIdleConnections)
	return c
}

// do sends a request and returns the response with its body read.
func (c *client) do(t *testing.T, method, url, host string, body string, hdr ...string) (*http.Response, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

// headerServer answers with the request's headers, one "Name: value" line
// each (sorted), and headers of its own for the response rules to edit.
func headerServer(hits *atomic.Int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		io.Copy(io.Discard, r.Body)
		var lines []string
		for name, vs := range r.Header {
			for _, v := range vs {
				lines = append(lines, name+": "+v)
			}
		}
		slices.Sort(lines)
		w.Header().Set("X-Frame-Options", "SAMEORIGIN")
		w.Header().Set("Server-Secret", "s3cret")
		w.Header().Set("X-Keep", "kept")
		fmt.Fprintf(w, "path=%s\n%s\n", r.URL.RequestURI(), strings.Join(lines, "\n"))
	})
}

// seen parses headerServer's answer: the values of each header.
func seen(body string) map[string][]string {
	m := map[string][]string{}
	for _, line := range strings.Split(body, "\n") {
		if name, v, ok := strings.Cut(line, ": "); ok {
			m[name] = append(m[name], v)
		}
	}
	return m
}

var protos = []struct {
	name string
	h2   bool
}{{"http1", false}, {"h2c", true}}

func TestRuleRedirectToHTTPS(t *testing.T) {
	var hits atomic.Int64
	srv, _ := startHTTP(t, headerServer(&hits), false)
	no := false
	withPort := startRuleFront(t, conf.Frontend{Rules: []conf.Rule{
		{TLS: &no, Action: conf.ActionRedirect, Scheme: "https", Port: 8443, Code: 301},
	}}, srv, "")
	noPort := startRuleFront(t, conf.Frontend{Rules: []conf.Rule{
		{TLS: &no, Action: conf.ActionRedirect, Scheme: "https", Code: 308},
	}}, srv, "")
	for _, pr := range protos {
		t.Run(pr.name, func(t *testing.T) {
			c := newClient(t, "127.0.0.2", pr.h2)
			resp, body := c.do(t, "GET", "http://"+withPort.addr+"/a/b?q=1&r=2", "www.example.com:8080", "")
			if resp.StatusCode != 301 || resp.Header.Get("Location") != "https://www.example.com:8443/a/b?q=1&r=2" || body != "" {
				t.Fatalf("got %d Location %q body %q", resp.StatusCode, resp.Header.Get("Location"), body)
			}
			if !pr.h2 && (resp.ContentLength != 0 || resp.Close) {
				t.Fatalf("HTTP/1 redirect: Content-Length %d, close %v; want 0 and kept", resp.ContentLength, resp.Close)
			}
			// A POST's body is read and dropped: the connection serves the
			// next request.
			resp, _ = c.do(t, "POST", "http://"+withPort.addr+"/form", "www.example.com", "a=1&b=2")
			if resp.StatusCode != 301 || resp.Header.Get("Location") != "https://www.example.com:8443/form" {
				t.Fatalf("POST: got %d Location %q", resp.StatusCode, resp.Header.Get("Location"))
			}
			if n := c.dials.Load(); n != 1 {
				t.Fatalf("%d connections for two redirected requests, want 1 (kept)", n)
			}
			c2 := newClient(t, "127.0.0.3", pr.h2)
			resp, _ = c2.do(t, "GET", "http://"+noPort.addr+"/x/y", "www.example.com:8080", "")
			if resp.StatusCode != 308 || resp.Header.Get("Location") != "https://www.example.com/x/y" {
				t.Fatalf("no port: got %d Location %q", resp.StatusCode, resp.Header.Get("Location"))
			}
		})
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("the server saw %d requests; redirects are answered by sluice", n)
	}
	if n := withPort.p.Policy.Counters.Redirected.Load(); n != 4 {
		t.Fatalf("Redirected %d, want 4", n)
	}
	// The line of a request is logged once its answer is out.
	testutil.WaitFor(t, "four access log lines", 5*time.Second, func() bool { return len(withPort.logs.terms()) == 4 })
	if got := withPort.logs.terms(); !slices.Equal(got, []string{"redirect", "redirect", "redirect", "redirect"}) {
		t.Fatalf("access log terminations %q", got)
	}
}

func TestRuleDenyNetwork(t *testing.T) {
	var hits atomic.Int64
	srv, _ := startHTTP(t, headerServer(&hits), false)
	f := startRuleFront(t, conf.Frontend{Rules: []conf.Rule{
		{Src: []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}, Action: conf.ActionDeny, Status: 403},
	}}, srv, "")
	for _, pr := range protos {
		t.Run(pr.name, func(t *testing.T) {
			bad, good := newClient(t, "127.0.0.2", pr.h2), newClient(t, "127.0.0.3", pr.h2)
			before := hits.Load()
			resp, body := bad.do(t, "POST", "http://"+f.addr+"/admin", "", "some body")
			if resp.StatusCode != 403 || !strings.Contains(body, "403 Forbidden") {
				t.Fatalf("denied network: %d %q", resp.StatusCode, body)
			}
			resp, _ = bad.do(t, "GET", "http://"+f.addr+"/", "", "")
			if resp.StatusCode != 403 {
				t.Fatalf("denied network, second request: %d", resp.StatusCode)
			}
			if n := bad.dials.Load(); n != 1 {
				t.Fatalf("%d connections for two denied requests, want 1 (kept, as after a 404)", n)
			}
			if hits.Load() != before {
				t.Fatal("a denied request reached the server")
			}
			resp, body = good.do(t, "GET", "http://"+f.addr+"/admin", "", "")
			if resp.StatusCode != 200 || !strings.HasPrefix(body, "path=/admin") {
				t.Fatalf("other network: %d %q", resp.StatusCode, body)
			}
		})
	}
	if n := f.p.Policy.Counters.Denied.Load(); n != 4 {
		t.Fatalf("Denied %d, want 4", n)
	}
	// Counted and logged once the answer is out.
	testutil.WaitFor(t, "six access log lines", 5*time.Second, func() bool { return len(f.logs.terms()) == 6 })
	if n := f.p.Counters.Resp[4].Load(); n != 4 {
		t.Fatalf("4xx responses %d, want 4", n)
	}
	if got := strings.Count(f.logs.String(), "termination=denied"); got != 4 {
		t.Fatalf("%d access log lines with termination=denied, want 4:\n%s", got, f.logs)
	}
}

// TestRuleHeaderEdits: request headers set, added and removed as the
// server sees them, response headers as the client sees them, for every
// client protocol and server protocol; a client's own copies of a header
// set_header writes do not reach the server, and a value cannot split
// into two headers.
func TestRuleHeaderEdits(t *testing.T) {
	rules := []conf.Rule{
		{Action: conf.ActionSetHeader, Name: "X-Env", Value: "prod"},
		{Action: conf.ActionAddHeader, Name: "X-Client", Value: "{client_ip} via {frontend}"},
		{Action: conf.ActionDelHeader, Name: "X-Secret"},
		{PathPrefix: "/inject", Action: conf.ActionSetHeader, Name: "X-Inject", Value: "a\r\nX-Evil: 1\nb\x00c"},
		{Action: conf.ActionSetHeader, Name: "X-Frame-Options", Value: "DENY", Response: true},
		{Action: conf.ActionDelHeader, Name: "Server-Secret", Response: true},
		{Action: conf.ActionAddHeader, Name: "X-Request-Id", Value: "{request_id}", Response: true},
	}
	for _, sp := range []conf.Proto{"", "h2c"} {
		var hits atomic.Int64
		srv, _ := startHTTP(t, headerServer(&hits), sp == "h2c")
		f := startRuleFront(t, conf.Frontend{Rules: rules}, srv, sp)
		for _, pr := range protos {
			name := pr.name + "-to-http1"
			if sp == "h2c" {
				name = pr.name + "-to-h2c"
			}
			t.Run(name, func(t *testing.T) {
				c := newClient(t, "127.0.0.2", pr.h2)
				var ids []string
				for i, path := range []string{"/one", "/inject"} {
					resp, body := c.do(t, "GET", "http://"+f.addr+path, "", "",
						"X-Env", "from-client", "X-Env", "again", "x-env", "lower", "X-Secret", "pw", "X-Other", "o")
					if resp.StatusCode != 200 {
						t.Fatalf("status %d", resp.StatusCode)
					}
					h := seen(body)
					if !slices.Equal(h["X-Env"], []string{"prod"}) || !slices.Equal(h["X-Client"], []string{"127.0.0.2 via web"}) ||
						h["X-Secret"] != nil || !slices.Equal(h["X-Other"], []string{"o"}) {
						t.Fatalf("request %d: the server saw\n%s", i, body)
					}
					if path == "/inject" {
						if h["X-Evil"] != nil || len(h["X-Inject"]) != 1 || strings.ContainsAny(h["X-Inject"][0], "\r\n\x00") {
							t.Fatalf("a header value split into headers:\n%s", body)
						}
					} else if h["X-Inject"] != nil {
						t.Fatalf("a rule whose condition failed edited:\n%s", body)
					}
					rh := resp.Header
					if !slices.Equal(rh.Values("X-Frame-Options"), []string{"DENY"}) || rh.Get("Server-Secret") != "" ||
						rh.Get("X-Keep") != "kept" || len(rh.Values("X-Request-Id")) != 1 {
						t.Fatalf("request %d: the client saw %v", i, rh)
					}
					ids = append(ids, rh.Get("X-Request-Id"))
				}
				// {request_id}: the connection's id and the request's number
				// on it (HTTP/1) or its stream id (HTTP/2).
				conn, _, _ := strings.Cut(ids[0], "-")
				want := []string{conn + "-1", conn + "-2"}
				if pr.h2 {
					want[1] = conn + "-3"
				}
				if !regexp.MustCompile(`^c\d+$`).MatchString(conn) || !slices.Equal(ids, want) {
					t.Fatalf("request ids %q, want %q", ids, want)
				}
			})
		}
	}
}

// TestRuleTarpit: a tarpitted request is answered (403) after its hold,
// while other requests, from another connection or (HTTP/2) another
// stream of the same one, are served meanwhile; a client that leaves ends
// its hold.
func TestRuleTarpit(t *testing.T) {
	var hits atomic.Int64
	srv, _ := startHTTP(t, headerServer(&hits), false)
	f := startRuleFront(t, conf.Frontend{Rules: []conf.Rule{
		{PathPrefix: "/slow", Action: conf.ActionTarpit, Tarpit: 2 * time.Second, Status: 403},
		{PathPrefix: "/forever", Action: conf.ActionTarpit, Tarpit: time.Hour, Status: 403},
	}}, srv, "")
	for _, pr := range protos {
		t.Run(pr.name, func(t *testing.T) {
			slow, other := newClient(t, "127.0.0.2", pr.h2), newClient(t, "127.0.0.3", pr.h2)
			if pr.h2 {
				other = slow // another stream of the same connection
			}
			var mu sync.Mutex
			var order []string
			done := make(chan struct{})
			go func() {
				defer close(done)
				resp, err := slow.Get("http://" + f.addr + "/slow")
				if err != nil {
					t.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				mu.Lock()
				order = append(order, fmt.Sprint("tarpit ", resp.StatusCode))
				mu.Unlock()
			}()
			testutil.WaitFor(t, "the tarpit to hold", 5*time.Second, func() bool {
				return f.p.Policy.Counters.Tarpitted.Load() > 0 && f.p.Counters.Requests.Load() > 0
			})
			resp, _ := other.do(t, "GET", "http://"+f.addr+"/fast", "", "")
			mu.Lock()
			order = append(order, fmt.Sprint("other ", resp.StatusCode))
			mu.Unlock()
			<-done
			if !slices.Equal(order, []string{"other 200", "tarpit 403"}) {
				t.Fatalf("answers in order %q", order)
			}
			f.p.Policy.Counters.Tarpitted.Store(0)
			f.p.Counters.Requests.Store(0)
		})
	}
	testutil.WaitFor(t, "four access log lines", 5*time.Second, func() bool { return len(f.logs.terms()) == 4 })
	if got := strings.Count(f.logs.String(), "termination=tarpit"); got != 2 {
		t.Fatalf("%d tarpit lines in the access log, want 2:\n%s", got, f.logs)
	}

	// A client that leaves during the hold ends it: its line is logged
	// ("client") long before the hour.
	conn := testutil.Dial(t, f.addr)
	conn.Write([]byte("GET /forever HTTP/1.1\r\nHost: h\r\n\r\n"))
	testutil.WaitFor(t, "the tarpit to hold", 5*time.Second, func() bool { return f.p.Policy.Counters.Tarpitted.Load() > 0 })
	conn.Close()
	testutil.WaitFor(t, "the hold to end with the client", 10*time.Second, func() bool {
		return strings.Contains(f.logs.String(), "path=/forever") && strings.Contains(f.logs.String(), "termination=client")
	})
	if hits.Load() != 2 {
		t.Fatalf("the server saw %d requests, want the 2 untarpitted", hits.Load())
	}
}

// TestRuleRateLimit: a client over its request rate gets 429 while
// another client, at the same time, is served.
func TestRuleRateLimit(t *testing.T) {
	var hits atomic.Int64
	srv, _ := startHTTP(t, headerServer(&hits), false)
	for _, pr := range protos {
		t.Run(pr.name, func(t *testing.T) {
			f := startRuleFront(t, conf.Frontend{RateLimit: &conf.RateLimit{Requests: 3, Period: time.Hour,
				Action: conf.LimitDeny, TableSize: 100}}, srv, "")
			greedy, calm := newClient(t, "127.0.0.2", pr.h2), newClient(t, "127.0.0.3", pr.h2)
			var codes []int
			for range 5 {
				resp, body := greedy.do(t, "GET", "http://"+f.addr+"/", "", "")
				codes = append(codes, resp.StatusCode)
				if resp.StatusCode == 429 && !strings.Contains(body, "429 Too Many Requests") {
					t.Fatalf("429 page %q", body)
				}
			}
			if !slices.Equal(codes, []int{200, 200, 200, 429, 429}) {
				t.Fatalf("greedy client got %v", codes)
			}
			// Both at once: the greedy one stays refused, the calm one is
			// served.
			var wg sync.WaitGroup
			var greedyOK, calmOK, greedyN, calmN atomic.Int64
			for i := range 6 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					c, ok, n := greedy, &greedyOK, &greedyN
					if i%2 == 1 {
						c, ok, n = calm, &calmOK, &calmN
					}
					resp, err := c.Get("http://" + f.addr + "/")
					if err != nil {
						t.Error(err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					n.Add(1)
					if resp.StatusCode == 200 {
						ok.Add(1)
					}
				}()
			}
			wg.Wait()
			if greedyOK.Load() != 0 || calmOK.Load() != 3 || greedyN.Load() != 3 || calmN.Load() != 3 {
				t.Fatalf("at the same time: greedy %d/%d served, calm %d/%d", greedyOK.Load(), greedyN.Load(), calmOK.Load(), calmN.Load())
			}
			testutil.WaitFor(t, "the access log lines", 5*time.Second, func() bool { return len(f.logs.terms()) == 11 })
			if n := f.p.Policy.Counters.Limited.Load(); n != 5 {
				t.Fatalf("Limited %d, want 5", n)
			}
			if got := strings.Count(f.logs.String(), "termination=rate-limited"); got != 5 {
				t.Fatalf("%d rate-limited lines in the access log, want 5", got)
			}
			if !pr.h2 && greedy.dials.Load() > 3 {
				// 429 keeps the connection (the concurrent requests may
				// open a few more).
				t.Fatalf("%d connections", greedy.dials.Load())
			}
		})
	}
}

// TestRuleRateLimitTarpit: with action = "tarpit" a client over its rate
// is held, then answered 429.
func TestRuleRateLimitTarpit(t *testing.T) {
	var hits atomic.Int64
	srv, _ := startHTTP(t, headerServer(&hits), false)
	f := startRuleFront(t, conf.Frontend{RateLimit: &conf.RateLimit{Requests: 1, Period: time.Hour,
		Action: conf.LimitTarpit, Tarpit: 50 * time.Millisecond, TableSize: 100}}, srv, "")
	for _, pr := range protos {
		c := newClient(t, "127.0.0.2", pr.h2)
		want := 429
		if !pr.h2 {
			want = 200 // the first request of the client
		}
		if resp, _ := c.do(t, "GET", "http://"+f.addr+"/", "", ""); resp.StatusCode != want {
			t.Fatalf("%s: first: %d", pr.name, resp.StatusCode)
		}
		if resp, _ := c.do(t, "GET", "http://"+f.addr+"/", "", ""); resp.StatusCode != 429 {
			t.Fatalf("%s: over the rate: %d", pr.name, resp.StatusCode)
		}
	}
	testutil.WaitFor(t, "four access log lines", 5*time.Second, func() bool { return len(f.logs.terms()) == 4 })
	if got := f.logs.terms(); !slices.Equal(got, []string{"", "tarpit", "tarpit", "tarpit"}) {
		t.Fatalf("terminations %q", got)
	}
}
