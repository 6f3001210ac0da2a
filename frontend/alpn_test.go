package frontend_test

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"sluice/backend"
	"sluice/engine"
	"sluice/internal/testutil"
)

// alpn = ["h2", "http/1.1"] (issue 22): each server is spoken to in the
// HTTP version its handshake chose, as HAProxy's `alpn h2,http/1.1`.

// alpnServer serves "name proto body" over TLS; nextProtos is what it
// accepts by ALPN, in its order of preference (Go picks the first of its
// own list the client offers).
func alpnServer(t *testing.T, cert tls.Certificate, name string, nextProtos ...string) *httptest.Server {
	t.Helper()
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %s", name, r.Proto, b)
	}))
	for _, p := range nextProtos {
		if p == "h2" {
			s.EnableHTTP2 = true
		}
	}
	s.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: nextProtos}
	s.StartTLS()
	t.Cleanup(s.Close)
	return s
}

// alpnClients are an HTTP/1.1 and an HTTP/2 client of a TLS frontend
// whose certificate ca signed.
func alpnClients(ca *testCA) map[string]*http.Client {
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	h1 := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, NextProtos: []string{"http/1.1"}}}
	h2 := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, ForceAttemptHTTP2: true}
	return map[string]*http.Client{
		"HTTP/1.1": {Transport: h1, Timeout: 10 * time.Second},
		"HTTP/2.0": {Transport: h2, Timeout: 10 * time.Second},
	}
}

// alpnFront starts sluice with a TLS frontend to backend "be" of the
// servers (name = address), whose [backend.be.tls] alpn is alpn.
func alpnFront(t *testing.T, ca *testCA, alpn string, servers ...string) (*engine.Engine, string) {
	t.Helper()
	cert, key := writePair(t, ca.issue(t, time.Now().Add(time.Hour), "127.0.0.1"))
	var b strings.Builder
	fmt.Fprintf(&b, "[frontend.f]\nmode = \"http\"\nbind = [\"{{FRONT}}\"]\ndefault_backend = \"be\"\n")
	fmt.Fprintf(&b, "[[frontend.f.tls]]\ncert = %q\nkey = %q\n[backend.be]\nretries = 0\n", cert, key)
	for i := 0; i < len(servers); i += 2 {
		fmt.Fprintf(&b, "[[backend.be.server]]\nname = %q\naddress = %q\n", servers[i], servers[i+1])
	}
	fmt.Fprintf(&b, "[backend.be.tls]\nca_file = %q\nalpn = %s\n", ca.pem, alpn)
	return testutil.Start(t, b.String())
}

// call sends GET (body "") or POST body to the frontend and returns the
// status, the protocol the client spoke and the answer.
func call(t *testing.T, c *http.Client, url, body string) (int, string, string) {
	t.Helper()
	var resp *http.Response
	var err error
	if body == "" {
		resp, err = c.Get(url)
	} else {
		resp, err = c.Post(url, "text/plain", strings.NewReader(body))
	}
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Proto, string(b)
}

func noFailures(t *testing.T, eng *engine.Engine, names ...string) {
	t.Helper()
	for _, n := range names {
		s := beServer(t, eng, "be", n)
		if e := s.Counters.ConnErrors.Load(); e != 0 {
			t.Errorf("server %s: %d connect failures counted", n, e)
		}
		for r := 0; r < backend.NumTLSReasons; r++ {
			if e := tlsErrs(s, r); e != 0 {
				t.Errorf("server %s: %d TLS errors (%s)", n, e, backend.TLSReasonNames[r])
			}
		}
	}
}

