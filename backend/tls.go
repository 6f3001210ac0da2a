package backend

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"sluice/conf"
)

// TLS to a backend's servers ([backend.NAME.tls]). The backend holds one
// ClientTLS: the configuration built once from the file, and one session
// cache shared by its servers' connections, so that reconnecting (the
// pool refilling, a tcp client per connection) resumes a session instead
// of a full handshake.

// Reasons a handshake with a server failed, as counted per server
// (Counters.TLSErrors) and labelled on /metrics.
const (
	TLSUnknownAuthority = iota // the chain does not lead to ca_file (or the system's roots)
	TLSNameMismatch            // the certificate does not carry server_name (or the host)
	TLSExpired                 // expired or not yet valid
	TLSHandshake               // the handshake itself: alerts, protocol, ALPN, a bad client certificate
	TLSOther                   // anything else: timeout, reset, closed
	NumTLSReasons
)

// TLSReasonNames are the reasons' labels, by index.
var TLSReasonNames = [NumTLSReasons]string{"unknown_authority", "name_mismatch", "expired", "handshake", "other"}

// ClientTLS is how a backend's server connections speak TLS.
type ClientTLS struct {
	base       *tls.Config
	serverName string // "" = each server's host
	h2only     bool   // alpn = ["h2"]: a server that does not choose h2 fails
	mixed      bool   // alpn lists h2 and http/1.1: each server's choice decides
	cache      tls.ClientSessionCache
	// configs holds base completed for one server (its ServerName and
	// its share of the session cache), built once per address: a dial
	// clones nothing. Addresses come and go with DNS discovery: past
	// maxConfigs entries the map starts over (configs are rebuilt on the
	// next dial; sessions stay in the cache, an LRU of its own).
	configs  sync.Map // host:port -> *tls.Config
	nConfigs atomic.Int64
}

// maxConfigs bounds ClientTLS.configs: far more servers than a backend
// has at once, so that only churn starts it over.
const maxConfigs = 4096

// serverCache is a server's view of its backend's session cache. Go keys
// sessions by ServerName, which servers of one backend share (server_name,
// or one IP address with several ports): a session of one server would
// be offered to another, and its failed handshake would drop the entry
// (RFC 5077), so sessions are kept per server address.
type serverCache struct {
	tls.ClientSessionCache
	prefix string
}

func (c serverCache) Get(key string) (*tls.ClientSessionState, bool) {
	return c.ClientSessionCache.Get(c.prefix + key)
}

func (c serverCache) Put(key string, cs *tls.ClientSessionState) {
	c.ClientSessionCache.Put(c.prefix+key, cs)
}

// NewClientTLS builds the TLS client of a backend; nil when c is nil.
func NewClientTLS(c *conf.BackendTLS) *ClientTLS {
	if c == nil {
		return nil
	}
	t := &ClientTLS{serverName: c.ServerName, cache: tls.NewLRUClientSessionCache(0)}
	t.base = &tls.Config{
		MinVersion:         tls.VersionTLS12,
		RootCAs:            c.Roots, // nil: the system's
		InsecureSkipVerify: c.Verify == conf.VerifyNone,
	}
	if c.Pair != nil {
		t.base.Certificates = []tls.Certificate{*c.Pair}
	}
	// The list goes out as written, in order (the server picks, by its
	// own preference in practice); with both versions in it, l7 speaks
	// to each server the one its handshake chose (Server.HTTPVersion).
	if len(c.ALPN) > 0 {
		t.base.NextProtos = c.ALPN
		t.h2only = len(c.ALPN) == 1 && c.ALPN[0] == conf.ALPNH2
		t.mixed = len(c.ALPN) == 2
	}
	return t
}

// Mixed reports whether alpn offers both h2 and http/1.1, so that each
// server is spoken to in the version its handshake chose.
func (t *ClientTLS) Mixed() bool { return t != nil && t.mixed }

// Config is the client configuration for the server at addr (host:port):
// SNI and the verified name are server_name, else the host (Go sends no
// SNI for an IP address and verifies it against the IP SANs).
func (t *ClientTLS) Config(addr string) *tls.Config {
	if c, ok := t.configs.Load(addr); ok {
		return c.(*tls.Config)
	}
	host := t.serverName
	if host == "" {
		if h, _, err := net.SplitHostPort(addr); err == nil {
			host = h
		} else {
			host = addr
		}
	}
	c := t.base.Clone()
	c.ServerName = host
	c.ClientSessionCache = serverCache{t.cache, addr + "|"}
	v, loaded := t.configs.LoadOrStore(addr, c)
	if !loaded && t.nConfigs.Add(1) > maxConfigs {
		t.nConfigs.Store(0)
		t.configs.Clear()
	}
	return v.(*tls.Config)
}

