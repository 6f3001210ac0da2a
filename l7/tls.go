package l7

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"time"
)

// certSet chooses among a frontend's certificates by SNI.
type certSet struct {
	all   []*tls.Certificate
	exact map[string][]*tls.Certificate // "www.example.com"
	wild  map[string][]*tls.Certificate // "*.example.com" stored as ".example.com"
}

// NewTLS returns the server configuration that terminates TLS with certs
// (read and parsed by conf at Parse, so that `sluice check` refuses what a
// worker would): the certificate is chosen by SNI (exact DNS name, then
// wildcard), the first one when nothing matches; ALPN offers h2 and
// http/1.1; TLS 1.2 at least. A reload parses the files again, so a renewed
// certificate goes live with it.
func NewTLS(certs []*tls.Certificate) (*tls.Config, error) {
	if len(certs) == 0 {
		return nil, errors.New("no certificates")
	}
	cs := &certSet{exact: map[string][]*tls.Certificate{}, wild: map[string][]*tls.Certificate{}}
	for _, c := range certs {
		if c == nil || c.Leaf == nil {
			return nil, errors.New("tls: a certificate was not loaded (conf.Parse loads them)")
		}
		cs.all = append(cs.all, c)
		for _, name := range c.Leaf.DNSNames {
			name = strings.ToLower(strings.TrimSuffix(name, "."))
			if rest, ok := strings.CutPrefix(name, "*"); ok && strings.HasPrefix(rest, ".") {
				cs.wild[rest] = append(cs.wild[rest], c)
			} else {
				cs.exact[name] = append(cs.exact[name], c)
			}
		}
	}
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		NextProtos:     []string{"h2", "http/1.1"},
		GetCertificate: cs.get,
	}, nil
}

// get picks the certificate for a ClientHello: among those whose names
// match the SNI (exact before wildcard), the first the client supports
// (ECDSA or RSA, say), else the first that matches, else the default.
func (cs *certSet) get(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	name := strings.ToLower(strings.TrimSuffix(hello.ServerName, "."))
	if name != "" {
		if c := supported(hello, cs.exact[name]); c != nil {
			return c, nil
		}
		if i := strings.IndexByte(name, '.'); i > 0 {
			if c := supported(hello, cs.wild[name[i:]]); c != nil {
				return c, nil
			}
		}
	}
	if c := supported(hello, cs.all); c != nil {
		return c, nil
	}
	return cs.all[0], nil
}

func supported(hello *tls.ClientHelloInfo, certs []*tls.Certificate) *tls.Certificate {
	for _, c := range certs {
		if hello.SupportsCertificate(c) == nil {
			return c
		}
	}
	if len(certs) > 0 {
		return certs[0]
	}
	return nil
}

// handshakeTimeout bounds a TLS handshake: it is part of receiving the
// first request.
func (p *Proxy) handshakeTimeout() time.Duration {
	switch {
	case p.TimeoutHTTPRequest > 0:
		return p.TimeoutHTTPRequest
	case p.TimeoutClient > 0:
		return p.TimeoutClient
	}
	return 10 * time.Second
}

// ServeClient serves one client connection of an http frontend until it
// closes, and closes it: TLS is terminated first when the proxy has a TLS
// config; then HTTP/2 (ALPN "h2", or the h2c preface on a plain frontend
// with H2C) goes to the net/http side, everything else to ServeConn. It
// reports true when it handed the connection on (see ConnInfo.Done).
func (p *Proxy) ServeClient(conn net.Conn, info ConnInfo) (handedOn bool) {
	if p.TLS != nil || p.H2C {
		// These keep their goroutine to the end (see ConnInfo.Done).
		info.Done = nil
	}
	if p.TLS != nil {
		tc := tls.Server(conn, p.TLS)
		start := info.Accepted
		if start.IsZero() {
			start = time.Now()
		}
		ctx, cancel := context.WithDeadline(context.Background(), start.Add(p.handshakeTimeout()))
		err := tc.HandshakeContext(ctx)
		timedOut := ctx.Err() != nil
		cancel()
		if err != nil {
			reason := handshakeReason(err, timedOut)
			p.Counters.Handshakes.Failed[reason].Add(1)
			if p.Log != nil {
				p.Log.Debug("tls handshake failed", "frontend", p.Frontend, "client", info.Client, "reason", HandshakeReasons[reason], "err", err)
			}
			conn.Close()
			return false
		}
		p.Counters.Handshakes.Completed.Add(1)
		info.TLS = true
		cs := tc.ConnectionState()
		info.ALPN, info.SNI = cs.NegotiatedProtocol, cs.ServerName
		if cs.NegotiatedProtocol == "acme-tls/1" {
			tc.Close() // a tls-alpn-01 validation: the handshake was all of it
			return false
		}
		info.Cert = clientCertOf(&cs)
		if cs.NegotiatedProtocol == "h2" {
			p.serveH2(tc, info)
			return false
		}
		p.ServeConn(tc, info)
		return false
	}
	if p.H2C {
		c, h2, ok := p.peekPreface(conn, info)
		if !ok {
			conn.Close()
			return false
		}
		if h2 {
			p.serveH2(c, info)
			return false
		}
		p.serveConn(c, info, true)
		return false
	}
	return p.serveConn(conn, info, false)
}
