package conf_test

import (
	"strings"
	"testing"
	"time"

	"sluice/internal/testpki"
)

// TestClientAuthCRLFileOfSeveralCAs: crl_file may hold one CRL per CA of
// ca_file, one after the other; all are read (only the first was), and a
// CRL among them signed by no CA of ca_file is refused, named by its
// place in the file.
func TestClientAuthCRLFileOfSeveralCAs(t *testing.T) {
	dir := t.TempDir()
	cert, key := writeKeyPair(t, "www.example.com")
	a, b, other := testpki.NewCA(t, "A"), testpki.NewCA(t, "B"), testpki.NewCA(t, "other")
	caFile := testpki.Write(t, dir, "cas.pem", append(append([]byte{}, a.PEM...), b.PEM...))
	two := testpki.Write(t, dir, "two.crl", append(testpki.CRLPEM(a.CRL(t, time.Time{})), testpki.CRLPEM(b.CRL(t, time.Time{}, b.Issue(t, "x", testpki.Options{}).Cert))...))
	cfg := mustParse(t, clientAuthSrc(cert, key, false, `ca_file = "`+caFile+`"
crl_file = "`+two+`"`))
	crls := cfg.Frontend("f").ClientAuth.CRLs
	if len(crls) != 2 || len(crls[1].RevokedCertificateEntries) != 1 {
		t.Fatalf("read %d CRLs, want 2 (the second with one entry)", len(crls))
	}

	foreign := testpki.Write(t, dir, "foreign.crl", append(testpki.CRLPEM(a.CRL(t, time.Time{})), testpki.CRLPEM(other.CRL(t, time.Time{}))...))
	checkProblems(t, parseErrors(t, clientAuthSrc(cert, key, false, `ca_file = "`+caFile+`"
crl_file = "`+foreign+`"`)), []want{{10, "frontend.f.client_auth.crl_file", "CRL 2 (issuer CN=other,"}})

	stale := testpki.Write(t, dir, "stale.crl", append(testpki.CRLPEM(a.CRL(t, time.Time{})), testpki.CRLPEM(b.CRL(t, time.Now().Add(-time.Minute)))...))
	cfg = mustParse(t, clientAuthSrc(cert, key, false, `ca_file = "`+caFile+`"
crl_file = "`+stale+`"`))
	var n int
	for _, w := range cfg.Warnings {
		if w.Key == "frontend.f.client_auth.crl_file" {
			n++
			if !strings.Contains(w.Msg, "the CRL of CN=B") {
				t.Errorf("warning %q does not name the stale CRL's issuer", w.Msg)
			}
		}
	}
	if n != 1 {
		t.Errorf("%d warnings about crl_file, want 1 (the second CRL is stale): %+v", n, cfg.Warnings)
	}
}

// TestBackendTLSDNSWithoutServerName: servers found by DNS are IP
// addresses, so without server_name their certificates are verified
// against the IP (and no SNI is sent): `check` says so and names the fix,
// where the first handshake would only log name_mismatch per server.
func TestBackendTLSDNSWithoutServerName(t *testing.T) {
	src := `
[frontend.f]
bind = ["127.0.0.1:0"]
default_backend = "app"

[backend.app.dns]
name = "_https._tcp.api.service.consul."

[backend.app.tls]
`
	cfg := mustParse(t, src)
	var got []string
	for _, w := range cfg.Warnings {
		got = append(got, w.Key+": "+w.Msg)
	}
	if len(got) != 1 || !strings.HasPrefix(got[0], "backend.app.tls.server_name: ") || !strings.Contains(got[0], `server_name = "api.service.consul"`) {
		t.Errorf("warnings %q, want one on backend.app.tls.server_name suggesting the DNS name", got)
	}
	for _, extra := range []string{`server_name = "api.internal"`, `verify = "none"`} {
		if cfg := mustParse(t, src+extra+"\n"); len(cfg.Warnings) != 0 {
			t.Errorf("with %s: warnings %+v", extra, cfg.Warnings)
		}
	}
}

// TestClientAuthOnTCPFrontend: client_auth on a tcp frontend says that
// TLS (and so client certificates) needs an http frontend; it said to add
// a tls entry, which is refused on tcp frontends.
func TestClientAuthOnTCPFrontend(t *testing.T) {
	cert, _ := writeKeyPair(t, "www.example.com")
	checkProblems(t, parseErrors(t, `[frontend.f]
bind = ["127.0.0.1:0"]
default_backend = "b"
[frontend.f.client_auth]
ca_file = "`+cert+`"
[[backend.b.server]]
address = "127.0.0.1:1"
`), []want{{4, "frontend.f.client_auth", `mode = "tcp", which does not terminate TLS: set mode = "http"`}})
}
