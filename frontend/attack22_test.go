package frontend_test

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"sluice/backend"
	"sluice/internal/testutil"
)

// TestTLSBackendClientCertRefusedAfterHandshake: under TLS 1.3 a server
// checks sluice's client certificate after sluice's side of the handshake
// is over, so its refusal (an alert) arrives on the first read, not from
// the handshake. It was a bare 502/503 with nothing logged or counted as
// TLS; it is counted on the server as a TLS error (handshake), for
// HTTP/1.1 and HTTP/2 servers alike.
func TestTLSBackendClientCertRefusedAfterHandshake(t *testing.T) {
	ca, clients := newCA(t, "ca"), newCA(t, "clients")
	pool := x509.NewCertPool()
	pool.AddCert(clients.cert)
	mtls := func(h2 bool) *httptest.Server {
		s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
		s.EnableHTTP2 = h2
		s.TLS = &tls.Config{Certificates: []tls.Certificate{ca.issue(t, time.Now().Add(time.Hour), "127.0.0.1")},
			ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool, MinVersion: tls.VersionTLS13}
		s.StartTLS()
		t.Cleanup(s.Close)
		return s
	}
	h1, h2 := mtls(false), mtls(true)
	eng, front := testutil.Start(t, fmt.Sprintf(`
[frontend.f]
mode = "http"
bind = ["{{FRONT}}"]
default_backend = "one"
[[frontend.f.route]]
path_prefix = "/two"
backend = "two"
[backend.one]
[[backend.one.server]]
name = "h1"
address = %q
[backend.one.tls]
ca_file = %q
[backend.two]
[[backend.two.server]]
name = "h2"
address = %q
[backend.two.tls]
ca_file = %q
alpn = ["h2"]
`, h1.Listener.Addr(), ca.pem, h2.Listener.Addr(), ca.pem))
	c := &http.Client{Timeout: 10 * time.Second}
	for _, tc := range []struct{ path, be, srv string }{{"/one", "one", "h1"}, {"/two", "two", "h2"}} {
		resp, err := c.Get("http://" + front + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 502 && resp.StatusCode != 503 {
			t.Errorf("%s: status %d, want 502 or 503", tc.path, resp.StatusCode)
		}
		if got := tlsErrs(beServer(t, eng, tc.be, tc.srv), backend.TLSHandshake); got == 0 {
			t.Errorf("%s: the server's refusal of the client certificate is not counted as a TLS error", tc.path)
		}
	}
}

// TestTLSBackendALPNRefusedIsHandshake: an HTTP/1.1-only server refuses
// the handshake of an h2 backend with a no_application_protocol alert:
// counted as "handshake" (an alert), not "other" (timeouts, resets).
func TestTLSBackendALPNRefusedIsHandshake(t *testing.T) {
	ca := newCA(t, "ca")
	h1 := httpsServer(t, ca.issue(t, time.Now().Add(time.Hour), "127.0.0.1"), false, nil)
	eng, front := testutil.Start(t, fmt.Sprintf(`
[frontend.f]
mode = "http"
bind = ["{{FRONT}}"]
default_backend = "one"
[backend.one]
[[backend.one.server]]
name = "h1"
address = %q
[backend.one.tls]
ca_file = %q
alpn = ["h2"]
`, h1.Listener.Addr(), ca.pem))
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + front + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	s := beServer(t, eng, "one", "h1")
	if got, other := tlsErrs(s, backend.TLSHandshake), tlsErrs(s, backend.TLSOther); got == 0 || other != 0 {
		t.Errorf("status %d; TLS errors handshake %d, other %d: want the alert under handshake", resp.StatusCode, got, other)
	}
}
