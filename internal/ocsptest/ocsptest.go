// Package ocsptest builds a small PKI for tests of OCSP stapling: a CA, a
// delegated OCSP signer and leaf certificates, with a real `openssl ocsp`
// responder on 127.0.0.1 and OCSP responses written by openssl. Tests
// only.
package ocsptest

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"sluice/internal/testpki"
)

// PKI is a CA in a directory: ca.pem, ca.key, the OCSP signer
// (ocsp.pem, ocsp.key) and openssl's index.txt of the leaves issued.
type PKI struct {
	Dir     string
	CA      *x509.Certificate
	caKey   *ecdsa.PrivateKey
	mu      sync.Mutex
	serial  int64
	index   []string
	planned map[string]int64 // by name: serials listed by Plan, not issued yet
}

// Leaf is a certificate the PKI issued: Chain holds it and the CA
// certificate (PEM), Key its key.
type Leaf struct {
	Name       string
	Chain, Key string // file paths
	Cert       *x509.Certificate
}

// Openssl skips t when the openssl command is missing.
func Openssl(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl is not installed: the OCSP tests need `openssl ocsp` as a responder")
	}
}

// New makes a CA and its OCSP signer in a new temporary directory.
func New(t testing.TB) *PKI {
	t.Helper()
	p := &PKI{Dir: t.TempDir(), serial: 100}
	key := testpki.NewKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "sluice test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(365 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageCRLSign,
	}
	p.CA, p.caKey = testpki.Sign(t, tmpl, key, nil, nil), key
	p.write(t, "ca.pem", testpki.PEMCert(p.CA.Raw))
	p.write(t, "ca.key", testpki.PEMKey(t, key))
	okey := testpki.NewKey(t)
	signer := testpki.Sign(t, &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "sluice test OCSP signer"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageOCSPSigning},
	}, okey, p.CA, key)
	p.write(t, "ocsp.pem", testpki.PEMCert(signer.Raw))
	p.write(t, "ocsp.key", testpki.PEMKey(t, okey))
	p.write(t, "index.txt", nil)
	return p
}

// Plan lists the next certificate for name in index.txt before it is
// issued: a responder reads the index when it starts (its reload on change
// goes by whole seconds), and the certificate needs the responder's URL.
// Issue for name then takes this serial.
func (p *PKI) Plan(t testing.TB, name string, notAfter time.Time, revoked bool) {
	t.Helper()
	p.mu.Lock()
	p.serial++
	if p.planned == nil {
		p.planned = map[string]int64{}
	}
	p.planned[name] = p.serial
	line := fmt.Sprintf("V\t%s\t\t%X\tunknown\t/CN=%s", notAfter.UTC().Format("060102150405Z"), p.serial, name)
	if revoked {
		line = fmt.Sprintf("R\t%s\t%s\t%X\tunknown\t/CN=%s", notAfter.UTC().Format("060102150405Z"),
			time.Now().Add(-time.Minute).UTC().Format("060102150405Z"), p.serial, name)
	}
	p.index = append(p.index, line)
	idx := strings.Join(p.index, "\n") + "\n"
	p.mu.Unlock()
	p.write(t, "index.txt", []byte(idx))
}

// Issue makes a leaf certificate for name (a DNS name) valid until
// notAfter, naming ocspURL ("" for none) as its responder, and lists it in
// index.txt (revoked when revoked is set) unless Plan did.
func (p *PKI) Issue(t testing.TB, name string, notAfter time.Time, ocspURL string, revoked bool) *Leaf {
	t.Helper()
	p.mu.Lock()
	serial, ok := p.planned[name]
	delete(p.planned, name)
	p.mu.Unlock()
	if !ok {
		p.Plan(t, name, notAfter, revoked)
		p.mu.Lock()
		serial = p.planned[name]
		delete(p.planned, name)
		p.mu.Unlock()
	}
	key := testpki.NewKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if ocspURL != "" {
		tmpl.OCSPServer = []string{ocspURL}
	}
	cert := testpki.Sign(t, tmpl, key, p.CA, p.caKey)
	l := &Leaf{Name: name, Cert: cert,
		Chain: filepath.Join(p.Dir, fmt.Sprintf("%d.pem", serial)),
		Key:   filepath.Join(p.Dir, fmt.Sprintf("%d.key", serial))}
	p.write(t, filepath.Base(l.Chain), append(testpki.PEMCert(cert.Raw), testpki.PEMCert(p.CA.Raw)...))
	p.write(t, filepath.Base(l.Key), testpki.PEMKey(t, key))
	return l
}

// Response has openssl answer an OCSP request for leaf from index.txt, as
// a responder would, and writes the DER response to a file whose path it
// returns; the response is valid for validity (at least a minute).
func (p *PKI) Response(t testing.TB, leaf *Leaf, validity time.Duration) string {
	t.Helper()
	req := filepath.Join(p.Dir, leaf.Name+".req")
	out := filepath.Join(p.Dir, leaf.Name+".ocsp.der")
	p.openssl(t, "ocsp", "-issuer", p.path("ca.pem"), "-cert", leaf.Chain, "-reqout", req, "-no_nonce")
	p.openssl(t, "ocsp", "-index", p.path("index.txt"), "-rsigner", p.path("ocsp.pem"), "-rkey", p.path("ocsp.key"),
		"-CA", p.path("ca.pem"), "-reqin", req, "-respout", out, "-nmin", fmt.Sprint(max(1, int(validity/time.Minute))))
	return out
}

// Responder starts `openssl ocsp` serving index.txt on a free port and
// returns its URL (http://127.0.0.1:PORT); it is killed when t ends.
// Responses are valid for validity (at least a minute).
func (p *PKI) Responder(t testing.TB, validity time.Duration) string {
	t.Helper()
	cmd := exec.Command("openssl", "ocsp", "-index", p.path("index.txt"), "-port", "0",
		"-rsigner", p.path("ocsp.pem"), "-rkey", p.path("ocsp.key"), "-CA", p.path("ca.pem"),
		"-nmin", fmt.Sprint(max(1, int(validity/time.Minute))), "-ignore_err")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = cmd.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	logged := make(chan struct{})
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-logged // its log ends with the process: no t.Logf after the test
		cmd.Wait()
	})
	// It says where it listens once it does: "ACCEPT [::]:PORT PID=N".
	accept := regexp.MustCompile(`ACCEPT .*:(\d+) `)
	lines := bufio.NewScanner(stderr)
	var seen []string
	for lines.Scan() {
		seen = append(seen, lines.Text())
		if m := accept.FindStringSubmatch(lines.Text()); m != nil {
			go func() {
				defer close(logged)
				for lines.Scan() {
					t.Logf("openssl ocsp: %s", lines.Text())
				}
			}()
			return "http://127.0.0.1:" + m[1]
		}
	}
	close(logged)
	t.Fatalf("openssl ocsp did not start: %s", strings.Join(seen, "\n"))
	return ""
}

func (p *PKI) path(name string) string { return filepath.Join(p.Dir, name) }

func (p *PKI) openssl(t testing.TB, args ...string) {
	t.Helper()
	out, err := exec.Command("openssl", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func (p *PKI) write(t testing.TB, name string, b []byte) {
	t.Helper()
	if err := os.WriteFile(p.path(name), b, 0o600); err != nil {
		t.Fatal(err)
	}
}
