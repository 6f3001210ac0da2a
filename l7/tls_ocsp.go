package l7

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ocsp"

	"sluice/conf"
)

// ServedCert is one certificate of a TLS frontend as it is served now: its
// OCSP staple may be renewed by Run (ocsp_fetch), which swaps in a copy of
// the tls.Certificate with the new staple; handshakes read it atomically
// (StapleTLS).
type ServedCert struct {
	Name   string // conf.CertName: first DNS name or subject CN
	Leaf   *x509.Certificate
	Fetch  bool // ocsp_fetch: Run renews the staple
	orig   *tls.Certificate
	cur    atomic.Pointer[tls.Certificate]
	expiry atomic.Int64 // NextUpdate of the staple served (unix ns); 0: none, or none given
	issuer *x509.Certificate
	url    string

	// Fetches by result: ok, error (responder unreachable, bad answer),
	// revoked.
	FetchOK, FetchErrors, FetchRevoked atomic.Uint64

	// Client makes the requests to the responder (tests); nil: one with
	// ocspTimeout.
	Client *http.Client
	// fetched gets a value after each fetch (tests wait on it).
	fetched chan struct{}
	// fetchNow makes Run fetch at once even over a fresh staple (tests).
	fetchNow bool
	// bare is orig without a staple: served once the staple expired.
	bare *tls.Certificate
	// now is the handshakes' clock (tests); nil: time.Now.
	now func() time.Time
}

const (
	ocspTimeout = 10 * time.Second
	// ocspRetryMin and ocspRetryMax bound the wait after a failed fetch
	// (doubling from one to the other).
	ocspRetryMin = time.Minute
	ocspRetryMax = time.Hour
	// ocspMinWait keeps a responder handing out short-lived answers from
	// being asked in a loop.
	ocspMinWait = 10 * time.Second
)

// NewServedCert wraps a certificate conf loaded (its OCSPStaple, if any,
// from the ocsp file); fetch sets up renewal from the responder its leaf
// names (conf checked that it names one and that the chain holds the
// issuer).
func NewServedCert(pair *tls.Certificate, fetch bool) (*ServedCert, error) {
	if pair == nil || pair.Leaf == nil {
		return nil, errors.New("tls: a certificate was not loaded (conf.Parse loads them)")
	}
	c := &ServedCert{Name: conf.CertName(pair.Leaf), Leaf: pair.Leaf, orig: pair, Fetch: fetch, fetched: make(chan struct{}, 1)}
	c.cur.Store(pair)
	bare := *pair
	bare.OCSPStaple = nil
	c.bare = &bare
	if fetch || len(pair.OCSPStaple) > 0 {
		issuer, err := conf.Issuer(pair)
		if err != nil {
			return nil, err
		}
		c.issuer = issuer
	}
	if fetch {
		if len(pair.Leaf.OCSPServer) == 0 {
			return nil, fmt.Errorf("tls: certificate %s names no OCSP responder", c.Name)
		}
		c.url = pair.Leaf.OCSPServer[0]
	}
	if len(pair.OCSPStaple) > 0 {
		if r, err := conf.CheckOCSP(pair.OCSPStaple, pair.Leaf, c.issuer); err == nil {
			c.expiry.Store(unixNano(r.NextUpdate))
		}
	}
	return c, nil
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// Fetched gets a value after a fetch Run finished (one is kept when
// nobody reads): tests wait on it.
func (c *ServedCert) Fetched() <-chan struct{} { return c.fetched }

// Current is the certificate handshakes get now: without its staple once
// the staple's next update has passed (a stale response makes clients
// that check it refuse the certificate; HAProxy stops stapling it too),
// whether it came from the file or a fetch not yet renewed.
func (c *ServedCert) Current() *tls.Certificate {
	cur := c.cur.Load()
	if len(cur.OCSPStaple) == 0 {
		return cur
	}
	if exp := c.expiry.Load(); exp != 0 {
		now := time.Now
		if c.now != nil {
			now = c.now
		}
		if now().UnixNano() >= exp {
			return c.bare
		}
	}
	return cur
}

// Stapled reports whether an OCSP response is stapled now.
func (c *ServedCert) Stapled() bool { return len(c.Current().OCSPStaple) > 0 }

// StapleExpiry is the next update of the staple served; zero when none is
// stapled or the response gave none.
func (c *ServedCert) StapleExpiry() time.Time {
	if n := c.expiry.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// StapleTLS makes cfg (from NewTLS over the same certificates) serve what
// each ServedCert holds now. Nothing changes when no certificate fetches
// or has a staple from a file.
func StapleTLS(cfg *tls.Config, certs []*ServedCert) {
	byOrig := map[*tls.Certificate]*ServedCert{}
	for _, c := range certs {
		if c.Fetch || c.expiry.Load() != 0 {
			byOrig[c.orig] = c
		}
	}
	if len(byOrig) == 0 {
		return
	}
	get := cfg.GetCertificate
	// The map is read-only from here: no lock on the handshake path.
	cfg.GetCertificate = func(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
		pair, err := get(h)
		if c := byOrig[pair]; c != nil {
			return c.Current(), err
		}
		return pair, err
	}
}

// Run renews the staple until ctx ends: at once unless a staple from the
// file is fresh, then at half of the response's validity or an hour
// before its next update, whichever comes first. A failed fetch is logged
// and counted, retried after a minute (doubling to an hour), and the old
// staple is served until its next update passes.
func (c *ServedCert) Run(ctx context.Context, log *slog.Logger, frontend string) {
	if !c.Fetch {
		return
	}
	wait := time.Duration(0)
	if exp := c.StapleExpiry(); !exp.IsZero() && !c.fetchNow {
		if r, err := conf.CheckOCSP(c.orig.OCSPStaple, c.Leaf, c.issuer); err == nil {
			wait = refreshIn(r.ThisUpdate, r.NextUpdate, time.Now())
		}
	}
	retry := ocspRetryMin
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		c.dropExpired(log, frontend)
		r, der, err := c.fetch(ctx)
		now := time.Now()
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			if r != nil && r.Status == ocsp.Revoked {
				c.FetchRevoked.Add(1)
				// Stapling it would only make clients refuse sooner; the
				// certificate must be replaced.
				c.swap(nil, time.Time{})
				log.Error("ocsp: the responder says the certificate is revoked: replace it", "frontend", frontend, "cert", c.Name, "err", err)
			} else {
				c.FetchErrors.Add(1)
				log.Warn("ocsp: fetching the staple failed; the old one is served until it expires", "frontend", frontend, "cert", c.Name,
					"responder", c.url, "err", err, "retry_in", retry, "staple_expires", c.StapleExpiry())
			}
			wait = retry
			retry = min(2*retry, ocspRetryMax)
			if exp := c.StapleExpiry(); !exp.IsZero() && exp.Sub(now) < wait {
				wait = max(exp.Sub(now), 0) // wake to drop it when it expires
			}
		default:
			c.FetchOK.Add(1)
			c.swap(der, r.NextUpdate)
			retry = ocspRetryMin
			wait = refreshIn(r.ThisUpdate, r.NextUpdate, now)
			log.Debug("ocsp: staple renewed", "frontend", frontend, "cert", c.Name, "next_update", r.NextUpdate, "refresh_in", wait)
		}
		select {
		case c.fetched <- struct{}{}:
		default:
		}
		timer.Reset(wait)
	}
}

