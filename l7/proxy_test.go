package l7_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"

	"sluice/internal/testutil"
)

type pphdrKey struct{}

// startProxyHTTP runs h behind a listener that requires a PROXY header on
// every connection; the handler finds the header described in its request
// context (ppHeader). It counts the connections.
func startProxyHTTP(t *testing.T, h2c bool) (string, *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns atomic.Int64
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "%s xff=%s proto=%s\n", r.Context().Value(pphdrKey{}), r.Header.Get("X-Forwarded-For"), r.Proto)
		}),
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				conns.Add(1)
			}
		},
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			desc := "none"
			if pc, ok := c.(*proxyproto.Conn); ok {
				if h := pc.ProxyHeader(); h != nil {
					desc = describe(h)
				}
			}
			return context.WithValue(ctx, pphdrKey{}, desc)
		},
	}
	if h2c {
		srv.Protocols = new(http.Protocols)
		srv.Protocols.SetHTTP1(true)
		srv.Protocols.SetUnencryptedHTTP2(true)
	}
	go srv.Serve(&proxyproto.Listener{Listener: ln})
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String(), &conns
}

func describe(h *proxyproto.Header) string {
	var id, alpn, authority string
	tlvs, _ := h.TLVs()
	for _, t := range tlvs {
		switch t.Type {
		case proxyproto.PP2_TYPE_UNIQUE_ID:
			id = string(t.Value)
		case proxyproto.PP2_TYPE_ALPN:
			alpn = string(t.Value)
		case proxyproto.PP2_TYPE_AUTHORITY:
			authority = string(t.Value)
		}
	}
	src := "local"
	if h.Command.IsProxy() {
		src = h.SourceAddr.(*net.TCPAddr).IP.String()
	}
	return fmt.Sprintf("v=%d src=%s id=%s alpn=%s authority=%s", h.Version, src, id, alpn, authority)
}

// clientFrom is an HTTP/1.1 keep-alive client whose connections come from ip.
func clientFrom(ip string) *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: 1}}
}

