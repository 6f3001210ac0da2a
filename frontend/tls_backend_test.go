package frontend_test

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"

	"sluice/backend"
	"sluice/engine"
	"sluice/internal/testutil"
)

// TLS to servers ([backend.NAME.tls], issue 22): real TLS servers on
// 127.0.0.1 with certificates made here by a test CA.

// testCA is a certificate authority made for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  string // path of its certificate
}

func newCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	path := filepath.Join(t.TempDir(), name+".pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, pem: path}
}

// issue makes a certificate for the names (IP addresses go in as IP SANs),
// valid until notAfter, for servers and clients.
func (ca *testCA) issue(t *testing.T, notAfter time.Time, names ...string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: names[0]},
		NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: notAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// writePair writes c as PEM files and returns their paths.
func writePair(t *testing.T, c tls.Certificate) (cert, key string) {
	t.Helper()
	dir := t.TempDir()
	kder, err := x509.MarshalECPrivateKey(c.PrivateKey.(*ecdsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	cert, key = filepath.Join(dir, "c.pem"), filepath.Join(dir, "c.key")
	os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]}), 0o600)
	os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	return cert, key
}

// tlsServer is a tcp server speaking TLS: it answers each connection with
// its name and a newline, then echoes.
type tlsServer struct {
	addr    string
	proxy   bool // reads a PROXY header before the handshake
	mu      sync.Mutex
	states  []tls.ConnectionState
	headers []*proxyproto.Header
	handErr []error
}

func startTLSServer(t *testing.T, name string, cfg *tls.Config, proxy bool) *tlsServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &tlsServer{addr: ln.Addr().String(), proxy: proxy}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				var raw net.Conn = c
				var hdr *proxyproto.Header
				br := bufio.NewReader(c)
				if s.proxy {
					// The header must come in clear, before the ClientHello.
					if hdr, err = proxyproto.Read(br); err != nil {
						s.mu.Lock()
						s.handErr = append(s.handErr, fmt.Errorf("proxy header: %w", err))
						s.mu.Unlock()
						return
					}
					raw = &bufConn{Conn: c, r: br}
				}
				tc := tls.Server(raw, cfg)
				err := tc.Handshake()
				s.mu.Lock()
				if err != nil {
					s.handErr = append(s.handErr, err)
				} else {
					s.states = append(s.states, tc.ConnectionState())
					s.headers = append(s.headers, hdr)
				}
				s.mu.Unlock()
				if err != nil {
					return
				}
				io.WriteString(tc, name+"\n")
				io.Copy(tc, tc)
			}()
		}
	}()
	return s
}

func (s *tlsServer) handshakes() ([]tls.ConnectionState, []*proxyproto.Header, []error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]tls.ConnectionState(nil), s.states...), append([]*proxyproto.Header(nil), s.headers...), append([]error(nil), s.handErr...)
}

type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufConn) Read(b []byte) (int, error) { return c.r.Read(b) }

// askName connects through sluice at front and returns the first line the
// server sent, checking that bytes come back echoed too.
func askName(t *testing.T, front string) string {
	t.Helper()
	c := testutil.Dial(t, front)
	defer c.Close()
	br := bufio.NewReader(c)
	name := testutil.ReadLine(t, br)
	fmt.Fprintf(c, "ping\n")
	if got := testutil.ReadLine(t, br); got != "ping" {
		t.Fatalf("echo through %s: got %q", name, got)
	}
	return name
}