// CheckConfig is Config for health checks, which speak HTTP/1.1 (or
// nothing, tcp): no ALPN is offered, the session cache is shared.
func (t *ClientTLS) CheckConfig(addr string) *tls.Config {
	c := t.Config(addr).Clone()
	c.NextProtos = nil
	return c
}

// ErrNoH2 is a server of an alpn = ["h2"] backend that did not choose h2.
var ErrNoH2 = errors.New("the server did not choose h2 by ALPN (alpn = [\"h2\"]: HTTP/2 is required; add \"http/1.1\" to the list to speak HTTP/1.1 to such servers)")

// Handshake runs the TLS handshake on conn, a fresh connection to addr
// (after any PROXY header), by deadline.
func (t *ClientTLS) Handshake(ctx context.Context, conn net.Conn, addr string, deadline time.Time) (*tls.Conn, error) {
	tc := tls.Client(conn, t.Config(addr))
	if !deadline.IsZero() {
		conn.SetDeadline(deadline)
	}
	err := tc.HandshakeContext(ctx)
	if err == nil && t.h2only && tc.ConnectionState().NegotiatedProtocol != conf.ALPNH2 {
		err = ErrNoH2
	}
	if err != nil {
		conn.Close()
		return nil, &TLSError{Reason: ClassifyTLS(err), Err: err}
	}
	if !deadline.IsZero() {
		conn.SetDeadline(time.Time{})
	}
	return tc, nil
}

// TLSError is a failed handshake with a server, with its reason class.
type TLSError struct {
	Reason int
	Err    error
}

func (e *TLSError) Error() string {
	return fmt.Sprintf("tls handshake (%s): %v", TLSReasonNames[e.Reason], e.Err)
}
func (e *TLSError) Unwrap() error { return e.Err }

// ClassifyTLS turns a handshake error into one of the reasons.
func ClassifyTLS(err error) int {
	var ua x509.UnknownAuthorityError
	var he x509.HostnameError
	var ci x509.CertificateInvalidError
	var alert tls.AlertError
	var rh tls.RecordHeaderError
	var ne net.Error
	switch {
	case errors.As(err, &ua):
		return TLSUnknownAuthority
	case errors.As(err, &he):
		return TLSNameMismatch
	case errors.As(err, &ci) && ci.Reason == x509.Expired:
		return TLSExpired
	case errors.As(err, &ne) && ne.Timeout(), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return TLSOther
	case errors.As(err, &alert), errors.As(err, &rh), errors.As(err, &ci), errors.Is(err, ErrNoH2),
		ServerAlert(err): // an alert from the server ("remote error: tls: …"), e.g. no common ALPN protocol
		return TLSHandshake
	}
	var ve *tls.CertificateVerificationError
	if errors.As(err, &ve) {
		return TLSHandshake
	}
	if s := err.Error(); len(s) > 5 && s[:5] == "tls: " {
		return TLSHandshake // crypto/tls's own protocol errors
	}
	return TLSOther
}

// ServerAlert reports whether err is an alert the server sent ("remote
// error: tls: …"): in the handshake (no common ALPN protocol, say) or on
// the first read of a fresh connection, since under TLS 1.3 a server
// checks the client's certificate after the client's side of the
// handshake is over, so its refusal of sluice's cert (or of none) comes
// there, not from Handshake.
func ServerAlert(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "remote error"
}

// TLSFailed counts a failed handshake with s and reports whether to log
// it now (once a second at most per server) and how many were not logged
// since.
func (s *Server) TLSFailed(reason int) (log bool, held int64) {
	s.Counters.TLSErrors[reason].Add(1)
	return s.tlsLog.Allow(time.Now())
}

// HTTP versions a server's last TLS handshake chose (Server.HTTPVersion).
const (
	HTTPUnknown = iota // no handshake yet (or alpn does not offer both)
	HTTP1              // http/1.1, or no ALPN answer
	HTTP2              // h2
)

// HTTPVersion is the HTTP version s's last TLS handshake chose, on a
// backend whose alpn offers both (HTTPUnknown before the first).
func (s *Server) HTTPVersion() int { return int(s.httpVersion.Load()) }

// SetHTTPVersion records the version a handshake with s chose.
func (s *Server) SetHTTPVersion(v int) {
	if s.httpVersion.Load() != int32(v) {
		s.httpVersion.Store(int32(v))
	}
}