func getBody(t *testing.T, c *http.Client, url string) string {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// TestSendProxyServerConnsStayWithTheirClient: a server connection that
// opened with one client's PROXY header serves that client connection
// only; keep-alive still reuses it for the same client connection.
func TestSendProxyServerConnsStayWithTheirClient(t *testing.T) {
	for _, v := range []string{"v1", "v2"} {
		t.Run(v, func(t *testing.T) {
			addr, conns := startProxyHTTP(t, false)
			_, front := testutil.Start(t, httpConfig(`default_backend = "app"`, fmt.Sprintf("send_proxy = %q", v), map[string][]string{"app": {addr}}))
			a, b := clientFrom("127.0.0.2"), clientFrom("127.0.0.3")
			defer a.CloseIdleConnections()
			defer b.CloseIdleConnections()
			for range 3 {
				if got := getBody(t, a, "http://"+front+"/"); !strings.HasPrefix(got, "v="+v[1:]+" src=127.0.0.2 ") || !strings.Contains(got, "xff=127.0.0.2 ") {
					t.Fatalf("client a: server saw %q", got)
				}
			}
			if n := conns.Load(); n != 1 {
				t.Fatalf("3 requests on one client connection used %d server connections, want 1", n)
			}
			if got := getBody(t, b, "http://"+front+"/"); !strings.HasPrefix(got, "v="+v[1:]+" src=127.0.0.3 ") {
				t.Fatalf("client b: server saw %q (a server connection of client a reused?)", got)
			}
			if n := conns.Load(); n != 2 {
				t.Fatalf("two client connections used %d server connections, want 2", n)
			}
			if got := getBody(t, a, "http://"+front+"/"); !strings.HasPrefix(got, "v="+v[1:]+" src=127.0.0.2 ") {
				t.Fatalf("client a again: server saw %q", got)
			}
			if v == "v2" {
				got := getBody(t, b, "http://"+front+"/")
				if strings.Contains(got, " id= ") {
					t.Fatalf("v2 header without a unique id: %q", got)
				}
			}
		})
	}
}

// TestSendProxyTLSCarriesALPNAndAuthority: behind a TLS frontend, the v2
// header names the protocol and server name the client negotiated, over
// HTTP/1.1 (lean path) and HTTP/2 (net/http side).
func TestSendProxyTLSCarriesALPNAndAuthority(t *testing.T) {
	addr, conns := startProxyHTTP(t, false)
	pki := newPKI(t)
	_, front := testutil.Start(t, h2Config(`default_backend = "app"`, pki.tlsFront(t), map[string]h2Backend{
		"app": {extra: `send_proxy = "v2"`, addrs: []string{addr}},
	}))
	for _, tc := range []struct {
		h2   bool
		alpn string
	}{{false, "http/1.1"}, {true, "h2"}} {
		t.Run(tc.alpn, func(t *testing.T) {
			c := tlsClient(pki.pool, "a.test", tc.h2)
			d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
			tr := c.Transport.(*http.Transport)
			tr.DialTLSContext = nil
			tr.DialContext = d.DialContext
			if !tc.h2 {
				tr.TLSClientConfig.NextProtos = []string{"http/1.1"}
			}
			defer c.CloseIdleConnections()
			before := conns.Load()
			for range 3 {
				got := getBody(t, c, "https://"+front+"/")
				want := "v=2 src=127.0.0.2 id="
				if !strings.HasPrefix(got, want) || !strings.Contains(got, " alpn="+tc.alpn+" authority=a.test ") {
					t.Fatalf("server saw %q, want %s… alpn=%s authority=a.test", got, want, tc.alpn)
				}
			}
			if n := conns.Load() - before; n != 1 {
				t.Fatalf("3 requests on one client connection used %d server connections, want 1", n)
			}
		})
	}
}

// TestSendProxyH2CBackend: the h2c transport sends the header too, per
// client connection.
func TestSendProxyH2CBackend(t *testing.T) {
	addr, conns := startProxyHTTP(t, true)
	_, front := testutil.Start(t, h2Config(`default_backend = "app"`, "", map[string]h2Backend{
		"app": {extra: "proto = \"h2c\"\nsend_proxy = \"v2\"", addrs: []string{addr}},
	}))
	a, b := clientFrom("127.0.0.2"), clientFrom("127.0.0.3")
	defer a.CloseIdleConnections()
	defer b.CloseIdleConnections()
	for range 2 {
		if got := getBody(t, a, "http://"+front+"/"); !strings.HasPrefix(got, "v=2 src=127.0.0.2 ") || !strings.Contains(got, "proto=HTTP/2.0") {
			t.Fatalf("client a: server saw %q", got)
		}
	}
	if got := getBody(t, b, "http://"+front+"/"); !strings.HasPrefix(got, "v=2 src=127.0.0.3 ") {
		t.Fatalf("client b: server saw %q", got)
	}
	if n := conns.Load(); n != 2 {
		t.Fatalf("%d server connections, want 2 (one per client connection)", n)
	}
}

// TestSendProxyWithoutPooling: with pooling off, every request gets a new
// server connection and each opens with the header.
func TestSendProxyWithoutPooling(t *testing.T) {
	addr, conns := startProxyHTTP(t, false)
	_, front := testutil.Start(t, httpConfig(`default_backend = "app"`, "send_proxy = \"v1\"\npool_max_idle = 0", map[string][]string{"app": {addr}}))
	c := testutil.Dial(t, front)
	r := bufio.NewReader(c)
	for range 2 {
		c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.HasPrefix(string(body), "v=1 src=127.0.0.1 ") {
			t.Fatalf("server saw %q", body)
		}
	}
	if n := conns.Load(); n != 2 {
		t.Fatalf("pool_max_idle = 0: %d server connections for 2 requests, want 2", n)
	}
}