func beServer(t *testing.T, eng *engine.Engine, be, name string) *backend.Server {
	t.Helper()
	for _, s := range eng.Backends[be].Servers() {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no server %s in %s", name, be)
	return nil
}

func tlsErrs(s *backend.Server, reason int) uint64 { return s.Counters.TLSErrors[reason].Load() }

// TestTLSBackendTCP: a tcp frontend to TLS servers. The server whose
// certificate another CA signed is refused, counted and never used while
// the good one serves; the connection is relayed (not by the epoll loops,
// which would send the client's bytes in clear); sessions resume.
func TestTLSBackendTCP(t *testing.T) {
	ca, other := newCA(t, "ca"), newCA(t, "other-ca")
	good := startTLSServer(t, "good", &tls.Config{Certificates: []tls.Certificate{ca.issue(t, time.Now().Add(time.Hour), "127.0.0.1")}}, false)
	bad := startTLSServer(t, "bad", &tls.Config{Certificates: []tls.Certificate{other.issue(t, time.Now().Add(time.Hour), "127.0.0.1")}}, false)
	eng, front := testutil.Start(t, fmt.Sprintf(`
[frontend.f]
bind = ["{{FRONT}}"]
default_backend = "app"
[backend.app]
retries = 1
[[backend.app.server]]
name = "bad"
address = %q
[[backend.app.server]]
name = "good"
address = %q
[backend.app.tls]
ca_file = %q
`, bad.addr, good.addr, ca.pem))
	for i := 0; i < 6; i++ {
		if got := askName(t, front); got != "good" {
			t.Fatalf("connection %d answered by %q", i, got)
		}
	}
	if n := tlsErrs(beServer(t, eng, "app", "bad"), backend.TLSUnknownAuthority); n == 0 {
		t.Error("the bad server's unknown_authority errors were not counted")
	}
	if n := tlsErrs(beServer(t, eng, "app", "good"), backend.TLSUnknownAuthority); n != 0 {
		t.Errorf("good server counted %d errors", n)
	}
	states, _, _ := good.handshakes()
	resumed := 0
	for _, st := range states {
		if st.DidResume {
			resumed++
		}
		if st.ServerName != "" {
			t.Errorf("SNI %q sent to an IP address", st.ServerName)
		}
	}
	if len(states) < 6 || resumed == 0 {
		t.Errorf("%d handshakes, %d resumed; want later ones resumed", len(states), resumed)
	}
}

// TestTLSBackendVerifyNone: verify = "none" accepts a certificate no CA
// here signed.
func TestTLSBackendVerifyNone(t *testing.T) {
	other := newCA(t, "other-ca")
	bad := startTLSServer(t, "self", &tls.Config{Certificates: []tls.Certificate{other.issue(t, time.Now().Add(time.Hour), "wrong.test")}}, false)
	_, front := testutil.Start(t, fmt.Sprintf(`
[frontend.f]
bind = ["{{FRONT}}"]
default_backend = "app"
[[backend.app.server]]
address = %q
[backend.app.tls]
verify = "none"
`, bad.addr))
	if got := askName(t, front); got != "self" {
		t.Fatalf("got %q", got)
	}
}

// TestTLSBackendNameAndExpiry: server_name is sent as SNI and verified; a
// certificate for another name and an expired one are refused, each
// counted under its reason.
func TestTLSBackendNameAndExpiry(t *testing.T) {
	ca := newCA(t, "ca")
	wrong := startTLSServer(t, "wrong", &tls.Config{Certificates: []tls.Certificate{ca.issue(t, time.Now().Add(time.Hour), "other.test")}}, false)
	expired := startTLSServer(t, "expired", &tls.Config{Certificates: []tls.Certificate{ca.issue(t, time.Now().Add(-time.Hour), "api.test")}}, false)
	good := startTLSServer(t, "good", &tls.Config{Certificates: []tls.Certificate{ca.issue(t, time.Now().Add(time.Hour), "api.test")}}, false)
	eng, front := testutil.Start(t, fmt.Sprintf(`
[frontend.f]
bind = ["{{FRONT}}"]
default_backend = "app"
[backend.app]
retries = 2
[[backend.app.server]]
name = "wrong"
address = %q
[[backend.app.server]]
name = "expired"
address = %q
[[backend.app.server]]
name = "good"
address = %q
[backend.app.tls]
ca_file = %q
server_name = "api.test"
`, wrong.addr, expired.addr, good.addr, ca.pem))
	for i := 0; i < 6; i++ {
		if got := askName(t, front); got != "good" {
			t.Fatalf("connection %d answered by %q", i, got)
		}
	}
	if tlsErrs(beServer(t, eng, "app", "wrong"), backend.TLSNameMismatch) == 0 {
		t.Error("name_mismatch not counted")
	}
	if tlsErrs(beServer(t, eng, "app", "expired"), backend.TLSExpired) == 0 {
		t.Error("expired not counted")
	}
	states, _, _ := good.handshakes()
	if len(states) == 0 || states[0].ServerName != "api.test" {
		t.Errorf("SNI: %+v", states)
	}
}

// TestTLSBackendProxyThenTLS: with send_proxy the PROXY header arrives in
// clear before the ClientHello (the server reads it, then handshakes), as
// HAProxy sends it; and mutual TLS: the server requires the client
// certificate of cert/key.
func TestTLSBackendProxyThenTLS(t *testing.T) {
	ca := newCA(t, "ca")
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	cert, key := writePair(t, ca.issue(t, time.Now().Add(time.Hour), "sluice.client"))
	srv := startTLSServer(t, "mtls", &tls.Config{Certificates: []tls.Certificate{ca.issue(t, time.Now().Add(time.Hour), "127.0.0.1")},
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}, true)
	_, front := testutil.Start(t, fmt.Sprintf(`
[frontend.f]
bind = ["{{FRONT}}"]
default_backend = "app"
[backend.app]
send_proxy = "v2"
[[backend.app.server]]
address = %q
[backend.app.tls]
ca_file = %q
cert = %q
key = %q
`, srv.addr, ca.pem, cert, key))
	if got := askName(t, front); got != "mtls" {
		_, _, errs := srv.handshakes()
		t.Fatalf("got %q; server errors %v", got, errs)
	}
	states, hdrs, errs := srv.handshakes()
	if len(states) != 1 || len(errs) != 0 {
		t.Fatalf("handshakes %d, errors %v", len(states), errs)
	}
	if pc := states[0].PeerCertificates; len(pc) == 0 || pc[0].Subject.CommonName != "sluice.client" {
		t.Errorf("client certificate: %v", pc)
	}
	if hdrs[0] == nil || hdrs[0].SourceAddr == nil || !strings.HasPrefix(hdrs[0].SourceAddr.String(), "127.0.0.1:") {
		t.Errorf("PROXY header: %+v", hdrs[0])
	}
}

// httpsServer serves name and the request's protocol over TLS.
func httpsServer(t *testing.T, cert tls.Certificate, h2 bool, conns *atomic.Int64) *httptest.Server {
	t.Helper()
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s tls=%v", r.Proto, r.TLS != nil)
	}))
	s.EnableHTTP2 = h2
	s.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	if conns != nil {
		s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
			if st == http.StateNew {
				conns.Add(1)
			}
		}
	}
	s.StartTLS()
	t.Cleanup(s.Close)
	return s
}

