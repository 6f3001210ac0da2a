package frontend

import (
	"context"
	"crypto/tls"

	"sluice/conf"
	"sluice/l7"
)

// servedCerts wraps the certificates of a TLS frontend for the expiry and
// OCSP figures, and makes tc serve the staples ocsp_fetch renews.
func servedCerts(fc *conf.Frontend, tc *tls.Config) ([]*l7.ServedCert, error) {
	var out []*l7.ServedCert
	for _, t := range fc.TLS {
		if t.ACME != nil {
			continue // obtained by ACME: no file certificate (UseACME)
		}
		c, err := l7.NewServedCert(t.Pair, t.OCSPFetch)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	if tc != nil {
		l7.StapleTLS(tc, out)
	}
	return out, nil
}

// TLSCerts lists the certificates of a TLS frontend as served now.
func (f *Frontend) TLSCerts() []*l7.ServedCert { return f.certs }

// startOCSP starts one fetcher per certificate with ocsp_fetch; they stop
// with the server (stopOCSP).
func (s *Server) startOCSP() {
	ctx, cancel := context.WithCancel(context.Background())
	s.ocspStop = cancel
	for _, f := range s.Frontends {
		for _, c := range f.certs {
			if !c.Fetch {
				continue
			}
			s.ocspW.Add(1)
			go func() {
				defer s.ocspW.Done()
				c.Run(ctx, s.log, f.Name)
			}()
		}
	}
}

// stopOCSP stops the fetchers: a server that no longer accepts does no new
// handshakes, and the next worker runs its own.
func (s *Server) stopOCSP() {
	if s.ocspStop != nil {
		s.ocspStop()
	}
}
