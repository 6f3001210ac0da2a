// Package acme obtains and renews the certificates of [[frontend.NAME.tls]]
// acme = [...] from the ACME server of [acme], with certmagic: it serves
// them to the TLS frontends (a GetCertificate hook), answers tls-alpn-01
// on those frontends and http-01 on the plain http ones, and keeps the
// account and certificates in storage, so that the next worker of a
// reload serves them without a new order. Renewal runs in the worker, no
// reload needed; storage locks keep two workers from ordering one name
// twice.
package acme

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/certmagic"

	"sluice/conf"
)

// ALPN is the protocol a tls-alpn-01 validation offers (RFC 8737).
const ALPN = "acme-tls/1"

// Options are settings tests and embedders change; the zero value is what
// sluice runs with.
type Options struct {
	// RenewalWindowRatio is the share of a certificate's lifetime left
	// when it is renewed; 0: certmagic's default (1/3).
	RenewalWindowRatio float64
	// RenewCheckInterval is how often the maintenance looks for
	// certificates due; 0: certmagic's default (10 minutes).
	RenewCheckInterval time.Duration
	// DisableARI ignores the server's ACME Renewal Information, so that
	// RenewalWindowRatio alone decides (tests).
	DisableARI bool
}

// Manager is one worker's ACME certificates.
type Manager struct {
	names  []string
	magic  *certmagic.Config
	issuer *certmagic.ACMEIssuer
	cache  *certmagic.Cache
	http01 bool
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc
	stop   sync.Once

	// OrdersOK and OrdersFailed count orders (renewals included) that
	// ended with a certificate, or failed: sluice_acme_orders_total.
	OrdersOK, OrdersFailed atomic.Uint64
}

// New prepares the certificates of cfg's acme names (nil when cfg has no
// [acme] or no names). Nothing is ordered or loaded before Start.
func New(cfg *conf.Config, log *slog.Logger, opts Options) (*Manager, error) {
	a := cfg.ACME
	names := cfg.ACMENames()
	if a == nil || len(names) == 0 {
		return nil, nil
	}
	m := &Manager{names: names, http01: a.Challenge == conf.ChallengeHTTP, log: log.With("part", "acme")}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	zl := zapLogger(m.log.Handler())
	m.cache = certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert:   func(certmagic.Certificate) (*certmagic.Config, error) { return m.magic, nil },
		RenewCheckInterval: opts.RenewCheckInterval,
		Logger:             zl,
	})
	m.magic = certmagic.New(m.cache, certmagic.Config{
		RenewalWindowRatio: opts.RenewalWindowRatio,
		Storage:            &certmagic.FileStorage{Path: a.Storage},
		Logger:             zl,
		OnEvent:            m.onEvent,
		DisableARI:         opts.DisableARI,
		// Stapling belongs to [[frontend.NAME.tls]] ocsp; certmagic's
		// own would fetch from the responder behind sluice's back.
		OCSP: certmagic.OCSPConfig{DisableStapling: true},
	})
	iss := certmagic.ACMEIssuer{
		CA:                      a.Directory,
		TestCA:                  a.Directory, // no fallback to another CA's staging
		Email:                   a.Email,
		Agreed:                  true,
		TrustedRoots:            a.Roots,
		DisableHTTPChallenge:    a.Challenge != conf.ChallengeHTTP,
		DisableTLSALPNChallenge: a.Challenge != conf.ChallengeTLSALPN,
		Logger:                  zl,
	}
	// certmagic's solvers open a listener on the challenge port unless
	// one answers there already: point them at sluice's own frontend,
	// whose listener holds that address, so they never open one.
	if host, port, ok := challengeAddr(cfg, m.http01); ok {
		p, _ := strconv.Atoi(port)
		iss.ListenHost = host
		if m.http01 {
			iss.AltHTTPPort = p
		} else {
			iss.AltTLSALPNPort = p
		}
	}
	m.issuer = certmagic.NewACMEIssuer(m.magic, iss)
	m.magic.Issuers = []certmagic.Issuer{m.issuer}
	return m, nil
}

// challengeAddr is the address of the frontend that answers the challenge:
// the first TLS frontend (tls-alpn-01) or plain http frontend (http-01).
func challengeAddr(cfg *conf.Config, http01 bool) (host, port string, ok bool) {
	for _, f := range cfg.Frontends {
		if f.Mode != conf.ModeHTTP || len(f.Bind) == 0 || (len(f.TLS) > 0) == http01 {
			continue
		}
		host, port, err := net.SplitHostPort(f.Bind[0])
		if err == nil {
			return host, port, true
		}
	}
	return "", "", false
}

// Names are the names managed, each once.
func (m *Manager) Names() []string { return m.names }

// HTTP01 reports whether challenges are answered on plain http frontends.
func (m *Manager) HTTP01() bool { return m.http01 }

