package conf

import (
	"crypto/x509"
	"strings"
)

// [backend.NAME.tls]: TLS to the backend's servers (issue 22, part tls-be).

type rawBackendTLS struct {
	Verify     rawVerify `toml:"verify"`
	CAFile     string    `toml:"ca_file"`
	ServerName string    `toml:"server_name"`
	Cert       string    `toml:"cert"`
	Key        string    `toml:"key"`
	ALPN       []string  `toml:"alpn"`
}

type rawVerify = choice[TLSVerify, *TLSVerify]

// ALPN protocol names a backend may offer.
const (
	ALPNH2     = "h2"
	ALPNHTTP11 = "http/1.1"
)

// HTTP2 reports whether the backend's requests start on the HTTP/2 path:
// proto = "h2c", or TLS whose alpn lists "h2" first (sluice's own HTTP/2
// client over the TLS connection). With "http/1.1" in the list too, a
// server whose handshake chose it is spoken to in HTTP/1.1 (l7/alpn.go);
// alone, a server that does not choose h2 is a failed connect.
func (b *Backend) HTTP2() bool {
	return b.Proto == ProtoH2C || b.TLS != nil && len(b.TLS.ALPN) > 0 && b.TLS.ALPN[0] == ALPNH2
}

// backendTLS checks and loads [backend.NAME.tls] (p is "backend.NAME"):
// the CA file and the client certificate are read here, at Parse, so that
// `sluice check` refuses what the worker would fail on.
func (v *validator) backendTLS(p string, rt *rawBackendTLS) *BackendTLS {
	if rt == nil {
		return nil
	}
	p += ".tls"
	t := &BackendTLS{Verify: rt.Verify.val, ServerName: rt.ServerName}
	switch {
	case rt.Verify.err != nil:
		v.errf(p+".verify", "%q is not one of \"required\", \"none\"", t.Verify)
	case t.Verify == "":
		t.Verify = VerifyRequired
	case t.Verify == VerifyOptional:
		v.errf(p+".verify", "\"optional\" is for client certificates; a server's is checked (\"required\") or not (\"none\")")
	}
	if rt.CAFile != "" {
		t.CAFile = v.besideConfig(rt.CAFile)
		if pool, err := loadRoots(t.CAFile, "the servers' certificates"); err != nil {
			v.errf(p+".ca_file", "%v", err)
		} else {
			t.Roots = pool
		}
	} else if v.defined(p + ".ca_file") {
		v.errf(p+".ca_file", "is empty; name a PEM file of CA certificates, or remove the key for the system's roots")
	}
	if rt.CAFile != "" && t.Verify == VerifyNone {
		v.warnf(p+".ca_file", "verify = \"none\": the servers' certificates are not checked, so ca_file is not used; set verify = \"required\" or remove ca_file")
	}
	if strings.ContainsAny(t.ServerName, " \t/:") || t.ServerName == "" && v.defined(p+".server_name") {
		v.errf(p+".server_name", "%q is not a host name; write the name the servers' certificates carry, like \"api.internal\", or remove the key for each server's host", t.ServerName)
	}
	switch {
	case rt.Cert != "" && rt.Key != "":
		t.Cert, t.Key = v.besideConfig(rt.Cert), v.besideConfig(rt.Key)
		if pair, err := LoadKeyPair(t.Cert, t.Key); err != nil {
			v.errf(p+".cert", "%v", err)
		} else {
			t.Pair = pair
			if pair.Leaf != nil {
				v.certExpiry(p+".cert", t.Cert, pair.Leaf)
			}
		}
	case rt.Cert != "":
		v.errf(p+".key", "cert is set but key is not; a client certificate needs both cert and key, or neither")
	case rt.Key != "":
		v.errf(p+".cert", "key is set but cert is not; a client certificate needs both cert and key, or neither")
	}
	seen := map[string]bool{}
	for _, a := range rt.ALPN {
		switch {
		case a != ALPNH2 && a != ALPNHTTP11:
			v.errf(p+".alpn", "%q is not a protocol sluice speaks to servers; use \"h2\" and/or \"http/1.1\"", a)
		case seen[a]:
			v.errf(p+".alpn", "%q is listed twice; list each protocol once", a)
		}
		seen[a] = true
	}
	if len(rt.ALPN) == 0 && v.defined(p+".alpn") {
		v.errf(p+".alpn", "is empty; list [\"h2\"] or [\"http/1.1\"], or remove the key")
	}
	t.ALPN = rt.ALPN
	return t
}

// backendTLSMode checks what depends on the backend's settled mode.
func (v *validator) backendTLSMode(b *Backend) {
	if b.TLS == nil {
		return
	}
	p := "backend." + b.Name + ".tls"
	if b.DNS != nil && b.TLS.ServerName == "" && b.TLS.Verify == VerifyRequired {
		// Discovered servers are IP addresses: the name checked would be
		// the IP, which certificates rarely carry, and no SNI goes out.
		name := strings.TrimSuffix(b.DNS.Name, ".")
		for strings.HasPrefix(name, "_") && strings.Contains(name, ".") { // SRV: _service._proto.name
			_, name, _ = strings.Cut(name, ".")
		}
		v.warnf(p+".server_name", "the servers found by DNS are IP addresses: without server_name their certificates must carry the IP as a SAN and no SNI is sent; write server_name = %q or the name their certificates carry", name)
	}
	switch b.Mode {
	case ModeUDP:
		v.errf(p, "TLS to servers is for tcp and http backends; a udp backend has none (DTLS is not supported): remove the table")
	case ModeTCP:
		if len(b.TLS.ALPN) > 0 {
			v.errf(p+".alpn", "alpn chooses the HTTP version and needs an http backend; a tcp backend relays bytes: remove it")
		}
	case ModeHTTP:
		if b.Proto == ProtoH2C {
			v.errf("backend."+b.Name+".proto", "\"h2c\" is HTTP/2 without TLS, but [%s] is set; for HTTP/2 over TLS write alpn = [\"h2\"] in it and remove proto", p)
		}
	}
}

// loadRoots reads a PEM file of CA certificates into a pool (loadCAFile);
// signs says whose certificates they sign, for the message of a file with
// none.
func loadRoots(path, signs string) (*x509.CertPool, error) {
	cas, err := loadCAFile(path, signs)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	for _, c := range cas {
		pool.AddCert(c)
	}
	return pool, nil
}
