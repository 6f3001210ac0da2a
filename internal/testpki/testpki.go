// Package testpki makes certificate authorities, certificates and CRLs for
// tests: real X.509 material, generated in the test, written as PEM files.
package testpki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// CA is a certificate authority.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
	PEM  []byte
}

var serial atomic.Int64

// NewKey makes a P-256 key.
func NewKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// Sign makes the certificate of tmpl for key, signed by parent's
// parentKey; a nil parent makes it self-signed.
func Sign(t testing.TB, tmpl *x509.Certificate, key *ecdsa.PrivateKey, parent *x509.Certificate, parentKey crypto.Signer) *x509.Certificate {
	t.Helper()
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// PEMCert is the PEM of a DER certificate.
func PEMCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// PEMKey is the PKCS #8 PEM of k.
func PEMKey(t testing.TB, k *ecdsa.PrivateKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// NewCA makes a self-signed CA named cn.
func NewCA(t testing.TB, cn string) *CA {
	t.Helper()
	k := NewKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial.Add(1)), Subject: pkix.Name{CommonName: cn, Organization: []string{"sluice tests"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	c := Sign(t, tmpl, k, nil, nil)
	return &CA{Cert: c, Key: k, PEM: PEMCert(c.Raw)}
}

// Leaf is an issued certificate with its key.
type Leaf struct {
	Cert    *x509.Certificate
	Pair    tls.Certificate
	CertPEM []byte
	KeyPEM  []byte
}

// Options of an issued certificate; zero values are defaults.
type Options struct {
	Subject  pkix.Name // default: CommonName cn
	DNS      []string
	IPs      []net.IP
	Emails   []string
	URIs     []string
	Server   bool      // server auth (else client auth)
	NotAfter time.Time // default: in a day
}

// Issue makes a certificate for cn signed by the CA.
func (ca *CA) Issue(t testing.TB, cn string, o Options) *Leaf {
	t.Helper()
	k := NewKey(t)
	subj := o.Subject
	if subj.CommonName == "" {
		subj.CommonName = cn
	}
	eku := x509.ExtKeyUsageClientAuth
	if o.Server {
		eku = x509.ExtKeyUsageServerAuth
	}
	na := o.NotAfter
	if na.IsZero() {
		na = time.Now().Add(24 * time.Hour)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial.Add(1) + 1000), Subject: subj,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: na,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{eku},
		DNSNames: o.DNS, IPAddresses: o.IPs, EmailAddresses: o.Emails,
	}
	for _, u := range o.URIs {
		pu, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, pu)
	}
	if na.Before(tmpl.NotBefore) {
		tmpl.NotBefore = na.Add(-time.Hour)
	}
	c := Sign(t, tmpl, k, ca.Cert, ca.Key)
	l := &Leaf{Cert: c, CertPEM: PEMCert(c.Raw), KeyPEM: PEMKey(t, k)}
	l.Pair = tls.Certificate{Certificate: [][]byte{c.Raw}, PrivateKey: k, Leaf: c}
	return l
}

// CRL makes a DER CRL of the CA revoking the certificates given, whose
// next update is at next (zero: in a day).
func (ca *CA) CRL(t testing.TB, next time.Time, revoked ...*x509.Certificate) []byte {
	t.Helper()
	if next.IsZero() {
		next = time.Now().Add(24 * time.Hour)
	}
	tmpl := &x509.RevocationList{Number: big.NewInt(serial.Add(1)), ThisUpdate: time.Now().Add(-2 * time.Hour), NextUpdate: next}
	for _, c := range revoked {
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries,
			x509.RevocationListEntry{SerialNumber: c.SerialNumber, RevocationTime: time.Now().Add(-time.Minute)})
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, ca.Cert, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// CRLPEM is a CRL as PEM.
func CRLPEM(der []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}) }

// Write writes b to name in dir and returns the path.
func Write(t testing.TB, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
