package l7

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"sluice/conf"
)

// Client certificates ([frontend.NAME.client_auth]) and the handshake
// counters of TLS frontends.

// ClientCert is what servers are told of a connection's verified client
// certificate, computed once at the handshake: every request of the
// connection sends the same three values.
type ClientCert struct {
	Subject     string // RFC 2253 string of the subject
	SAN         string // "DNS:a, IP:b, email:c, URI:d"
	Fingerprint string // SHA-256 of the leaf's DER, lower-case hex
}

// certNames are the headers that carry ClientCert to servers. Client-sent
// copies are always dropped (isForwarding), even on frontends that do not
// ask for certificates: a server may trust them.
var (
	certNames      = [3]string{"X-Client-Cert-Subject", "X-Client-Cert-SAN", "X-Client-Cert-Fingerprint"}
	certNamesLower = [3]string{"x-client-cert-subject", "x-client-cert-san", "x-client-cert-fingerprint"}
)

func (cc *ClientCert) values() [3]string { return [3]string{cc.Subject, cc.SAN, cc.Fingerprint} }

// isClientCertHeader reports whether name is one of certNames, with '_'
// taken for '-': CGI-style servers (PHP-FPM, WSGI, CGI) read both
// X_Client_Cert_Subject and X-Client-Cert-Subject as
// HTTP_X_CLIENT_CERT_SUBJECT, so a client's copy in either spelling could
// pass for sluice's.
func isClientCertHeader(name []byte) bool {
	// All three start with "x-client-cert-": one compare rules out the
	// usual header at once.
	const prefix = "x-client-cert-"
	if len(name) <= len(prefix) || !cgiEqualFold(name[:len(prefix)], prefix) {
		return false
	}
	for _, n := range certNamesLower {
		if cgiEqualFold(name, n) {
			return true
		}
	}
	return false
}

// cgiEqualFold reports whether b equals the lower-case s ignoring ASCII
// case, '_' in b matching '-' in s.
func cgiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		c := b[i]
		switch {
		case 'A' <= c && c <= 'Z':
			c += 'a' - 'A'
		case c == '_':
			c = '-'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

// appendClientCert appends the client certificate headers of cc to an
// HTTP/1 head, each line ended by CRLF; nothing when cc is nil.
func appendClientCert(b []byte, cc *ClientCert) []byte {
	if cc == nil {
		return b
	}
	for i, v := range cc.values() {
		b = append(b, certNames[i]...)
		b = append(b, ": "...)
		b = append(b, v...)
		b = append(b, "\r\n"...)
	}
	return b
}

// clientCertOf is the ClientCert of a handshake's verified chain; nil
// when the client sent no certificate (or none was asked for).
func clientCertOf(cs *tls.ConnectionState) *ClientCert {
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return nil
	}
	leaf := cs.VerifiedChains[0][0]
	sum := sha256.Sum256(leaf.Raw)
	return &ClientCert{Subject: headerSafe(leaf.Subject.String()), SAN: sanOf(leaf), Fingerprint: hex.EncodeToString(sum[:])}
}

// sanOf lists the subject alternative names of c as OpenSSL prints them.
func sanOf(c *x509.Certificate) string {
	var b strings.Builder
	add := func(kind, v string) {
		if b.Len() > 0 {
			b.WriteString(", ")
		}
		b.WriteString(kind)
		b.WriteString(v)
	}
	for _, n := range c.DNSNames {
		add("DNS:", n)
	}
	for _, ip := range c.IPAddresses {
		add("IP:", ip.String())
	}
	for _, e := range c.EmailAddresses {
		add("email:", e)
	}
	for _, u := range c.URIs {
		add("URI:", u.String())
	}
	return headerSafe(b.String())
}

// headerSafe escapes the control characters of s (CR and LF above all:
// a certificate's names are the client's text) as \XX, the hex escape of
// RFC 4514, so that a value never splits or ends a header.
func headerSafe(s string) string {
	i := strings.IndexFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f })
	if i < 0 {
		return s
	}
	const hexd = "0123456789abcdef"
	b := []byte(s[:i])
	for j := i; j < len(s); j++ {
		if c := s[j]; c < 0x20 || c == 0x7f {
			b = append(b, '\\', hexd[c>>4], hexd[c&15])
		} else {
			b = append(b, c)
		}
	}
	return string(b)
}

// Reasons a TLS handshake failed, the label of its counter.
const (
	hsNoCert    = iota // client_auth required, no certificate sent
	hsBadCert          // a certificate that is not valid for a client (usage, signature, name constraints…)
	hsUnknownCA        // not signed by a CA of ca_file
	hsRevoked          // listed in crl_file
	hsNoCRL            // crl_file holds no CRL in force (none, or past its next update) for an issuer of the chain
	hsExpired          // outside its validity period
	hsProtocol         // TLS itself failed: no common version or cipher, a bad record, an alert from the client
	hsTimeout          // not over within the handshake timeout
	hsOther            // the connection ended or broke
	numHandshakeReasons
)

