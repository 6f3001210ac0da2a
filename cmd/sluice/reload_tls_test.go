package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sluice/internal/testutil"
)

// writeCert writes a self-signed certificate for name with common name cn.
func writeCert(t *testing.T, certPath, keyPath, name, cn string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		DNSNames:     []string{name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
}

// TestReloadRereadsCertificates: a certificate renewed on disk is served
// after `sluice reload`, without a restart.
func TestReloadRereadsCertificates(t *testing.T) {
	dir := shortDir(t)
	certPath, keyPath := filepath.Join(dir, "www.pem"), filepath.Join(dir, "www.key")
	writeCert(t, certPath, keyPath, "www.example.com", "first")
	web, raw := testutil.FreeAddr(t), testutil.FreeAddr(t)
	file := filepath.Join(dir, "sluice.toml")
	src := lbConfig(dir, web, raw, []*pair{startPair(t, "a1")})
	src = strings.Replace(src, "[frontend.raw]", fmt.Sprintf("[[frontend.web.tls]]\ncert = %q\nkey = %q\n\n[frontend.raw]", certPath, keyPath), 1)
	os.WriteFile(file, []byte(src), 0o644)
	l := startLB(t, binary, file, filepath.Join(dir, "ctl.sock"))

	served := func() string {
		c, err := tls.Dial("tcp", web, &tls.Config{ServerName: "www.example.com", InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].Subject.CommonName
	}
	if cn := served(); cn != "first" {
		t.Fatalf("served %q, want the first certificate", cn)
	}
	writeCert(t, certPath, keyPath, "www.example.com", "renewed")
	l.reload(src)
	if cn := served(); cn != "renewed" {
		t.Fatalf("after reload served %q, want the renewed certificate", cn)
	}
}
