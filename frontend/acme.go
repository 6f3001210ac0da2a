package frontend

import (
	"errors"

	"sluice/acme"
)

// UseACME hands the ACME certificates of m to the http frontends, before
// Serve: a TLS frontend serves the certificates of its acme names and
// answers tls-alpn-01; with http-01, the plain ones answer its
// validations.
func (s *Server) UseACME(m *acme.Manager) error {
	for _, f := range s.Frontends {
		p := f.http
		if p == nil {
			continue
		}
		if m == nil {
			if p.TLS == nil && len(f.cfg.TLS) > 0 {
				// acme names without [acme]: conf refuses them; never
				// serve such a frontend in plain text.
				return errors.New("frontend " + f.Name + ": acme names without an ACME manager")
			}
			continue
		}
		if len(f.cfg.TLS) == 0 {
			if m.HTTP01() {
				p.ACME = m
			}
			continue
		}
		var names []string
		for _, t := range f.cfg.TLS {
			names = append(names, t.ACME...)
		}
		if p.TLS == nil && len(names) == 0 {
			return errors.New("frontend " + f.Name + ": no certificate")
		}
		p.TLS = m.TLSConfig(p.TLS, names)
	}
	return nil
}