// HandshakeReasons name the failure reasons, in counter order.
var HandshakeReasons = [numHandshakeReasons]string{"no_cert", "bad_cert", "unknown_ca", "revoked", "crl_unavailable", "expired", "protocol", "timeout", "other"}

// HandshakeCounters are a TLS frontend's handshakes.
type HandshakeCounters struct {
	Completed atomic.Uint64
	Failed    [numHandshakeReasons]atomic.Uint64 // by reason, as HandshakeReasons
}

// certError is a client certificate refused by sluice's own checks.
type certError struct{ reason int }

func (e *certError) Error() string {
	switch e.reason {
	case hsNoCert:
		return "tls: client_auth requires a client certificate, none was sent"
	case hsNoCRL:
		return "tls: crl_file holds no CRL in force (none, or past its next update) for an issuer of the client's certificate chain"
	}
	return "tls: client certificate " + HandshakeReasons[e.reason]
}

var (
	errNoCert  = &certError{hsNoCert}
	errRevoked = &certError{hsRevoked}
	errNoCRL   = &certError{hsNoCRL}
)

// handshakeReason classifies the error of a failed handshake; timedOut
// says that its deadline passed.
func handshakeReason(err error, timedOut bool) int {
	var ce *certError
	if errors.As(err, &ce) {
		return ce.reason
	}
	var ve *tls.CertificateVerificationError
	if errors.As(err, &ve) {
		var ua x509.UnknownAuthorityError
		var ci x509.CertificateInvalidError
		switch {
		case errors.As(ve.Err, &ua):
			return hsUnknownCA
		case errors.As(ve.Err, &ci) && ci.Reason == x509.Expired:
			return hsExpired
		}
		return hsBadCert
	}
	var ne net.Error
	if timedOut || errors.As(err, &ne) && ne.Timeout() {
		return hsTimeout
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		return hsOther
	}
	return hsProtocol
}

// WithClientAuth returns a copy of tc (NewTLS) that asks clients for a
// certificate as ca says: crypto/tls verifies a certificate that is sent
// against ca.Pool (VerifyClientCertIfGiven); VerifyConnection then refuses
// a missing one when verify is required, and, with a crl_file, one that a
// CRL revokes or whose issuer has no CRL in force (ca.CRLs). One hook does
// all so that each refusal carries its reason for the counters
// (crypto/tls's own "no certificate" error is text only).
func WithClientAuth(tc *tls.Config, ca *conf.ClientAuth) *tls.Config {
	tc = tc.Clone()
	tc.ClientAuth = tls.VerifyClientCertIfGiven
	tc.ClientCAs = ca.Pool
	required := ca.Verify != conf.VerifyOptional
	crl := newRevoked(ca.CRLs)
	tc.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			if required {
				return errNoCert
			}
			return nil
		}
		return crl.check(cs.VerifiedChains, time.Now())
	}
	return tc
}

// revoked is crl_file's CRLs by issuer, built once per worker; nil
// without a crl_file.
type revoked map[string]*issuerCRL // raw issuer subject -> its CRL

type issuerCRL struct {
	serials    map[string]struct{}
	nextUpdate time.Time // zero: none given
}

func newRevoked(crls []*x509.RevocationList) revoked {
	var r revoked
	for _, crl := range crls {
		if r == nil {
			r = revoked{}
		}
		ic := r[string(crl.RawIssuer)]
		if ic == nil {
			ic = &issuerCRL{serials: make(map[string]struct{}, len(crl.RevokedCertificateEntries)), nextUpdate: crl.NextUpdate}
			r[string(crl.RawIssuer)] = ic
		}
		if crl.NextUpdate.After(ic.nextUpdate) {
			ic.nextUpdate = crl.NextUpdate // two CRLs of one issuer: the fresher one's date
		}
		for _, e := range crl.RevokedCertificateEntries {
			ic.serials[string(e.SerialNumber.Bytes())] = struct{}{}
		}
	}
	return r
}

// check refuses a client whose chain a CRL revokes (leaf or intermediate),
// or has a certificate whose issuer has no CRL in the file, or only one
// past its next update: OpenSSL's CRL_CHECK_ALL, as HAProxy's crl-file
// sets it (a certificate nobody can vouch for is not let through). The
// root is not checked: ca_file trusts it. The serials are positive
// (RFC 5280 §4.1.2.2), so their bytes identify them. With several
// verified chains, one revoked certificate refuses the client, else one
// chain with every CRL in force lets it in.
func (r revoked) check(chains [][]*x509.Certificate, now time.Time) error {
	if r == nil {
		return nil
	}
	var unvouched error
	for _, chain := range chains {
		chainErr := error(nil)
		for _, c := range chain[:max(len(chain)-1, 0)] {
			ic := r[string(c.RawIssuer)]
			switch {
			case ic == nil:
				chainErr = errNoCRL
				continue
			case c.SerialNumber != nil:
				if _, ok := ic.serials[string(c.SerialNumber.Bytes())]; ok {
					return errRevoked
				}
			}
			if !ic.nextUpdate.IsZero() && now.After(ic.nextUpdate) {
				chainErr = errNoCRL
			}
		}
		if chainErr == nil {
			return nil
		}
		unvouched = chainErr
	}
	return unvouched
}