func getBody(t *testing.T, c *http.Client, url string) string {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	return string(b)
}

// TestTLSBackendHTTP: an http backend over TLS, HTTP/1.1 on pooled
// connections (reused: fewer connections than requests) and HTTP/2 when
// alpn lists h2 first; the server with a bad certificate is never used.
func TestTLSBackendHTTP(t *testing.T) {
	ca, other := newCA(t, "ca"), newCA(t, "other-ca")
	var conns atomic.Int64
	h1 := httpsServer(t, ca.issue(t, time.Now().Add(time.Hour), "127.0.0.1"), false, &conns)
	h2 := httpsServer(t, ca.issue(t, time.Now().Add(time.Hour), "127.0.0.1"), true, nil)
	bad := httpsServer(t, other.issue(t, time.Now().Add(time.Hour), "127.0.0.1"), true, nil)
	eng, front := testutil.Start(t, fmt.Sprintf(`
[frontend.f]
mode = "http"
bind = ["{{FRONT}}"]
default_backend = "one"
[[frontend.f.route]]
path_prefix = "/two"
backend = "two"
[backend.one]
retries = 1
[[backend.one.server]]
name = "bad"
address = %q
[[backend.one.server]]
name = "h1"
address = %q
[backend.one.tls]
ca_file = %q
alpn = ["http/1.1"]
[backend.two]
[[backend.two.server]]
address = %q
[backend.two.tls]
ca_file = %q
alpn = ["h2", "http/1.1"]
`, bad.Listener.Addr(), h1.Listener.Addr(), ca.pem, h2.Listener.Addr(), ca.pem))
	c := &http.Client{Timeout: 10 * time.Second}
	const n = 8
	for i := 0; i < n; i++ {
		if got := getBody(t, c, "http://"+front+"/one"); got != "HTTP/1.1 tls=true" {
			t.Fatalf("request %d: %q", i, got)
		}
	}
	if got := conns.Load(); got >= n {
		t.Errorf("%d connections for %d sequential requests: TLS server connections not reused", got, n)
	}
	if tlsErrs(beServer(t, eng, "one", "bad"), backend.TLSUnknownAuthority) == 0 {
		t.Error("bad server's error not counted")
	}
	for i := 0; i < 3; i++ {
		if got := getBody(t, c, "http://"+front+"/two"); got != "HTTP/2.0 tls=true" {
			t.Fatalf("h2 request %d: %q", i, got)
		}
	}
}

