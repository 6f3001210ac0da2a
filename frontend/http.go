package frontend

import (
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"

	"sluice/backend"
	"sluice/conf"
	"sluice/l7"
	"sluice/policy"
)

// newHTTPProxy builds the l7 proxy of an http frontend, which asks pol
// (nil: none) about each request.
func newHTTPProxy(fc *conf.Frontend, pol *policy.Frontend, cfgBackends []*conf.Backend, backends map[string]*backend.Backend, log *slog.Logger) (*l7.Proxy, error) {
	p := &l7.Proxy{
		Policy:             pol,
		Frontend:           fc.Name,
		Default:            backends[fc.DefaultBackend],
		TimeoutClient:      fc.TimeoutClient,
		TimeoutHTTPRequest: fc.TimeoutHTTPRequest,
		TimeoutTunnel:      fc.TimeoutTunnel,
		MaxHeaderBytes:     fc.MaxHeaderBytes,
		MaxHeaderCount:     fc.MaxHeaderCount,
		Log:                log,
		Backends:           map[*backend.Backend]l7.BackendOptions{},
		H2C:                fc.H2C,
	}
	if len(fc.TLS) > 0 {
		var certs []*tls.Certificate
		for _, t := range fc.TLS {
			if t.ACME == nil { // acme names: see UseACME
				certs = append(certs, t.Pair)
			}
		}
		tc, err := l7.NewTLS(certs)
		if len(certs) == 0 {
			tc, err = nil, nil
		}
		if err != nil {
			return nil, err
		}
		if fc.ClientAuth != nil {
			tc = l7.WithClientAuth(tc, fc.ClientAuth)
			p.ClientAuth = true
		}
		p.TLS = tc
	}
	for _, bc := range cfgBackends {
		if b := backends[bc.Name]; b != nil {
			proto := bc.Proto
			if bc.HTTP2() {
				proto = conf.ProtoH2C // HTTP/2 first; over TLS when alpn lists "h2" first (with "http/1.1": per server, l7/alpn.go)
			}
			p.Backends[b] = l7.BackendOptions{
				PoolMaxIdle:     bc.PoolMaxIdle,
				PoolIdleTimeout: bc.PoolIdleTimeout,
				Proto:           proto,
				SendProxy:       bc.SendProxy,
			}
		}
	}
	if len(fc.Bind) > 0 {
		if _, port, err := net.SplitHostPort(fc.Bind[0]); err == nil {
			p.Port = port
		}
	}
	for _, r := range fc.Routes {
		lr := l7.Route{Host: r.Host, PathPrefix: r.PathPrefix, Backend: backends[r.Backend]}
		for k, v := range r.Header {
			lr.Header = append(lr.Header, [2]string{k, v})
		}
		p.Routes = append(p.Routes, lr)
	}
	if len(fc.ErrorBodies) > 0 {
		p.ErrorPages = fc.ErrorBodies // read at conf.Parse
	}
	if fc.AccessLog {
		var w io.Writer = os.Stdout
		if fc.AccessLogFile != "" {
			f, err := os.OpenFile(fc.AccessLogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
			if err != nil {
				return nil, fmt.Errorf("access_log_file: %w", err)
			}
			w = f
		}
		p.Access = l7.NewAccessLog(w, fc.AccessLogFormat)
	}
	return p, nil
}

// serveHTTP serves an accepted connection of an http frontend. It reports
// true when l7 handed the connection on to another goroutine (a keep-alive
// client's wait for its next request), whose end calls s.closed.
func (s *Server) serveHTTP(f *Frontend, conn net.Conn, m *connMeta) bool {
	raw, client, passed := m.conn, m.client.Addr(), m.passed
	return f.http.ServeClient(conn, l7.ConnInfo{
		Accepted: m.accepted,
		Client:   m.client,
		Local:    m.local,
		ConnID:   m.id,
		Done: func() {
			if passed {
				f.policy.Closed(client)
			}
			s.closed(f, raw)
		},
	})
}
