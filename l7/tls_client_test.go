package l7_test

import (
	"bufio"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"sluice/engine"
	"sluice/internal/testpki"
	"sluice/internal/testutil"
	"sluice/l7"
)

// certEcho answers with the X-Client-Cert-* fields it received, one
// "Name=value" a line, sorted: what the server was told.
var certEcho = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	var lines []string
	for k, vs := range r.Header {
		if strings.HasPrefix(strings.ToLower(k), "x-client-cert") || strings.EqualFold(k, "X-Injected") {
			for _, v := range vs {
				lines = append(lines, k+"="+v)
			}
		}
	}
	sort.Strings(lines)
	fmt.Fprintf(w, "%s %s\n%s", r.Proto, r.URL.Path, strings.Join(lines, "\n"))
})

// mtls is the material of a client-certificate test: a server CA and
// certificate for a.test, a client CA with good, revoked, expired and
// server-only certificates, and a certificate of another CA.
type mtls struct {
	roots                                       *x509.CertPool
	serverCert, serverKey, caFile, crlFile      string
	good, revoked, expired, serverOnly, foreign *testpki.Leaf
	mallory                                     *testpki.Leaf // CR LF in its subject and names
}

func newMTLS(t *testing.T) *mtls {
	dir := t.TempDir()
	sca := testpki.NewCA(t, "server CA")
	srv := sca.Issue(t, "a.test", testpki.Options{DNS: []string{"a.test"}, Server: true})
	ca := testpki.NewCA(t, "client CA")
	m := &mtls{roots: x509.NewCertPool()}
	m.roots.AddCert(sca.Cert)
	m.serverCert = testpki.Write(t, dir, "srv.pem", srv.CertPEM)
	m.serverKey = testpki.Write(t, dir, "srv.key", srv.KeyPEM)
	m.caFile = testpki.Write(t, dir, "ca.pem", ca.PEM)
	m.good = ca.Issue(t, "alice", testpki.Options{
		Subject: pkix.Name{CommonName: "alice", Organization: []string{"Example"}, OrganizationalUnit: []string{"Ops"}},
		DNS:     []string{"alice.test"}, IPs: []net.IP{net.ParseIP("10.0.0.1")}, Emails: []string{"alice@example.com"},
		URIs: []string{"spiffe://example/alice"}})
	m.revoked = ca.Issue(t, "bob", testpki.Options{})
	m.expired = ca.Issue(t, "carol", testpki.Options{NotAfter: time.Now().Add(-time.Minute)})
	m.serverOnly = ca.Issue(t, "dave", testpki.Options{Server: true})
	m.foreign = testpki.NewCA(t, "other CA").Issue(t, "eve", testpki.Options{})
	m.mallory = ca.Issue(t, "mallory", testpki.Options{
		Subject: pkix.Name{CommonName: "mallory", Organization: []string{"Evil\r\nX-Injected: 1"}},
		DNS:     []string{"m.test\r\nX-Injected: 2"}})
	m.crlFile = testpki.Write(t, dir, "ca.crl", testpki.CRLPEM(ca.CRL(t, time.Time{}, m.revoked.Cert)))
	return m
}

// start runs a TLS frontend with clientAuth (a [frontend.web.client_auth]
// body, "" for none): "/" goes to an HTTP/1 server, "/h2c/" to an h2c one.
func (m *mtls) start(t *testing.T, clientAuth, frontExtra string) (*engine.Engine, string) {
	h1 := serveHTTP(t, certEcho)
	h2, _ := h2cServer(t, certEcho, nil)
	tables := fmt.Sprintf("[[frontend.web.tls]]\ncert = %q\nkey = %q\n", m.serverCert, m.serverKey)
	if clientAuth != "" {
		tables += "[frontend.web.client_auth]\n" + clientAuth + "\n"
	}
	tables += "[[frontend.web.route]]\npath_prefix = \"/h2c/\"\nbackend = \"up\"\n"
	return testutil.Start(t, h2Config("default_backend = \"app\"\ntimeout_http_request = \"2s\"\n"+frontExtra, tables, map[string]h2Backend{
		"app": {addrs: []string{h1.Addr}},
		"up":  {extra: "proto = \"h2c\"", addrs: []string{h2}},
	}))
}