// TestTLSBackendALPNBoth: alpn = ["h2", "http/1.1"] with an HTTP/2 server
// and an HTTP/1.1-only one: every request of HTTP/1.1 and HTTP/2 clients
// is answered 200 with its body intact (the first request to the HTTP/1.1
// server moves from the HTTP/2 path when its handshake chooses
// http/1.1), each server sees its own version, and nothing is counted
// as a failure. Before: every request to the HTTP/1.1 server was a 503.
func TestTLSBackendALPNBoth(t *testing.T) {
	ca := newCA(t, "ca")
	for proto, c := range alpnClients(ca) {
		t.Run(strings.ReplaceAll(proto, "/", ""), func(t *testing.T) {
			h2 := alpnServer(t, ca.issue(t, time.Now().Add(time.Hour), "127.0.0.1"), "h2srv", "h2", "http/1.1")
			h1 := alpnServer(t, ca.issue(t, time.Now().Add(time.Hour), "127.0.0.1"), "h1srv", "http/1.1")
			eng, front := alpnFront(t, ca, `["h2", "http/1.1"]`, "h2srv", h2.Listener.Addr().String(), "h1srv", h1.Listener.Addr().String())
			seen := map[string]int{}
			for i := 0; i < 12; i++ {
				body := ""
				if i%3 == 2 {
					body = fmt.Sprintf("payload-%d", i)
				}
				status, got, answer := call(t, c, "https://"+front+"/", body)
				if status != 200 || got != proto {
					t.Fatalf("request %d: status %d over %s: %q", i, status, got, answer)
				}
				switch answer {
				case "h2srv HTTP/2.0 " + body, "h1srv HTTP/1.1 " + body:
					seen[answer[:5]]++
				default:
					t.Fatalf("request %d (body %q): %q", i, body, answer)
				}
			}
			if seen["h2srv"] == 0 || seen["h1srv"] == 0 {
				t.Errorf("answers by server: %v; want both", seen)
			}
			noFailures(t, eng, "h2srv", "h1srv")
			if v := beServer(t, eng, "be", "h1srv").HTTPVersion(); v != backend.HTTP1 {
				t.Errorf("h1srv recorded as version %d", v)
			}
			if v := beServer(t, eng, "be", "h2srv").HTTPVersion(); v != backend.HTTP2 {
				t.Errorf("h2srv recorded as version %d", v)
			}
		})
	}
}

// TestTLSBackendALPNOrder: alpn = ["http/1.1", "h2"] is offered in that
// order, but the server chooses (RFC 7301), and Go's (like nginx and
// HAProxy) chooses by its own preference: one preferring h2 is spoken to
// in HTTP/2 (the request moves from the HTTP/1 path), one preferring
// http/1.1 in HTTP/1.1.
func TestTLSBackendALPNOrder(t *testing.T) {
	ca := newCA(t, "ca")
	h2 := alpnServer(t, ca.issue(t, time.Now().Add(time.Hour), "127.0.0.1"), "h2pref", "h2", "http/1.1")
	h1 := alpnServer(t, ca.issue(t, time.Now().Add(time.Hour), "127.0.0.1"), "h1pref", "http/1.1", "h2")
	eng, front := alpnFront(t, ca, `["http/1.1", "h2"]`, "h2pref", h2.Listener.Addr().String(), "h1pref", h1.Listener.Addr().String())
	seen := map[string]int{}
	for _, c := range alpnClients(ca) {
		for i := 0; i < 6; i++ {
			status, _, answer := call(t, c, "https://"+front+"/", "x")
			switch {
			case status == 200 && (answer == "h2pref HTTP/2.0 x" || answer == "h1pref HTTP/1.1 x"):
				seen[answer[:6]]++
			default:
				t.Fatalf("request %d: status %d: %q", i, status, answer)
			}
		}
	}
	if seen["h2pref"] == 0 || seen["h1pref"] == 0 {
		t.Errorf("answers by server: %v; want both", seen)
	}
	noFailures(t, eng, "h2pref", "h1pref")
}

// TestTLSBackendALPNH2Only: alpn = ["h2"] alone still requires HTTP/2: an
// HTTP/1.1-only server fails the connect, counted as a handshake error.
func TestTLSBackendALPNH2Only(t *testing.T) {
	ca := newCA(t, "ca")
	h1 := alpnServer(t, ca.issue(t, time.Now().Add(time.Hour), "127.0.0.1"), "h1srv", "http/1.1")
	eng, front := alpnFront(t, ca, `["h2"]`, "h1srv", h1.Listener.Addr().String())
	for _, c := range alpnClients(ca) {
		if status, _, answer := call(t, c, "https://"+front+"/", ""); status != 503 {
			t.Fatalf("status %d: %q; want 503 (a failed connect)", status, answer)
		}
	}
	s := beServer(t, eng, "be", "h1srv")
	if s.Counters.ConnErrors.Load() == 0 || tlsErrs(s, backend.TLSHandshake) == 0 {
		t.Errorf("connect failures %d, handshake errors %d: want both counted", s.Counters.ConnErrors.Load(), tlsErrs(s, backend.TLSHandshake))
	}
	if v := s.HTTPVersion(); v != backend.HTTPUnknown {
		t.Errorf("version %d recorded for an h2-only backend", v)
	}
}