// Start loads the certificates in storage (before it returns: a worker
// after a reload serves them at once) and orders, in the background, those
// missing or due. It never waits for the ACME server.
func (m *Manager) Start() error {
	// ManageAsync loads a stored certificate in a goroutine of its own,
	// after it has returned: a new worker's first handshakes would fail
	// (and its log say nothing is stored) until that goroutine ran. Load
	// them here; ManageAsync then leaves those alone and orders the rest.
	loaded := false
	for _, n := range m.names {
		// Other errors than none stored: ManageAsync tries again and logs.
		if _, err := m.magic.CacheManagedCertificate(m.ctx, n); err == nil {
			loaded = true
		}
	}
	if err := m.magic.ManageAsync(m.ctx, m.names); err != nil {
		return fmt.Errorf("acme: %w", err)
	}
	if loaded {
		// ManageAsync checks a certificate it loads itself for renewal
		// (and ARI) at once, but not one already cached: do that check
		// now rather than at the maintenance's first tick, 10 minutes on.
		go func() {
			if err := m.cache.RenewManagedCertificates(m.ctx); err != nil && m.ctx.Err() == nil {
				m.log.Warn("acme: renewal check at start failed; retried by the maintenance", "err", err)
			}
		}()
	}
	for _, n := range m.names {
		if m.expiry(n).IsZero() {
			m.log.Info("acme: no certificate yet, ordering in the background; until it is issued a handshake for it gets the frontend's file certificate, or fails", "name", n)
		}
	}
	return nil
}

// Stop ends the orders in progress and the renewal maintenance; a second
// call does nothing.
func (m *Manager) Stop() {
	m.stop.Do(func() {
		m.cancel()
		m.cache.Stop()
	})
}

func (m *Manager) onEvent(_ context.Context, event string, data map[string]any) error {
	switch event {
	case "cert_obtained":
		m.OrdersOK.Add(1)
		m.log.Info("acme: certificate obtained", "name", data["identifier"], "renewal", data["renewal"])
	case "cert_failed":
		m.OrdersFailed.Add(1)
		m.log.Warn("acme: order failed; retried later", "name", data["identifier"], "renewal", data["renewal"], "err", data["error"])
	}
	return nil
}

// expiry is NotAfter of the certificate served for name (zero: none yet).
func (m *Manager) expiry(name string) time.Time {
	var t time.Time
	for _, c := range m.cache.AllMatchingCertificates(name) {
		if c.Leaf != nil && c.Leaf.NotAfter.After(t) {
			t = c.Leaf.NotAfter
		}
	}
	return t
}

// ExpirySeconds is the seconds until the certificate of name expires; 0
// while there is none (sluice_tls_cert_expiry_seconds).
func (m *Manager) ExpirySeconds(name string) float64 {
	t := m.expiry(name)
	if t.IsZero() {
		return 0
	}
	return time.Until(t).Seconds()
}

// TLSConfig wraps the server configuration of a TLS frontend: handshakes
// for names (this frontend's acme names) get their ACME certificate,
// tls-alpn-01 validations (ALPN acme-tls/1 alone) their challenge
// certificate, everything else base's certificates. base may be nil (a
// frontend with acme names only): its settings are then NewTLS's, and the
// first name's certificate is the fallback.
func (m *Manager) TLSConfig(base *tls.Config, names []string) *tls.Config {
	var c *tls.Config
	var fallback func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	if base != nil {
		c = base.Clone()
		fallback = base.GetCertificate
	} else {
		c = &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"}}
	}
	if !m.http01 {
		// Chosen only when the client offers nothing else: Go picks the
		// first of the server's protocols the client offers.
		c.NextProtos = append(slices.Clone(c.NextProtos), ALPN)
	}
	mine := map[string]bool{}
	for _, n := range names {
		mine[n] = true
	}
	c.GetCertificate = func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		name := strings.ToLower(strings.TrimSuffix(hello.ServerName, "."))
		if len(hello.SupportedProtos) == 1 && hello.SupportedProtos[0] == ALPN {
			return m.magic.GetCertificate(hello)
		}
		if mine[name] {
			if cert, err := m.magic.GetCertificate(hello); err == nil && cert != nil && cert.Leaf != nil {
				return cert, nil
			}
		}
		if fallback != nil {
			return fallback(hello)
		}
		if len(names) == 0 {
			return nil, errors.New("acme: no certificate")
		}
		h := *hello
		h.ServerName = names[0]
		cert, err := m.magic.GetCertificate(&h)
		if err != nil || cert == nil || cert.Leaf == nil {
			return nil, fmt.Errorf("acme: no certificate for %q yet", name)
		}
		return cert, nil
	}
	return c
}

// HTTPChallenge answers an http-01 validation request: the key
// authorization for a token of an order in progress (of this worker, or
// of another one through storage), and false for anything else, which is
// routed as usual.
func (m *Manager) HTTPChallenge(method, host, target string) ([]byte, bool) {
	if !m.http01 || !strings.HasPrefix(target, "/.well-known/acme-challenge/") {
		return nil, false
	}
	path, _, _ := strings.Cut(target, "?")
	r := (&http.Request{Method: method, Host: host, URL: &url.URL{Path: path}, RequestURI: target, Header: http.Header{}}).WithContext(m.ctx)
	w := &bodyWriter{h: http.Header{}}
	if !m.issuer.HandleHTTPChallenge(w, r) {
		return nil, false
	}
	return w.body, true
}

// bodyWriter keeps what the challenge handler writes.
type bodyWriter struct {
	h    http.Header
	body []byte
}

func (w *bodyWriter) Header() http.Header         { return w.h }
func (w *bodyWriter) WriteHeader(int)             {}
func (w *bodyWriter) Write(b []byte) (int, error) { w.body = append(w.body, b...); return len(b), nil }
