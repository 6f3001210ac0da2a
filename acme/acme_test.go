package acme_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"

	"sluice/acme"
	"sluice/conf"
	"sluice/l7"
)

func fileCert(t *testing.T, name string) *tls.Certificate {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k, Leaf: leaf}
}

func manager(t *testing.T, challenge string) *acme.Manager {
	t.Helper()
	src := `
[acme]
directory = "https://127.0.0.1:1/dir"
storage = "` + t.TempDir() + `"
challenge = "` + challenge + `"
[frontend.web]
mode = "http"
bind = ["127.0.0.1:8443"]
default_backend = "b"
[[frontend.web.tls]]
acme = ["www.example.com"]
[frontend.plain]
mode = "http"
bind = ["127.0.0.1:8080"]
default_backend = "b"
[[backend.b.server]]
address = "127.0.0.1:1"
`
	return newManager(t, src)
}

// newManager is the manager of the configuration src, stopped when the
// test ends.
func newManager(t *testing.T, src string) *acme.Manager {
	t.Helper()
	cfg, err := conf.Parse("t.toml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	m, err := acme.New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), acme.Options{})
	if err != nil || m == nil {
		t.Fatalf("New: %v %v", m, err)
	}
	t.Cleanup(m.Stop)
	return m
}

// handshake runs a real TLS handshake on 127.0.0.1 against cfg and returns
// the served leaf (nil on failure).
func handshake(t *testing.T, cfg *tls.Config, sni string, alpn ...string) (*x509.Certificate, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		tc := tls.Server(c, cfg)
		tc.SetDeadline(time.Now().Add(5 * time.Second))
		tc.Handshake()
	}()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", ln.Addr().String(),
		&tls.Config{ServerName: sni, InsecureSkipVerify: true, NextProtos: alpn})
	if err != nil {
		return nil, ""
	}
	defer c.Close()
	cs := c.ConnectionState()
	return cs.PeerCertificates[0], cs.NegotiatedProtocol
}

// Before an ACME certificate is issued, its name gets the frontend's file
// certificate; tls-alpn-01 adds acme-tls/1 to ALPN without taking the
// place of h2 and http/1.1; a frontend with acme names only refuses the
// handshake rather than serve nothing.
func TestTLSConfigFallsBack(t *testing.T) {
	m := manager(t, conf.ChallengeTLSALPN)
	file := fileCert(t, "file.example.com")
	base, err := l7.NewTLS([]*tls.Certificate{file})
	if err != nil {
		t.Fatal(err)
	}
	c := m.TLSConfig(base, []string{"www.example.com"})
	if !slices.Equal(c.NextProtos, []string{"h2", "http/1.1", acme.ALPN}) || slices.Contains(base.NextProtos, acme.ALPN) {
		t.Errorf("NextProtos = %v (base %v)", c.NextProtos, base.NextProtos)
	}
	for _, sni := range []string{"www.example.com", "file.example.com", "other.example.com"} {
		leaf, proto := handshake(t, c, sni, "h2", "http/1.1")
		if leaf == nil || leaf.Subject.CommonName != "file.example.com" || proto != "h2" {
			t.Errorf("SNI %s: served %v with %q, want the file certificate with h2", sni, leaf, proto)
		}
	}
	only := m.TLSConfig(nil, []string{"www.example.com"})
	if leaf, _ := handshake(t, only, "www.example.com"); leaf != nil {
		t.Errorf("acme only, nothing issued: served %v", leaf.Subject)
	}
	// A validation for a name with no challenge in progress is refused.
	if leaf, _ := handshake(t, only, "www.example.com", acme.ALPN); leaf != nil {
		t.Errorf("acme-tls/1 without a challenge: served %v", leaf.Subject)
	}
}

// With http-01 the TLS frontends offer no acme-tls/1, and only paths under
// /.well-known/acme-challenge/ of an order in progress are answered.
func TestHTTP01(t *testing.T) {
	m := manager(t, conf.ChallengeHTTP)
	if c := m.TLSConfig(nil, nil); slices.Contains(c.NextProtos, acme.ALPN) {
		t.Errorf("NextProtos = %v", c.NextProtos)
	}
	for _, path := range []string{"/", "/.well-known/acme-challenge/abc", "/.well-known/acme-challenge/abc?x=1"} {
		if body, ok := m.HTTPChallenge("GET", "www.example.com", path); ok {
			t.Errorf("%s answered %q with no order in progress", path, body)
		}
	}
	if _, ok := manager(t, conf.ChallengeTLSALPN).HTTPChallenge("GET", "www.example.com", "/.well-known/acme-challenge/abc"); ok {
		t.Error("tls-alpn-01 manager answered http-01")
	}
}

// A worker started on the storage of an earlier one (a reload) holds the
// stored certificates when Start returns, and serves them from its first
// handshake: certmagic's ManageAsync alone loaded them in a goroutine
// after returning, and a handshake in between failed.
func TestStartLoadsStoredCertificates(t *testing.T) {
	const dir = "https://127.0.0.1:1/dir" // never dialed: nothing is due
	storage := t.TempDir()
	var names []string
	for i := range 32 {
		names = append(names, fmt.Sprintf("n%d.example.com", i))
	}
	issuerKey := (&certmagic.ACMEIssuer{CA: dir}).IssuerKey()
	serials := map[string]*big.Int{}
	for i, name := range names {
		c := fileCert(t, name)
		// Months left: not due for renewal, so Start orders nothing.
		c.Leaf.NotAfter = time.Now().Add(60 * 24 * time.Hour)
		c.Leaf.SerialNumber = big.NewInt(int64(100 + i))
		der, err := x509.CreateCertificate(rand.Reader, c.Leaf, c.Leaf, c.PrivateKey.(*ecdsa.PrivateKey).Public(), c.PrivateKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, _ := x509.MarshalECPrivateKey(c.PrivateKey.(*ecdsa.PrivateKey))
		serials[name] = c.Leaf.SerialNumber
		for key, b := range map[string][]byte{
			certmagic.StorageKeys.SiteCert(issuerKey, name):       pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
			certmagic.StorageKeys.SitePrivateKey(issuerKey, name): pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}),
			certmagic.StorageKeys.SiteMeta(issuerKey, name):       fmt.Appendf(nil, `{"sans":[%q]}`, name),
		} {
			path := filepath.Join(storage, filepath.FromSlash(key))
			if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	src := fmt.Sprintf(`
[acme]
directory = %q
storage = %q
challenge = "tls-alpn-01"
[frontend.web]
mode = "http"
bind = ["127.0.0.1:8443"]
default_backend = "b"
[[frontend.web.tls]]
acme = ["%s"]
[[backend.b.server]]
address = "127.0.0.1:1"
`, dir, storage, strings.Join(names, `", "`))
	m := newManager(t, src)
	if err := m.Start(); err != nil {
		t.Fatal(err)
	}
	// Read at once, before any handshake: what Start left in memory.
	var missing []string
	for _, name := range names {
		if m.ExpirySeconds(name) <= 0 {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		t.Errorf("after Start: no certificate in memory for %v, though stored", missing)
	}
	c := m.TLSConfig(nil, names)
	for _, name := range names {
		if leaf, _ := handshake(t, c, name, "h2"); leaf == nil || leaf.SerialNumber.Cmp(serials[name]) != 0 {
			t.Errorf("SNI %s: served %v, want the stored certificate %v", name, leaf, serials[name])
		}
	}
	if ok, failed := m.OrdersOK.Load(), m.OrdersFailed.Load(); ok != 0 || failed != 0 {
		t.Errorf("orders ok %d failed %d, want none", ok, failed)
	}
}
