package conf

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"time"
)

// rawClientAuth is [frontend.NAME.client_auth].
type rawClientAuth struct {
	Verify  rawClientVerify `toml:"verify"`
	CAFile  string          `toml:"ca_file"`
	CRLFile string          `toml:"crl_file"`
}

type rawClientVerify = choice[TLSVerify, *TLSVerify]

// clientAuth validates [frontend.NAME.client_auth] of frontend f (prefix
// p) and loads its files: the CA pool and the CRL are parsed here, so that
// `sluice check` refuses what a worker would, and a reload reads them again.
func (v *validator) clientAuth(p string, rf *rawFrontend, f *Frontend) {
	rc := rf.ClientAuth
	if rc == nil {
		return
	}
	key := p + ".client_auth"
	ca := &ClientAuth{Verify: rc.Verify.val, CAFile: rc.CAFile, CRLFile: rc.CRLFile}
	switch {
	case rc.Verify.err != nil:
		v.errf(key+".verify", "%v; write \"required\" or \"optional\"", rc.Verify.err)
	case ca.Verify == "":
		ca.Verify = VerifyRequired // the table asks for certificates: required unless said otherwise
	case ca.Verify != VerifyRequired && ca.Verify != VerifyOptional:
		v.errf(key+".verify", "%q is not allowed for clients; write \"required\" (no certificate, no connection) or \"optional\" (checked when sent); to not ask for certificates, remove [%s]", ca.Verify, key)
	}
	if f.Mode != ModeHTTP {
		// TLS is terminated on http frontends only: adding a tls entry
		// here would only be refused next.
		v.errf(key, "client certificates are asked for by TLS http frontends; this one is mode = %q, which does not terminate TLS: set mode = \"http\" with a [[%s.tls]] entry, or remove [%s]", f.Mode, p, key)
	} else if len(f.TLS) == 0 {
		v.errf(key, "client certificates need TLS on this frontend; add a [[%s.tls]] entry with cert and key, or remove [%s]", p, key)
	}
	f.ClientAuth = ca
	if ca.CAFile == "" {
		v.errf(key+".ca_file", "is required: name the PEM file of the CA certificates that sign the client certificates")
		return
	}
	ca.CAFile = v.besideConfig(ca.CAFile)
	cas, err := loadCAFile(ca.CAFile, "the client certificates")
	if err != nil {
		v.errf(key+".ca_file", "%v", err)
		return
	}
	ca.Pool = x509.NewCertPool()
	for _, c := range cas {
		ca.Pool.AddCert(c)
	}
	if ca.CRLFile == "" {
		return
	}
	ca.CRLFile = v.besideConfig(ca.CRLFile)
	crls, err := loadCRLs(ca.CRLFile, cas)
	if err != nil {
		v.errf(key+".crl_file", "%v", err)
		return
	}
	ca.CRLs = crls
	// With a crl_file, a client whose issuer has no CRL in it is refused
	// (l7: CRL_CHECK_ALL, as HAProxy): say so for a CA of ca_file.
	for _, c := range cas {
		if !hasCRL(crls, c) {
			v.warnf(key+".crl_file", "%s has no CRL of %s (in ca_file): clients whose certificates it signs will be refused (reason crl_unavailable); add its CRL to the file, or take the CA out of ca_file",
				ca.CRLFile, c.Subject)
		}
	}
	for _, crl := range crls {
		if !crl.NextUpdate.IsZero() && time.Now().After(crl.NextUpdate) {
			v.warnf(key+".crl_file", "%s: the CRL of %s was due for an update at %s (its next_update): certificates revoked since are not in it; fetch a fresh CRL from the CA and reload",
				ca.CRLFile, crl.Issuer, crl.NextUpdate.UTC().Format(time.RFC3339))
		}
	}
}

// loadCAFile reads the CA certificates of a PEM file (blocks of other
// types, a key beside them, skipped); a file without one is refused: it
// would trust nothing, a typo'd path to a key, say. signs says whose
// certificates the CA signs, for that message.
func loadCAFile(path, signs string) ([]*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read the CA file: %w", err)
	}
	var out []*x509.Certificate
	for n := 1; ; n++ {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue // a key or parameters next to them: not ours to read
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: PEM block %d is not a valid certificate: %w", path, n, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s holds no PEM certificate (-----BEGIN CERTIFICATE-----); name the file of the CA that signs %s", path, signs)
	}
	return out, nil
}

// loadCRLs reads the X.509 CRLs of a file: PEM "X509 CRL" blocks, as many
// as there are CAs (OpenSSL and HAProxy read them all), or one DER CRL.
// Each must be signed by a CA of cas: a CRL of another CA would revoke
// nothing of ours.
func loadCRLs(path string, cas []*x509.Certificate) ([]*x509.RevocationList, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read the CRL: %w", err)
	}
	ders := [][]byte{b}
	if bytes.Contains(b, []byte("-----BEGIN")) {
		ders = nil
		for rest := b; ; {
			var blk *pem.Block
			if blk, rest = pem.Decode(rest); blk == nil {
				break
			}
			if blk.Type == "X509 CRL" {
				ders = append(ders, blk.Bytes)
			}
		}
		if len(ders) == 0 {
			return nil, fmt.Errorf("%s has no PEM block \"X509 CRL\"; write the CRL as PEM (-----BEGIN X509 CRL-----) or DER", path)
		}
	}
	var out []*x509.RevocationList
	for i, der := range ders {
		crl, err := x509.ParseRevocationList(der)
		if err != nil {
			return nil, fmt.Errorf("%s: CRL %d is not an X.509 CRL: %w", path, i+1, err)
		}
		signed := false
		for _, c := range cas {
			if crl.CheckSignatureFrom(c) == nil {
				signed = true
				break
			}
		}
		if !signed {
			return nil, fmt.Errorf("%s: CRL %d (issuer %s) is not signed by a CA of ca_file; use the CRL of the CA that signs the client certificates (for an intermediate CA's CRL, add the intermediate to ca_file)", path, i+1, crl.Issuer)
		}
		out = append(out, crl)
	}
	return out, nil
}

// sameClientAuthFiles reports whether the CA pool and CRL of a and b (read
// from the same paths) have the same contents.
func sameClientAuthFiles(a, b *ClientAuth) bool {
	if (a.Pool == nil) != (b.Pool == nil) || a.Pool != nil && !a.Pool.Equal(b.Pool) {
		return false
	}
	if len(a.CRLs) != len(b.CRLs) {
		return false
	}
	for i := range a.CRLs {
		if !bytes.Equal(a.CRLs[i].Raw, b.CRLs[i].Raw) {
			return false
		}
	}
	return true
}

// hasCRL reports whether crls hold a CRL issued by ca.
func hasCRL(crls []*x509.RevocationList, ca *x509.Certificate) bool {
	for _, crl := range crls {
		if bytes.Equal(crl.RawIssuer, ca.RawSubject) {
			return true
		}
	}
	return false
}