// TestTLSBackendHealth: check = "http" runs over the backend's TLS: the
// server with a good certificate is up, the one another CA signed down.
func TestTLSBackendHealth(t *testing.T) {
	ca, other := newCA(t, "ca"), newCA(t, "other-ca")
	good := httpsServer(t, ca.issue(t, time.Now().Add(time.Hour), "127.0.0.1"), false, nil)
	bad := httpsServer(t, other.issue(t, time.Now().Add(time.Hour), "127.0.0.1"), false, nil)
	tcpGood := startTLSServer(t, "tcpgood", &tls.Config{Certificates: []tls.Certificate{ca.issue(t, time.Now().Add(time.Hour), "127.0.0.1")}}, false)
	tcpBad := startTLSServer(t, "tcpbad", &tls.Config{Certificates: []tls.Certificate{other.issue(t, time.Now().Add(time.Hour), "127.0.0.1")}}, false)
	eng, _ := testutil.Start(t, fmt.Sprintf(`
[frontend.f]
mode = "http"
bind = ["{{FRONT}}"]
default_backend = "app"
[frontend.t]
bind = ["%s"]
default_backend = "raw"
[backend.app.health]
check = "http"
interval = "50ms"
rise = 1
fall = 1
init_state = "down"
[[backend.app.server]]
name = "good"
address = %q
[[backend.app.server]]
name = "bad"
address = %q
[backend.app.tls]
ca_file = %q
[backend.raw.health]
check = "tcp"
interval = "50ms"
rise = 1
fall = 1
init_state = "down"
[[backend.raw.server]]
name = "good"
address = %q
[[backend.raw.server]]
name = "bad"
address = %q
[backend.raw.tls]
ca_file = %q
`, testutil.FreeAddr(t), good.Listener.Addr(), bad.Listener.Addr(), ca.pem, tcpGood.addr, tcpBad.addr, ca.pem))
	for _, be := range []string{"app", "raw"} {
		g, b := beServer(t, eng, be, "good"), beServer(t, eng, be, "bad")
		testutil.WaitFor(t, be+" good server up", 10*time.Second, g.Up)
		testutil.WaitFor(t, be+" bad server checked", 10*time.Second, func() bool { _, failed := b.CheckCounts(); return failed > 0 })
		if b.Up() {
			t.Errorf("%s: bad server up", be)
		}
		if r, _ := b.LastCheck(); !strings.HasPrefix(r.Desc, "tls handshake: ") || !strings.Contains(r.Desc, "unknown authority") {
			t.Errorf("%s: bad server's check says %q", be, r.Desc)
		}
	}
}
