package l7_test

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"sluice/internal/ocsptest"
	"sluice/internal/testpki"
	"sluice/internal/testutil"
	"sluice/l7"
)

// TestClientCertCRLFileOfTwoCAs: ca_file trusts two client CAs and
// crl_file holds both CRLs, one after the other (as HAProxy's crl-file
// and OpenSSL read them): a certificate revoked by the second CRL is
// refused like one revoked by the first. Only the first was read, so the
// second CA's revocations were ignored without a word.
func TestClientCertCRLFileOfTwoCAs(t *testing.T) {
	m := newMTLS(t)
	dir := t.TempDir()
	a, b := testpki.NewCA(t, "client CA A"), testpki.NewCA(t, "client CA B")
	aGood, aRevoked := a.Issue(t, "a-good", testpki.Options{}), a.Issue(t, "a-revoked", testpki.Options{})
	bGood, bRevoked := b.Issue(t, "b-good", testpki.Options{}), b.Issue(t, "b-revoked", testpki.Options{})
	caFile := testpki.Write(t, dir, "cas.pem", append(append([]byte{}, a.PEM...), b.PEM...))
	crls := append(testpki.CRLPEM(a.CRL(t, time.Time{}, aRevoked.Cert)), testpki.CRLPEM(b.CRL(t, time.Time{}, bRevoked.Cert))...)
	crlFile := testpki.Write(t, dir, "cas.crl", crls)
	e, front := m.start(t, fmt.Sprintf("verify = \"required\"\nca_file = %q\ncrl_file = %q", caFile, crlFile), "")
	for _, leaf := range []*testpki.Leaf{aGood, bGood} {
		if _, err := m.get(t, front, leaf, "/x", ""); err != nil {
			t.Errorf("%s refused: %v", leaf.Cert.Subject, err)
		}
	}
	for _, leaf := range []*testpki.Leaf{aRevoked, bRevoked} {
		if body, err := m.get(t, front, leaf, "/x", ""); err == nil {
			t.Errorf("revoked %s served: %q", leaf.Cert.Subject, body)
		}
	}
	waitFailed(t, e, "revoked", 2)
}

// TestClientCertHeadersUnderscoreStripped: CGI-style servers (PHP-FPM,
// WSGI, anything reading HTTP_X_CLIENT_CERT_SUBJECT) see
// X_Client_Cert_Subject as X-Client-Cert-Subject: a client's copy under
// that spelling must not reach them either, on HTTP/1.1 and HTTP/2, with
// or without a certificate.
func TestClientCertHeadersUnderscoreStripped(t *testing.T) {
	m := newMTLS(t)
	// Every header the server got whose name is one of the three in
	// CGI's spelling (HTTP_X_CLIENT_CERT_...).
	echo := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for k, vs := range r.Header {
			if strings.HasPrefix(strings.ReplaceAll(strings.ToLower(k), "-", "_"), "x_client_cert_") {
				fmt.Fprintf(w, "%s=%s\n", k, strings.Join(vs, ","))
			}
		}
	})
	h1 := serveHTTP(t, echo)
	h2, _ := h2cServer(t, echo, nil)
	tables := fmt.Sprintf("[[frontend.web.tls]]\ncert = %q\nkey = %q\n[frontend.web.client_auth]\nverify = \"optional\"\nca_file = %q\n", m.serverCert, m.serverKey, m.caFile)
	tables += "[[frontend.web.route]]\npath_prefix = \"/h2c/\"\nbackend = \"up\"\n"
	_, front := testutil.Start(t, h2Config("default_backend = \"app\"", tables, map[string]h2Backend{
		"app": {addrs: []string{h1.Addr}},
		"up":  {extra: "proto = \"h2c\"", addrs: []string{h2}},
	}))
	extra := "X_Client_Cert_Subject: CN=root\r\nx_client_cert_fingerprint: 00\r\nX-Client_Cert-SAN: DNS:root\r\n"
	for _, leaf := range []*testpki.Leaf{nil, m.good} {
		for _, path := range []string{"/x", "/h2c/x"} {
			body, err := m.get(t, front, leaf, path, extra)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(body, "root") || strings.Contains(body, "=00") || strings.Contains(strings.ToLower(body), "x_client") {
				t.Errorf("HTTP/1.1 %s (certificate %v): server saw\n%s", path, leaf != nil, body)
			}
			body, err = m.getH2(t, front, leaf, path, http.Header{"X_client_cert_subject": {"CN=root"}})
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(body, "root") || strings.Contains(strings.ToLower(body), "x_client") {
				t.Errorf("HTTP/2 %s (certificate %v): server saw\n%s", path, leaf != nil, body)
			}
		}
	}
}

