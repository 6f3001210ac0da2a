package conf

import (
	"crypto/tls"
	"crypto/x509"
)

// TLS everywhere (issue 22): TLS to servers ([backend.NAME.tls]), client
// certificates ([frontend.NAME.client_auth]), OCSP stapling and ACME
// certificates ([[frontend.NAME.tls]] ocsp, ocsp_fetch, acme; [acme]).
// Each part is validated in a file of its own (tls_backend.go,
// tls_client.go, tls_ocsp.go, acme.go).

// TLSVerify is how a peer's certificate is checked ("verify").
type TLSVerify string

// Verification modes. Servers: required (default) or none; clients:
// required or optional.
const (
	VerifyRequired TLSVerify = "required"
	VerifyOptional TLSVerify = "optional" // client_auth only: checked when sent
	VerifyNone     TLSVerify = "none"     // backend tls only: encrypted, not authenticated
)

var tlsVerifyNames = []TLSVerify{VerifyRequired, VerifyOptional, VerifyNone}

func (v TLSVerify) String() string { return string(v) }

// UnmarshalText accepts "required", "optional" and "none"; which of them a
// table allows is checked by its validator.
func (v *TLSVerify) UnmarshalText(b []byte) error { return parseName(v, b, tlsVerifyNames) }

// BackendTLS is [backend.NAME.tls]: connections to the backend's servers
// use TLS. PROXY headers (send_proxy) go before the handshake.
type BackendTLS struct {
	Verify     TLSVerify // required (default) or none
	CAFile     string    // roots to verify servers against; "" = the system's
	Roots      *x509.CertPool
	ServerName string // SNI and the name verified; "" = each server's host
	Cert, Key  string // optional client certificate (mutual TLS to servers)
	Pair       *tls.Certificate
	ALPN       []string // http backends: "h2" and/or "http/1.1", in preference order
}

// ClientAuth is [frontend.NAME.client_auth]: ask TLS clients for a
// certificate.
type ClientAuth struct {
	Verify  TLSVerify // required or optional
	CAFile  string
	Pool    *x509.CertPool
	CRLFile string                 // optional
	CRLs    []*x509.RevocationList // every CRL of crl_file, in order
}

// ACME is the [acme] section: certificates obtained and renewed
// automatically for the names of [[frontend.NAME.tls]] acme = [...].
type ACME struct {
	Directory string
	Email     string
	Storage   string         // directory of the account and certificates
	CAFile    string         // roots to trust the ACME server with; "" = the system's
	Roots     *x509.CertPool // CAFile, read at Parse; nil = the system's
	Challenge string         // "tls-alpn-01" (default) or "http-01"
}
