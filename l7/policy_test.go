package l7_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
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
}

// policyAnswer is what one path produced for one case: what reached the
// server (request line, headers sorted by name, body, with the
// frontend's scheme and port made placeholders) and what reached the
// client.
type policyAnswer struct {
	server, client string
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
	}
	plain, plainFront := testutil.Start(t, h2Config("h2c = true", routes, backends))
	secure, tlsFront := testutil.Start(t, h2Config("", routes+pki.tlsFront(t), backends))
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
		{desc: "404 no route", host: "nowhere.test", path: "/", status: 404,
			counter: func(c *l7.Counters) *atomic.Uint64 { return &c.NoRoute404 }},
		{desc: "503 no server", host: "app.test", path: "/down", status: 503,
			counter: func(c *l7.Counters) *atomic.Uint64 { return &c.NoServer503 }},
		{desc: "502 refused connect", host: "app.test", path: "/dead", status: 502,
			counter: func(c *l7.Counters) *atomic.Uint64 { return &c.BadGateway502 }},
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
		var cookie, stickyTo string
		for _, tc := range cases {
			t.Run(pa.name+"/"+tc.desc, func(t *testing.T) {
				var before uint64
				if tc.counter != nil {
					before = tc.counter(counters).Load()
				}
				class := &counters.Resp[tc.status/100]
				classBefore := class.Load()
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
				if err != nil {
					t.Fatal(err)
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil {
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
				answers[pi] = append(answers[pi], a)

				testutil.WaitFor(t, "the response counted", 5*time.Second, func() bool { return class.Load() == classBefore+1 })
				if tc.counter != nil {
					c := tc.counter(counters)
					testutil.WaitFor(t, tc.desc+" counted", 5*time.Second, func() bool { return c.Load() == before+1 })
				}
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
