package conf

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"math"
	"net/url"
	"os"
	"time"

	"golang.org/x/crypto/ocsp"
)

// OCSP stapling and certificate expiry ([[frontend.NAME.tls]] ocsp,
// ocsp_fetch; issue 22).

// CertExpiryWarn is how long before NotAfter `check` (and every start and
// reload) warns about a certificate.
const CertExpiryWarn = 14 * 24 * time.Hour

// MaxOCSPResponse bounds an OCSP response, read from a file or a
// responder: real ones are a few kilobytes.
const MaxOCSPResponse = 64 << 10

// now is the clock of the expiry checks; tests move it.
var now = time.Now

// tlsOCSP checks the expiry of frontend f's certificates (prefix p) and
// loads and checks their ocsp files; tlsFiles has loaded the pairs.
func (v *validator) tlsOCSP(p string, f *Frontend) {
	for i := range f.TLS {
		t := &f.TLS[i]
		key := fmt.Sprintf("%s.tls.%d", p, i)
		if t.Pair == nil || t.Pair.Leaf == nil {
			continue // not loaded: reported already
		}
		v.certExpiry(key+".cert", t.Cert, t.Pair.Leaf)
		issuer, ierr := Issuer(t.Pair)
		if t.OCSPFetch {
			switch {
			case len(t.Pair.Leaf.OCSPServer) == 0:
				v.errf(key+".ocsp_fetch", "the certificate in %s names no OCSP responder (no OCSP URL in its Authority Information Access); remove ocsp_fetch, or staple a response from a file with ocsp", t.Cert)
			case ierr != nil:
				v.errf(key+".ocsp_fetch", "%v", ierr)
			default:
				if u, err := url.Parse(t.Pair.Leaf.OCSPServer[0]); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
					v.errf(key+".ocsp_fetch", "the certificate in %s names the OCSP responder %q, which is not an http:// or https:// URL; remove ocsp_fetch, or staple a response from a file with ocsp", t.Cert, t.Pair.Leaf.OCSPServer[0])
				}
			}
		}
		if t.OCSP == "" {
			continue
		}
		t.OCSP = v.besideConfig(t.OCSP)
		if ierr != nil {
			v.errf(key+".ocsp", "%v", ierr)
			continue
		}
		der, err := readBounded(t.OCSP, MaxOCSPResponse)
		if err != nil {
			v.errf(key+".ocsp", "%v", err)
			continue
		}
		r, err := CheckOCSP(der, t.Pair.Leaf, issuer)
		if err != nil {
			v.errf(key+".ocsp", "%s: %v; fetch a response for this certificate (openssl ocsp -issuer CA.pem -cert CERT.pem -url URL -respout %s), or remove ocsp", t.OCSP, err, t.OCSP)
			continue
		}
		if !r.NextUpdate.IsZero() && !now().Before(r.NextUpdate) {
			// An expired staple fails clients that check it (Firefox):
			// better none, and the client asks the responder itself.
			v.warnf(key+".ocsp", "%s expired at %s (its next update); it is not stapled: write a fresh response and reload, or set ocsp_fetch = true", t.OCSP, r.NextUpdate.UTC().Format(time.RFC3339))
			continue
		}
		t.OCSPStaple = der
		t.Pair.OCSPStaple = der // the pair was loaded for this entry alone
	}
}

// certExpiry warns (key names the setting, file the certificate's file)
// about a certificate that expired or expires within CertExpiryWarn. An
// expired certificate is a warning, not an error: a worker serving it is
// better than a reload refused in the middle of an incident, and clients
// report it clearly. Other TLS settings (client certificates to servers)
// call it too.
func (v *validator) certExpiry(key, file string, leaf *x509.Certificate) {
	left := leaf.NotAfter.Sub(now())
	switch {
	case left <= 0:
		v.warnf(key, "the certificate in %s (%s) expired at %s; renew it and reload", file, CertName(leaf), leaf.NotAfter.UTC().Format(time.RFC3339))
	case left < CertExpiryWarn:
		v.warnf(key, "the certificate in %s (%s) expires in %d days, at %s; renew it and reload", file, CertName(leaf), int(math.Ceil(left.Hours()/24)), leaf.NotAfter.UTC().Format(time.RFC3339))
	}
}

// CheckOCSP parses the OCSP response der for leaf, issued by issuer, and
// refuses one that is not for leaf, not signed by issuer (or a responder
// it certified), or whose status is not good.
func CheckOCSP(der []byte, leaf, issuer *x509.Certificate) (*ocsp.Response, error) {
	r, err := ocsp.ParseResponseForCert(der, leaf, issuer)
	if err != nil {
		return nil, fmt.Errorf("not a valid OCSP response for the certificate %s (serial %x) from its issuer: %w", CertName(leaf), leaf.SerialNumber, err)
	}
	switch r.Status {
	case ocsp.Good:
		return r, nil
	case ocsp.Revoked:
		return r, fmt.Errorf("the OCSP response says the certificate %s (serial %x) was revoked at %s: replace the certificate", CertName(leaf), leaf.SerialNumber, r.RevokedAt.UTC().Format(time.RFC3339))
	}
	return r, fmt.Errorf("the OCSP response says the status of the certificate %s (serial %x) is unknown to the responder", CertName(leaf), leaf.SerialNumber)
}

// Issuer is the certificate that signed pair's leaf: the next one in the
// chain, which OCSP requests and responses are checked against.
func Issuer(pair *tls.Certificate) (*x509.Certificate, error) {
	if len(pair.Certificate) < 2 {
		return nil, fmt.Errorf("the certificate file holds only the certificate of %s: append the certificate of the CA that issued it (OCSP responses are checked against it)", CertName(pair.Leaf))
	}
	issuer, err := x509.ParseCertificate(pair.Certificate[1])
	if err != nil {
		return nil, fmt.Errorf("the second certificate of the chain of %s: %v", CertName(pair.Leaf), err)
	}
	if err := pair.Leaf.CheckSignatureFrom(issuer); err != nil {
		return nil, fmt.Errorf("the second certificate of the chain (%s) did not issue %s: put the issuing CA's certificate right after the certificate", issuer.Subject.CommonName, CertName(pair.Leaf))
	}
	return issuer, nil
}

// CertName names a certificate in logs, warnings and metric labels: its
// first DNS name, else its subject's common name, else its serial number.
func CertName(leaf *x509.Certificate) string {
	switch {
	case leaf == nil:
		return ""
	case len(leaf.DNSNames) > 0:
		return leaf.DNSNames[0]
	case leaf.Subject.CommonName != "":
		return leaf.Subject.CommonName
	}
	return fmt.Sprintf("serial %x", leaf.SerialNumber)
}

// readBounded reads the file at path, refusing one over max bytes.
func readBounded(path string, max int64) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if st.Size() > max {
		return nil, fmt.Errorf("%s is %d bytes, more than an OCSP response (%d at most): is it the right file?", path, st.Size(), max)
	}
	return os.ReadFile(path)
}