// refreshIn is how long from now until the next fetch for a response valid
// from this to next: half its validity or an hour before next, whichever
// comes first; an hour when it gives no next update.
func refreshIn(this, next, now time.Time) time.Duration {
	if next.IsZero() {
		return time.Hour
	}
	at := this.Add(next.Sub(this) / 2)
	if h := next.Add(-time.Hour); h.Before(at) {
		at = h
	}
	return max(at.Sub(now), ocspMinWait)
}

// dropExpired stops stapling a response past its next update.
func (c *ServedCert) dropExpired(log *slog.Logger, frontend string) {
	if exp := c.StapleExpiry(); !exp.IsZero() && !time.Now().Before(exp) && c.Stapled() {
		c.swap(nil, time.Time{})
		log.Warn("ocsp: the staple expired and was not renewed: serving none", "frontend", frontend, "cert", c.Name)
	}
}

// swap serves a copy of the certificate with staple der (nil: none):
// handshakes in progress keep the one they read.
func (c *ServedCert) swap(der []byte, next time.Time) {
	n := *c.orig
	n.OCSPStaple = der
	c.cur.Store(&n)
	c.expiry.Store(unixNano(next))
}

// fetch asks the responder for the certificate's status (POST, RFC 6960
// appendix A) and checks the answer: for this certificate, signed by its
// issuer or a responder it certified, good, and current.
func (c *ServedCert) fetch(ctx context.Context) (*ocsp.Response, []byte, error) {
	req, err := ocsp.CreateRequest(c.Leaf, c.issuer, nil)
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, ocspTimeout)
	defer cancel()
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(req))
	if err != nil {
		return nil, nil, err
	}
	hr.Header.Set("Content-Type", "application/ocsp-request")
	hr.Header.Set("Accept", "application/ocsp-response")
	client := c.Client
	if client == nil {
		client = &http.Client{Timeout: ocspTimeout}
	}
	resp, err := client.Do(hr)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, nil, fmt.Errorf("responder answered %s", resp.Status)
	}
	der, err := io.ReadAll(io.LimitReader(resp.Body, conf.MaxOCSPResponse+1))
	if err != nil {
		return nil, nil, err
	}
	if len(der) > conf.MaxOCSPResponse {
		return nil, nil, fmt.Errorf("response over %d bytes", conf.MaxOCSPResponse)
	}
	r, err := conf.CheckOCSP(der, c.Leaf, c.issuer)
	if err != nil {
		return r, nil, err
	}
	now := time.Now()
	if !r.NextUpdate.IsZero() && !now.Before(r.NextUpdate) {
		return nil, nil, fmt.Errorf("the response expired at %s", r.NextUpdate.UTC().Format(time.RFC3339))
	}
	// A few minutes of clock skew between us and the responder.
	if r.ThisUpdate.After(now.Add(5 * time.Minute)) {
		return nil, nil, fmt.Errorf("the response is dated in the future (%s)", r.ThisUpdate.UTC().Format(time.RFC3339))
	}
	return r, der, nil
}