func (m *mtls) client(leaf *testpki.Leaf, protos ...string) *tls.Config {
	c := &tls.Config{RootCAs: m.roots, ServerName: "a.test", NextProtos: protos}
	if leaf != nil {
		// Sent whatever CAs the server names: Certificates would send
		// none for a certificate of another CA.
		c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &leaf.Pair, nil }
	}
	return c
}

// get sends one HTTP/1.1 request (extra: header lines) over TLS with
// client certificate leaf (nil: none) and returns the body.
func (m *mtls) get(t *testing.T, front string, leaf *testpki.Leaf, path, extra string) (string, error) {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", front, m.client(leaf, "http/1.1"))
	if err != nil {
		return "", err // TLS 1.2 and earlier: the server's refusal comes here
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: a.test\r\n%sConnection: close\r\n\r\n", path, extra); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return "", err // TLS 1.3: the refusal arrives after the client's Finished
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// getH2 sends one request over HTTP/2 over TLS, with the extra header.
func (m *mtls) getH2(t *testing.T, front string, leaf *testpki.Leaf, path string, hdr http.Header) (string, error) {
	t.Helper()
	tr := &http2.Transport{TLSClientConfig: m.client(leaf, "h2")}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest("GET", "https://"+front+path, nil)
	req.Header = hdr
	resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func handshakes(e *engine.Engine) *l7.HandshakeCounters {
	return &e.Front.Frontends[0].HTTP().Counters.Handshakes
}

// waitFailed waits for the failure count of reason to reach n.
func waitFailed(t *testing.T, e *engine.Engine, reason string, n uint64) {
	t.Helper()
	h := handshakes(e)
	for i, r := range l7.HandshakeReasons {
		if r == reason {
			testutil.WaitFor(t, "handshake failures "+reason, 5*time.Second, func() bool { return h.Failed[i].Load() >= n })
			if got := h.Failed[i].Load(); got != n {
				t.Errorf("failures %s = %d, want %d", reason, got, n)
			}
			return
		}
	}
	t.Fatalf("no reason %q", reason)
}

func fingerprint(l *testpki.Leaf) string {
	sum := sha256.Sum256(l.Cert.Raw)
	return hex.EncodeToString(sum[:])
}

const spoof = "X-Client-Cert-Subject: CN=root\r\nx-client-cert-san: DNS:admin.test\r\nX-CLIENT-CERT-FINGERPRINT: 00\r\n"

// TestClientCertRequired: on verify = "required", a client without a
// certificate, with a revoked one, an expired one, one of another CA or
// one not meant for clients fails the handshake, each counted under its
// reason; a good one is served, and the servers (HTTP/1 and h2c, clients
// on HTTP/1.1 and HTTP/2) see its subject, names and fingerprint, never
// the client's own copies of those headers.
func TestClientCertRequired(t *testing.T) {
	m := newMTLS(t)
	e, front := m.start(t, fmt.Sprintf("verify = \"required\"\nca_file = %q\ncrl_file = %q", m.caFile, m.crlFile), "")
	h := handshakes(e)

	want := "X-Client-Cert-Fingerprint=" + fingerprint(m.good) +
		"\nX-Client-Cert-San=DNS:alice.test, IP:10.0.0.1, email:alice@example.com, URI:spiffe://example/alice" +
		"\nX-Client-Cert-Subject=CN=alice,OU=Ops,O=Example"
	for _, path := range []string{"/x", "/h2c/x"} {
		body, err := m.get(t, front, m.good, path, spoof)
		if err != nil {
			t.Fatalf("%s: good certificate refused: %v", path, err)
		}
		if _, got, _ := strings.Cut(body, "\n"); got != want {
			t.Errorf("HTTP/1.1 %s: server saw\n%s\nwant\n%s", path, got, want)
		}
		body, err = m.getH2(t, front, m.good, path, http.Header{"X-Client-Cert-Subject": {"CN=root"}, "X-Client-Cert-Fingerprint": {"00"}})
		if err != nil {
			t.Fatalf("h2 %s: %v", path, err)
		}
		if _, got, _ := strings.Cut(body, "\n"); got != want {
			t.Errorf("HTTP/2 %s: server saw\n%s\nwant\n%s", path, got, want)
		}
	}
	if got := h.Completed.Load(); got != 4 {
		t.Errorf("handshakes completed = %d, want 4", got)
	}

	for _, tc := range []struct {
		desc, reason string
		leaf         *testpki.Leaf
	}{
		{"no certificate", "no_cert", nil},
		{"revoked", "revoked", m.revoked},
		{"expired", "expired", m.expired},
		{"another CA", "unknown_ca", m.foreign},
		{"server certificate", "bad_cert", m.serverOnly},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			if body, err := m.get(t, front, tc.leaf, "/x", ""); err == nil {
				t.Fatalf("served: %q", body)
			}
			if body, err := m.getH2(t, front, tc.leaf, "/x", nil); err == nil {
				t.Fatalf("served over h2: %q", body)
			}
			waitFailed(t, e, tc.reason, 2)
		})
	}

	t.Run("protocol and timeout", func(t *testing.T) {
		c := testutil.Dial(t, front)
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: a.test\r\n\r\n") // plain HTTP to a TLS port
		waitFailed(t, e, "protocol", 1)
		testutil.Dial(t, front) // says nothing: timeout_http_request bounds the handshake
		waitFailed(t, e, "timeout", 1)
	})
	if got := h.Completed.Load(); got != 4 {
		t.Errorf("handshakes completed = %d, want 4 (the refused ones are not)", got)
	}
}

// TestClientCertOptional: on verify = "optional" a client without a
// certificate is served, the servers see none of the headers (client-sent
// ones removed too); one with a valid certificate gets them; an invalid
// one still fails.
func TestClientCertOptional(t *testing.T) {
	m := newMTLS(t)
	logFile := filepath.Join(t.TempDir(), "access.log")
	e, front := m.start(t, fmt.Sprintf("verify = \"optional\"\nca_file = %q\ncrl_file = %q", m.caFile, m.crlFile),
		fmt.Sprintf("access_log = true\naccess_log_file = %q", logFile))
	for _, path := range []string{"/x", "/h2c/x"} {
		body, err := m.get(t, front, nil, path, spoof)
		if err != nil {
			t.Fatalf("%s: no certificate refused on optional: %v", path, err)
		}
		if _, got, _ := strings.Cut(body, "\n"); got != "" {
			t.Errorf("%s: server saw client certificate headers without a certificate:\n%s", path, got)
		}
		body, err = m.get(t, front, m.good, path, "")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(body, "X-Client-Cert-Fingerprint="+fingerprint(m.good)) {
			t.Errorf("%s: server saw %q", path, body)
		}
	}
	if _, err := m.get(t, front, m.revoked, "/x", ""); err == nil {
		t.Error("revoked certificate served on optional")
	}
	waitFailed(t, e, "revoked", 1)
	waitFailed(t, e, "no_cert", 0)

	// The access log: every line has the fields, empty without a certificate.
	var lines []string
	testutil.WaitFor(t, "4 access log lines", 5*time.Second, func() bool {
		b, _ := os.ReadFile(logFile)
		lines = strings.Split(strings.TrimSpace(string(b)), "\n")
		return len(lines) == 4
	})
	// Lines are written as requests end: in any order.
	with := `client_cert_subject="CN=alice,OU=Ops,O=Example" client_cert_fp=` + fingerprint(m.good)
	n := map[bool]int{}
	for _, l := range lines {
		n[strings.HasSuffix(l, with)]++
		if !strings.HasSuffix(l, with) && !strings.HasSuffix(l, `client_cert_subject="" client_cert_fp=""`) {
			t.Errorf("access log line without the client certificate fields:\n%s", l)
		}
	}
	if n[true] != 2 {
		t.Errorf("%d access log lines with the certificate, want 2:\n%s", n[true], strings.Join(lines, "\n"))
	}
}

// TestClientCertHeadersSafe: a certificate whose subject and names hold
// CR LF reaches the server as one escaped value each, no header of its own.
func TestClientCertHeadersSafe(t *testing.T) {
	m := newMTLS(t)
	_, front := m.start(t, fmt.Sprintf("ca_file = %q", m.caFile), "")
	for _, path := range []string{"/x", "/h2c/x"} {
		body, err := m.get(t, front, m.mallory, path, "")
		if err != nil {
			t.Fatal(err)
		}
		_, got, _ := strings.Cut(body, "\n")
		if strings.Contains(got, "X-Injected") && !strings.Contains(got, `\0d\0aX-Injected`) {
			t.Errorf("%s: injected a header:\n%s", path, got)
		}
		for _, w := range []string{`X-Client-Cert-San=DNS:m.test\0d\0aX-Injected: 2`, `X-Client-Cert-Subject=CN=mallory,O=Evil\0d\0aX-Injected: 1`} {
			if !strings.Contains(got, w) {
				t.Errorf("%s: server saw\n%s\nwant a line %s", path, got, w)
			}
		}
	}
}

// TestClientCertHeadersStripped: without client_auth, on TLS and on a
// plain (h2c-capable) frontend, client-sent X-Client-Cert-* headers never
// reach HTTP/1 or h2c servers.
func TestClientCertHeadersStripped(t *testing.T) {
	m := newMTLS(t)
	_, front := m.start(t, "", "")
	for _, path := range []string{"/x", "/h2c/x"} {
		body, err := m.get(t, front, nil, path, spoof)
		if err != nil {
			t.Fatal(err)
		}
		if _, got, _ := strings.Cut(body, "\n"); got != "" {
			t.Errorf("TLS %s: server saw\n%s", path, got)
		}
		body, err = m.getH2(t, front, m.good, path, http.Header{"X-Client-Cert-Subject": {"CN=root"}})
		if err != nil {
			t.Fatal(err)
		}
		if _, got, _ := strings.Cut(body, "\n"); got != "" {
			t.Errorf("TLS h2 %s: server saw\n%s", path, got)
		}
	}

	h1 := serveHTTP(t, certEcho)
	h2, _ := h2cServer(t, certEcho, nil)
	_, plain := testutil.Start(t, h2Config("default_backend = \"app\"\nh2c = true", "[[frontend.web.route]]\npath_prefix = \"/h2c/\"\nbackend = \"up\"\n", map[string]h2Backend{
		"app": {addrs: []string{h1.Addr}},
		"up":  {extra: "proto = \"h2c\"", addrs: []string{h2}},
	}))
	for _, path := range []string{"/x", "/h2c/x"} {
		got := rawExchange(t, plain, "GET "+path+" HTTP/1.1\r\nHost: a.test\r\n"+spoof+"Connection: close\r\n\r\n")
		if strings.Contains(strings.ToLower(got), "x-client-cert") {
			t.Errorf("plain %s: server saw\n%s", path, got)
		}
		tr := &http2.Transport{AllowHTTP: true, DialTLS: func(network, addr string, _ *tls.Config) (net.Conn, error) { return net.Dial(network, addr) }}
		req, _ := http.NewRequest("GET", "http://"+plain+path, nil)
		req.Header.Set("X-Client-Cert-Fingerprint", "00")
		resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		tr.CloseIdleConnections()
		if resp.ProtoMajor != 2 || strings.Contains(strings.ToLower(string(b)), "x-client-cert") {
			t.Errorf("h2c %s (proto %s): server saw\n%s", path, resp.Proto, b)
		}
	}
}
