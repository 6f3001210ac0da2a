package l7_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"sluice/engine"
	"sluice/internal/testutil"
	"sluice/l7"
)

// policyCase is one request of TestPolicySameOnEveryPath.
type policyCase struct {
	desc       string
	host, path string
	hdr        [][2]string // sent in this order; a name may repeat
	// useCookie sends the sticky cookie an earlier case was given.
	useCookie bool
	status    int
	// backend is the name of the recorder that must get the request; ""
	// when none may.
	backend string
	// fwd is what the server must see in the forwarding headers, with
	// {proto} and {port} for the frontend's scheme and port.
	fwd map[string][]string
	// setCookie: the answer must bind the client with a sticky cookie.
	setCookie bool
	// counter is the refusal counter the answer must add one to.
	counter func(c *l7.Counters) *atomic.Uint64
	// term is the access log's termination; retries its retries.
	term    string
	retries int
	// truncated: the server closes mid-body, the client's read fails.
	truncated bool
}

// policyAnswer is what one path produced for one case: what reached the
// server (request line, headers sorted by name, body, with the
// frontend's scheme and port made placeholders) and what reached the
// client.
type policyAnswer struct {
	server, client string
	log            string // access log keys in order, and the values that do not depend on the protocol
	counters       string // what the request added to the counters (not bytes)
}