// TestOCSPFileStapleDroppedWhenExpired: a staple from the ocsp file is
// served until its next update, not after: a stale response makes
// clients that check it (Firefox: SEC_ERROR_OCSP_OLD_RESPONSE, must-staple)
// refuse the site, and conf.Parse already staples none from an expired
// file. It was served as long as the worker ran.
func TestOCSPFileStapleDroppedWhenExpired(t *testing.T) {
	ocsptest.Openssl(t)
	pki := ocsptest.New(t)
	leaf := pki.Issue(t, "www.test", time.Now().Add(90*24*time.Hour), "", false)
	resp, err := os.ReadFile(pki.Response(t, leaf, time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	pair := loadPair(t, leaf)
	pair.OCSPStaple = resp
	sc, err := l7.NewServedCert(pair, false)
	if err != nil {
		t.Fatal(err)
	}
	var skew atomic.Int64
	sc.SetClock(func() time.Time { return time.Now().Add(time.Duration(skew.Load())) })
	cfg, err := l7.NewTLS([]*tls.Certificate{pair})
	if err != nil {
		t.Fatal(err)
	}
	l7.StapleTLS(cfg, []*l7.ServedCert{sc})
	addr := serveTLS(t, cfg)
	if got := goStaple(t, addr, pki, "www.test"); !bytes.Equal(got, resp) {
		t.Fatalf("fresh: client saw %d bytes, want the file's %d", len(got), len(resp))
	}
	skew.Store(int64(time.Until(sc.StapleExpiry()) + time.Second))
	if got := goStaple(t, addr, pki, "www.test"); len(got) != 0 {
		t.Errorf("a staple past its next update (%v) was served", sc.StapleExpiry())
	}
	if sc.Stapled() {
		t.Error("Stapled() reports the expired staple as served")
	}
	if pair.OCSPStaple == nil {
		t.Error("the certificate conf loaded was changed in place")
	}
}

// TestClientCertTrailersStripped: a client's X-Client-Cert-* (or
// X-Forwarded-For) sent as a request trailer does not reach the server
// either (servers that merge trailers into the headers would take it for
// sluice's), on HTTP/1.1 chunked bodies to HTTP/1 servers and on HTTP/2
// to h2c servers; other trailers pass.
func TestClientCertTrailersStripped(t *testing.T) {
	m := newMTLS(t)
	echo := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		var lines []string
		for k, vs := range r.Trailer {
			if len(vs) > 0 { // declared in a Trailer header but not sent: nil
				lines = append(lines, k+"="+strings.Join(vs, ","))
			}
		}
		sort.Strings(lines)
		fmt.Fprint(w, strings.Join(lines, "\n"))
	})
	h1 := serveHTTP(t, echo)
	h2, _ := h2cServer(t, echo, nil)
	tables := fmt.Sprintf("[[frontend.web.tls]]\ncert = %q\nkey = %q\n[frontend.web.client_auth]\nverify = \"optional\"\nca_file = %q\n", m.serverCert, m.serverKey, m.caFile)
	tables += "[[frontend.web.route]]\npath_prefix = \"/h2c/\"\nbackend = \"up\"\n"
	_, front := testutil.Start(t, h2Config("default_backend = \"app\"", tables, map[string]h2Backend{
		"app": {addrs: []string{h1.Addr}},
		"up":  {extra: "proto = \"h2c\"", addrs: []string{h2}},
	}))
	const want = "X-Other=kept"

	// HTTP/1.1 chunked with trailers, to the HTTP/1 server.
	c, err := tls.Dial("tcp", front, m.client(m.good, "http/1.1"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprint(c, "POST /x HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\nTrailer: X-Client-Cert-Subject, X-Other\r\nConnection: close\r\n\r\n"+
		"1\r\na\r\n0\r\nX-Client-Cert-Subject: CN=root\r\nx_client_cert_fingerprint: 00\r\nX-Forwarded-For: 10.9.9.9\r\nX-Other: kept\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != want {
		t.Errorf("HTTP/1.1: server saw trailers\n%s\nwant\n%s", b, want)
	}

	// HTTP/2 with trailers, to the h2c server.
	tr := &http2.Transport{TLSClientConfig: m.client(m.good, "h2")}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest("POST", "https://"+front+"/h2c/x", io.NopCloser(strings.NewReader("a")))
	req.Trailer = http.Header{"X-Client-Cert-Subject": {"CN=root"}, "X-Other": {"kept"}}
	resp, err = (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != want {
		t.Errorf("HTTP/2: server saw trailers\n%s\nwant\n%s", b, want)
	}
}

// TestClientCertCRLUnavailableRefused: with a crl_file, a client whose
// issuer has no CRL in it, or only one past its next update, is refused
// (reason crl_unavailable), as HAProxy's crl-file (OpenSSL CRL_CHECK_ALL)
// refuses it: nobody vouches that its certificate was not revoked. Before,
// such clients were let through without a word.
func TestClientCertCRLUnavailableRefused(t *testing.T) {
	m := newMTLS(t)
	dir := t.TempDir()
	a, b, c := testpki.NewCA(t, "client CA A"), testpki.NewCA(t, "client CA B"), testpki.NewCA(t, "client CA C")
	aGood, bGood, cGood := a.Issue(t, "a-good", testpki.Options{}), b.Issue(t, "b-good", testpki.Options{}), c.Issue(t, "c-good", testpki.Options{})
	caFile := testpki.Write(t, dir, "cas.pem", append(append(append([]byte{}, a.PEM...), b.PEM...), c.PEM...))
	// A's CRL is in force, B's is past its next update, C has none.
	crls := append(testpki.CRLPEM(a.CRL(t, time.Time{})), testpki.CRLPEM(b.CRL(t, time.Now().Add(-time.Minute)))...)
	crlFile := testpki.Write(t, dir, "cas.crl", crls)
	e, front := m.start(t, fmt.Sprintf("verify = \"required\"\nca_file = %q\ncrl_file = %q", caFile, crlFile), "")
	if _, err := m.get(t, front, aGood, "/x", ""); err != nil {
		t.Errorf("client of a CA whose CRL is in force refused: %v", err)
	}
	for _, leaf := range []*testpki.Leaf{bGood, cGood} {
		if body, err := m.get(t, front, leaf, "/x", ""); err == nil {
			t.Errorf("%s served with no CRL in force for its issuer: %q", leaf.Cert.Subject, body)
		}
	}
	waitFailed(t, e, "crl_unavailable", 2)
}