// TestPolicySameOnEveryPath runs every case of the HTTP policy (routing,
// forwarding headers, sticky cookie, errors and their counters) through
// HTTP/1.1 (sluice's own path), h2c with prior knowledge and HTTP/2 over
// TLS (the net/http path), and expects the same request at the server and
// the same answer at the client on all three.
func TestPolicySameOnEveryPath(t *testing.T) {
	pki := newPKI(t)
	recs := map[string]*recorder{}
	for _, n := range []string{"app", "api", "static", "blue", "sticky1", "sticky2"} {
		recs[n] = startRecorder(t, nil)
	}
	routes := `
[[frontend.web.route]]
host = "api.test"
backend = "api"
[[frontend.web.route]]
path_prefix = "/static/"
backend = "static"
[[frontend.web.route]]
header = { "X-Tenant" = "blue" }
backend = "blue"
[[frontend.web.route]]
path_prefix = "/sticky"
backend = "sticky"
[[frontend.web.route]]
path_prefix = "/down"
backend = "down"
[[frontend.web.route]]
path_prefix = "/dead"
backend = "dead"
[[frontend.web.route]]
path_prefix = "/retry"
backend = "retry"
[[frontend.web.route]]
path_prefix = "/slow"
backend = "slow"
[[frontend.web.route]]
path_prefix = "/cut"
backend = "cut"
[[frontend.web.route]]
host = "app.test"
backend = "app"
`
	backends := map[string]h2Backend{
		"app":    {addrs: []string{recs["app"].addr}},
		"api":    {addrs: []string{recs["api"].addr}},
		"static": {addrs: []string{recs["static"].addr}},
		"blue":   {addrs: []string{recs["blue"].addr}},
		"sticky": {extra: "balance = \"roundrobin\"\nsticky = \"cookie\"\nsticky_cookie = \"SRV\"", addrs: []string{recs["sticky1"].addr, recs["sticky2"].addr}},
		"down":   {addrs: []string{recs["app"].addr}},
		"dead":   {extra: "retries = 0", addrs: []string{testutil.ClosedAddr(t)}},
		"retry":  {extra: "retries = 2\nbalance = \"roundrobin\"", addrs: []string{testutil.ClosedAddr(t), testutil.ClosedAddr(t), testutil.ClosedAddr(t)}},
		// Reads the request and never answers.
		"slow": {extra: "timeout_server = \"300ms\"", addrs: []string{rawServer(t, func(c net.Conn) { io.Copy(io.Discard, c) })}},
		// Sends a head and part of the body, then closes.
		"cut": {addrs: []string{rawServer(t, func(c net.Conn) {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\nhello")
		})}},
	}
	plainLog, tlsLog := t.TempDir()+"/plain.log", t.TempDir()+"/tls.log"
	logKeys := func(file string) string { return fmt.Sprintf("access_log = true\naccess_log_file = %q\n", file) }
	plain, plainFront := testutil.Start(t, h2Config("h2c = true\n"+logKeys(plainLog), routes, backends))
	secure, tlsFront := testutil.Start(t, h2Config(logKeys(tlsLog), routes+pki.tlsFront(t), backends))
	for _, eng := range []*engine.Engine{plain, secure} {
		eng.Backends["down"].Servers()[0].SetUp(false)
	}

	fwd := func(xff, fwded string) map[string][]string {
		return map[string][]string{
			"X-Forwarded-For":   {xff},
			"X-Forwarded-Proto": {"{proto}"},
			"X-Forwarded-Port":  {"{port}"},
			"Forwarded":         {fwded},
		}
	}
	plainFwd := fwd("127.0.0.1", `for=127.0.0.1;proto={proto};host="app.test"`)
	cases := []policyCase{
		{desc: "route by host", host: "api.test", path: "/", status: 200, backend: "api"},
		{desc: "route by path", host: "app.test", path: "/static/a.js?v=1", status: 200, backend: "static"},
		{desc: "route by header", host: "app.test", path: "/h", hdr: [][2]string{{"X-Tenant", "blue"}}, status: 200, backend: "blue"},
		{desc: "header value must match", host: "app.test", path: "/h", hdr: [][2]string{{"X-Tenant", "red"}}, status: 200, backend: "app"},
		{desc: "forwarding headers, none incoming", host: "app.test", path: "/f", status: 200, backend: "app", fwd: plainFwd},
		{desc: "forwarding headers appended to incoming ones", host: "app.test", path: "/f", status: 200, backend: "app",
			hdr: [][2]string{
				{"X-Forwarded-For", "10.0.0.1"}, {"X-Forwarded-For", "10.0.0.2"},
				{"Forwarded", "for=10.0.0.1"}, {"X-Forwarded-Proto", "gopher"}, {"X-Forwarded-Port", "1"},
			},
			fwd: fwd("10.0.0.1, 10.0.0.2, 127.0.0.1", `for=10.0.0.1, for=127.0.0.1;proto={proto};host="app.test"`)},
		{desc: "sticky cookie set", host: "app.test", path: "/sticky", status: 200, backend: "sticky*", setCookie: true},
		{desc: "sticky cookie honoured", host: "app.test", path: "/sticky", useCookie: true, status: 200, backend: "sticky="},
		{desc: "sticky cookie honoured again", host: "app.test", path: "/sticky", useCookie: true, status: 200, backend: "sticky="},
		{desc: "404 no route", host: "nowhere.test", path: "/", status: 404, term: "no-route",
			counter: func(c *l7.Counters) *atomic.Uint64 { return &c.NoRoute404 }},
		{desc: "503 no server", host: "app.test", path: "/down", status: 503, term: "no-server",
			counter: func(c *l7.Counters) *atomic.Uint64 { return &c.Unavailable503 }},
		{desc: "503 refused connect", host: "app.test", path: "/dead", status: 503, term: "connect",
			counter: func(c *l7.Counters) *atomic.Uint64 { return &c.Unavailable503 }},
		{desc: "503 refused connect after retries", host: "app.test", path: "/retry", status: 503, term: "connect", retries: 2,
			counter: func(c *l7.Counters) *atomic.Uint64 { return &c.Unavailable503 }},
		{desc: "504 server timeout", host: "app.test", path: "/slow", status: 504, term: "server-timeout",
			counter: func(c *l7.Counters) *atomic.Uint64 { return &c.GatewayTime504 }},
		{desc: "server closes mid-response", host: "app.test", path: "/cut", status: 200, term: "body", truncated: true},
	}

	paths := []struct {
		name, url, proto string
		eng              *engine.Engine
		client           *http.Client
	}{
		{"HTTP/1.1", "http://" + plainFront, "HTTP/1.1", plain, &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			DisableCompression: true,
			TLSNextProto:       map[string]func(string, *tls.Conn) http.RoundTripper{},
		}}},
		{"h2c", "http://" + plainFront, "HTTP/2.0", plain, &http.Client{Timeout: 10 * time.Second, Transport: &http2.Transport{
			AllowHTTP:          true,
			DisableCompression: true,
			DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, network, addr)
			},
		}}},
		{"HTTP/2 over TLS", "https://" + tlsFront, "HTTP/2.0", secure, &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			DisableCompression: true,
			ForceAttemptHTTP2:  true,
			TLSClientConfig:    &tls.Config{RootCAs: pki.pool, ServerName: "a.test"},
		}}},
	}

	for _, pa := range paths {
		// Before the engines stop (cleanups run last first): an idle
		// keep-alive connection would hold their drain.
		t.Cleanup(pa.client.CloseIdleConnections)
	}
	answers := make([][]policyAnswer, len(paths))
	for pi, pa := range paths {
		_, port, _ := net.SplitHostPort(strings.TrimPrefix(strings.TrimPrefix(pa.url, "http://"), "https://"))
		proto := "http"
		if strings.HasPrefix(pa.url, "https") {
			proto = "https"
		}
		placeholders := strings.NewReplacer("{proto}", proto, "{port}", port)
		counters := &pa.eng.Front.Frontends[0].HTTP().Counters
		logFile := plainLog
		if pa.eng == secure {
			logFile = tlsLog
		}
		var cookie, stickyTo string
		for _, tc := range cases {
			t.Run(pa.name+"/"+tc.desc, func(t *testing.T) {
				var before uint64
				if tc.counter != nil {
					before = tc.counter(counters).Load()
				}
				class := &counters.Resp[tc.status/100]
				classBefore := class.Load()
				lines := logLines(logFile)
				snap := snapCounters(pa.eng)
				req, _ := http.NewRequest("GET", pa.url+tc.path, nil)
				req.Host = tc.host
				req.Header.Set("User-Agent", "policy-test")
				for _, h := range tc.hdr {
					req.Header.Add(h[0], h[1])
				}
				if tc.useCookie {
					req.Header.Set("Cookie", "other=1; SRV="+cookie)
				}
				resp, err := pa.client.Do(req)
				var body []byte
				if err == nil {
					body, err = io.ReadAll(resp.Body)
					resp.Body.Close()
				}
				if tc.truncated {
					// HTTP/1 has sent the head when the server breaks off;
					// HTTP/2 may still hold it and resets the stream: either
					// way the client must see a broken response.
					if err == nil {
						t.Fatalf("read the whole body %q of a response the server cut", body)
					}
					resp = &http.Response{StatusCode: tc.status, Proto: pa.proto, Header: http.Header{}}
					body = nil
				} else if err != nil {
					t.Fatal(err)
				}
				if resp.Proto != pa.proto {
					t.Fatalf("client spoke %s, want %s", resp.Proto, pa.proto)
				}
				if resp.StatusCode != tc.status {
					t.Fatalf("status %d, want %d (%s)", resp.StatusCode, tc.status, body)
				}
				setCookie := resp.Header.Values("Set-Cookie")
				if tc.setCookie {
					v, ok := strings.CutPrefix(strings.Join(setCookie, ","), "SRV=")
					id, attrs, _ := strings.Cut(v, ";")
					if !ok || id == "" || strings.Contains(id, "127.0.0.1") || attrs != " Path=/; HttpOnly" {
						t.Fatalf("Set-Cookie %q, want one SRV cookie with an opaque id", setCookie)
					}
					cookie = id
				} else if len(setCookie) > 0 {
					t.Fatalf("unexpected Set-Cookie %q", setCookie)
				}

				// Exactly the expected server got exactly this request.
				var got *recReq
				var gotBy string
				for name, rec := range recs {
					for _, r := range rec.take() {
						if got != nil {
							t.Fatalf("a second request reached %s: %q", name, r.raw)
						}
						got, gotBy = &r, name
					}
				}
				switch want := tc.backend; {
				case want == "":
					if got != nil {
						t.Fatalf("request reached %s: %q", gotBy, got.raw)
					}
				case got == nil:
					t.Fatalf("request reached no server, want %s", want)
				case want == "sticky*":
					if !strings.HasPrefix(gotBy, "sticky") {
						t.Fatalf("request reached %s, want a sticky server", gotBy)
					}
					stickyTo = gotBy
				case want == "sticky=":
					if gotBy != stickyTo {
						t.Fatalf("request with the cookie reached %s, not %s", gotBy, stickyTo)
					}
				case gotBy != want:
					t.Fatalf("request reached %s, want %s", gotBy, want)
				}

				var a policyAnswer
				if got != nil {
					if got.bad != "" || !got.complete {
						t.Fatalf("server read a bad request (%s): %q", got.bad, got.raw)
					}
					for name, vals := range tc.fwd {
						want := make([]string, len(vals))
						for i, v := range vals {
							want[i] = placeholders.Replace(v)
						}
						if g := got.get(name); !slices.Equal(g, want) {
							t.Errorf("%s = %q, want %q", name, g, want)
						}
					}
					a.server = serverView(got, proto, port, cookie)
				}
				a.client = fmt.Sprintf("%d %s\nContent-Type: %s\nCache-Control: %s\n\n%s", resp.StatusCode, http.StatusText(resp.StatusCode),
					resp.Header.Get("Content-Type"), resp.Header.Get("Cache-Control"), body)

				testutil.WaitFor(t, "the response counted", 5*time.Second, func() bool { return class.Load() == classBefore+1 })
				if tc.counter != nil {
					c := tc.counter(counters)
					testutil.WaitFor(t, tc.desc+" counted", 5*time.Second, func() bool { return c.Load() == before+1 })
				}

				// One access log line, with the same fields in the same
				// order whichever the protocol.
				var line []string
				testutil.WaitFor(t, "the access log line", 5*time.Second, func() bool {
					l := logLines(logFile)
					if len(l) > len(lines) {
						line = l[len(l)-1]
					}
					return len(l) > len(lines)
				})
				if l := logLines(logFile); len(l) != len(lines)+1 {
					t.Fatalf("%d access log lines for one request", len(l)-len(lines))
				}
				f := logFields(line)
				if f["proto"] != pa.proto || f["status"] != fmt.Sprint(tc.status) || f["termination"] != tc.term || f["retries"] != fmt.Sprint(tc.retries) {
					t.Errorf("access log %q: want proto %s, status %d, termination %q, retries %d", line, pa.proto, tc.status, tc.term, tc.retries)
				}
				var keys []string
				for _, kv := range line {
					k, v, _ := strings.Cut(kv, "=")
					keys = append(keys, k)
					switch k {
					case "time", "client", "id", "proto", "bytes", "t_head_ms", "t_connect_ms", "t_response_ms", "t_total_ms":
						// per connection, per protocol or timing
					case "server":
						// Which one is the balancer's choice; whether one is named is policy.
						if v != `""` {
							kv = "server=(named)"
						}
						a.log += kv + " "
					default:
						a.log += kv + " "
					}
				}
				a.log = strings.Join(keys, " ") + "\n" + a.log
				// The counters after the log line: both paths count first.
				a.counters = snapCounters(pa.eng).diff(snap)
				answers[pi] = append(answers[pi], a)
			})
		}
	}

	// The same bytes at the server and the same answer at the client,
	// whichever way the client came.
	for pi := 1; pi < len(paths); pi++ {
		if len(answers[pi]) != len(answers[0]) {
			t.Fatalf("%s answered %d cases, %s %d", paths[pi].name, len(answers[pi]), paths[0].name, len(answers[0]))
		}
		for ci := range answers[0] {
			a, b := answers[0][ci], answers[pi][ci]
			if a.server != b.server {
				t.Errorf("%s: the server saw from %s:\n%s\nand from %s:\n%s", cases[ci].desc, paths[0].name, a.server, paths[pi].name, b.server)
			}
			if a.client != b.client {
				t.Errorf("%s: the client got through %s:\n%s\nand through %s:\n%s", cases[ci].desc, paths[0].name, a.client, paths[pi].name, b.client)
			}
			if a.log != b.log {
				t.Errorf("%s: access log through %s:\n%s\nand through %s:\n%s", cases[ci].desc, paths[0].name, a.log, paths[pi].name, b.log)
			}
			if a.counters != b.counters {
				t.Errorf("%s: counters through %s: %s; through %s: %s", cases[ci].desc, paths[0].name, a.counters, paths[pi].name, b.counters)
			}
		}
	}
}

// serverView is what the server read, comparable across paths: request
// line, headers sorted by name (the order of a name's values kept), body;
// the frontend's scheme and port and the sticky cookie (each path was
// given its own) are placeholders.
func serverView(r *recReq, proto, port, cookie string) string {
	h := slices.Clone(r.header)
	slices.SortStableFunc(h, func(a, b [2]string) int { return strings.Compare(strings.ToLower(a[0]), strings.ToLower(b[0])) })
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s\n", r.method, r.target)
	for _, kv := range h {
		v := kv[1]
		switch strings.ToLower(kv[0]) {
		case "x-forwarded-proto":
			v = strings.ReplaceAll(v, proto, "{proto}")
		case "x-forwarded-port":
			v = strings.ReplaceAll(v, port, "{port}")
		case "cookie":
			v = strings.ReplaceAll(v, "SRV="+cookie, "SRV={cookie}")
		case "forwarded":
			v = strings.ReplaceAll(v, "proto="+proto, "proto={proto}")
		}
		fmt.Fprintf(&b, "%s: %s\n", strings.ToLower(kv[0]), v)
	}
	fmt.Fprintf(&b, "\n%s", r.body)
	return b.String()
}

// rawServer accepts connections on loopback and, once a request head has
// arrived on one, hands it to serve, then closes it.
func rawServer(t *testing.T, serve func(c net.Conn)) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns sync.WaitGroup
	var mu sync.Mutex
	var open []net.Conn
	closed := false
	t.Cleanup(func() {
		// closed, under mu, orders every conns.Add before the Wait: a
		// connection accepted as the listener closes is closed unserved.
		mu.Lock()
		closed = true
		for _, c := range open {
			c.Close()
		}
		mu.Unlock()
		ln.Close()
		conns.Wait()
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			if closed {
				mu.Unlock()
				c.Close()
				return
			}
			open = append(open, c)
			conns.Add(1)
			mu.Unlock()
			go func() {
				defer conns.Done()
				defer c.Close()
				var head []byte
				buf := make([]byte, 4096)
				for !strings.Contains(string(head), "\r\n\r\n") {
					n, err := c.Read(buf)
					if err != nil {
						return
					}
					head = append(head, buf[:n]...)
				}
				serve(c)
			}()
		}
	}()
	return ln.Addr().String()
}

// logLines returns the lines of an access log file, each split into its
// key=value pairs (text format; quoted values kept whole).
func logLines(file string) [][]string {
	b, _ := os.ReadFile(file)
	var out [][]string
	for l := range strings.Lines(string(b)) {
		var kvs []string
		var cur strings.Builder
		quoted := false
		for _, r := range strings.TrimSpace(l) {
			switch {
			case r == '"':
				quoted = !quoted
			case r == ' ' && !quoted:
				kvs = append(kvs, cur.String())
				cur.Reset()
				continue
			}
			cur.WriteRune(r)
		}
		out = append(out, append(kvs, cur.String()))
	}
	return out
}

func logFields(line []string) map[string]string {
	m := map[string]string{}
	for _, kv := range line {
		k, v, _ := strings.Cut(kv, "=")
		if u, err := strconv.Unquote(v); err == nil {
			v = u
		}
		m[k] = v
	}
	return m
}

// counterSnap is every counter of an engine's HTTP frontend, its backends
// and their servers, bytes left out (their framing differs by protocol),
// and the HTTP/2 fast path's count (how, not what, it served).
type counterSnap map[string]uint64

func snapCounters(eng *engine.Engine) counterSnap {
	s := counterSnap{}
	add := func(prefix string, v reflect.Value) {
		for i := range v.NumField() {
			f := v.Field(i)
			name := prefix + v.Type().Field(i).Name
			if fn := v.Type().Field(i).Name; strings.HasPrefix(fn, "Bytes") || fn == "H2Fast" {
				continue
			}
			switch x := f.Addr().Interface().(type) {
			case *atomic.Uint64:
				s[name] += x.Load()
			case *[6]atomic.Uint64:
				for j := range x {
					s[fmt.Sprintf("%s%dxx", name, j)] += x[j].Load()
				}
			}
		}
	}
	add("", reflect.ValueOf(&eng.Front.Frontends[0].HTTP().Counters).Elem())
	for name, be := range eng.Backends {
		add("backend."+name+".", reflect.ValueOf(&be.Counters).Elem())
		for _, srv := range be.Servers() {
			// Summed over the servers of a backend: which one a retry
			// lands on is the balancer's business.
			add("backend."+name+".server.", reflect.ValueOf(&srv.Counters).Elem())
		}
	}
	return s
}

// diff lists the counters that moved since before, sorted.
func (s counterSnap) diff(before counterSnap) string {
	var out []string
	for k, v := range s {
		if d := v - before[k]; d != 0 {
			out = append(out, fmt.Sprintf("%s+%d", k, d))
		}
	}
	slices.Sort(out)
	return strings.Join(out, " ")
}

// An HTTP/1 client of an h2c backend whose request body was left unread by
// a failed connect gets the 503 with "Connection: close": the connection
// closes after it.
func TestH2CBackendFailureSaysClose(t *testing.T) {
	_, front := testutil.Start(t, h2Config("default_backend = \"dead\"", "",
		map[string]h2Backend{"dead": {extra: "retries = 0\nproto = \"h2c\"", addrs: []string{testutil.ClosedAddr(t)}}}))
	c := testutil.Dial(t, front)
	io.WriteString(c, "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 || !resp.Close {
		t.Fatalf("status %d, Connection %q: want 503 with Connection: close", resp.StatusCode, resp.Header.Get("Connection"))
	}
}
