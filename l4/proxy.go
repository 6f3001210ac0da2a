package l4

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	proxyproto "github.com/pires/go-proxyproto"

	"sluice/backend"
	"sluice/conf"
)

// ProxyHeader is the PROXY protocol header a server connection opens with
// (send_proxy): who the client is and which address it reached, plus, for
// v2, what is known of the client connection.
type ProxyHeader struct {
	Version conf.ProxyVersion // ProxyV1 or ProxyV2; ProxyNone sends nothing
	Src     netip.AddrPort    // the client; invalid sends "UNKNOWN" (v1) or LOCAL (v2)
	Dst     netip.AddrPort    // the address the client connected to
	// v2 TLVs, each sent when not empty.
	ALPN      string // protocol negotiated with the client (TLS terminated here)
	Authority string // SNI the client sent (TLS terminated here)
	UniqueID  string // PP2_TYPE_UNIQUE_ID: the connection's id, at most 128 bytes
}

// Format encodes the header as it goes on the wire.
func (h *ProxyHeader) Format() ([]byte, error) {
	if h.Version != conf.ProxyV1 && h.Version != conf.ProxyV2 {
		return nil, fmt.Errorf("proxy header: unknown version %d", h.Version)
	}
	ph := &proxyproto.Header{Version: byte(h.Version), Command: proxyproto.LOCAL, TransportProtocol: proxyproto.UNSPEC}
	src, dst := h.Src.Addr().Unmap(), h.Dst.Addr().Unmap()
	if src.IsValid() && dst.IsValid() {
		ph.Command = proxyproto.PROXY
		if src.Is4() && dst.Is4() {
			ph.TransportProtocol = proxyproto.TCPv4
		} else {
			// One side IPv6: both go as IPv6, the IPv4 one mapped.
			ph.TransportProtocol = proxyproto.TCPv6
			src, dst = netip.AddrFrom16(src.As16()), netip.AddrFrom16(dst.As16())
		}
		ph.SourceAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, h.Src.Port()))
		ph.DestinationAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(dst, h.Dst.Port()))
	}
	if h.Version == conf.ProxyV2 {
		var tlvs []proxyproto.TLV
		if h.ALPN != "" {
			tlvs = append(tlvs, proxyproto.TLV{Type: proxyproto.PP2_TYPE_ALPN, Value: []byte(h.ALPN)})
		}
		if h.Authority != "" {
			tlvs = append(tlvs, proxyproto.TLV{Type: proxyproto.PP2_TYPE_AUTHORITY, Value: []byte(h.Authority)})
		}
		if id := h.UniqueID; id != "" {
			if len(id) > 128 {
				id = id[:128] // the spec's limit
			}
			tlvs = append(tlvs, proxyproto.TLV{Type: proxyproto.PP2_TYPE_UNIQUE_ID, Value: []byte(id)})
		}
		if len(tlvs) > 0 {
			if err := ph.SetTLVs(tlvs); err != nil {
				return nil, err
			}
		}
	}
	return ph.Format()
}

// Dial connects to addr within timeout and, when hdr is not nil and has a
// version, writes the PROXY header before returning the connection, so
// every server connection made for a client carries it. A header that
// cannot be written is a failed connect.
func Dial(ctx context.Context, addr string, timeout time.Duration, hdr *ProxyHeader) (net.Conn, error) {
	// No TCP keep-alive probes, as in HAProxy without "option srvtcpka":
	// the idle timeouts already bound dead peers, and enabling them costs
	// four setsockopt calls per connection.
	d := net.Dialer{Timeout: timeout, KeepAlive: -1}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if hdr == nil || hdr.Version == conf.ProxyNone {
		return c, nil
	}
	if err := WriteProxyHeader(c, hdr, timeout); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// DialServer connects to srv of be for a client: Dial, then, when be has
// [backend.NAME.tls], the TLS handshake after the PROXY header (which goes
// in clear, as HAProxy sends it), the whole within be.TimeoutConnect. A
// failed handshake is a failed connect for the caller (retried elsewhere,
// observed) and, unless ctx ended it, is counted on srv by reason and
// logged with its reason at most once a second per server. When alpn
// offers both HTTP versions, the one chosen is recorded on srv
// (Server.HTTPVersion).
func DialServer(ctx context.Context, be *backend.Backend, srv *backend.Server, hdr *ProxyHeader, log *slog.Logger) (net.Conn, error) {
	if be.TLS == nil {
		return Dial(ctx, srv.Addr, be.TimeoutConnect, hdr)
	}
	var deadline time.Time
	if be.TimeoutConnect > 0 {
		deadline = time.Now().Add(be.TimeoutConnect)
	}
	c, err := Dial(ctx, srv.Addr, be.TimeoutConnect, hdr)
	if err != nil {
		return nil, err
	}
	tc, err := be.TLS.Handshake(ctx, c, srv.Addr, deadline)
	if err != nil {
		var te *backend.TLSError
		if errors.As(err, &te) && ctx.Err() == nil {
			tlsFailed(be, srv, te.Reason, te.Err, log)
		}
		return nil, err
	}
	if be.TLS.Mixed() {
		v := backend.HTTP1
		if tc.ConnectionState().NegotiatedProtocol == conf.ALPNH2 {
			v = backend.HTTP2
		}
		srv.SetHTTPVersion(v)
	}
	return tc, nil
}

// ServerRefusedTLS counts and logs err, from the first read of a fresh
// TLS connection to srv, as a failed handshake (reason "handshake") when
// it is the server's alert (backend.ServerAlert): a TLS 1.3
// server refusing sluice's client certificate. It reports whether it was.
func ServerRefusedTLS(be *backend.Backend, srv *backend.Server, err error, log *slog.Logger) bool {
	if be.TLS == nil || !backend.ServerAlert(err) {
		return false
	}
	tlsFailed(be, srv, backend.TLSHandshake, fmt.Errorf("refused after the handshake (under TLS 1.3, the server's verdict on the client certificate): %w", err), log)
	return true
}

func tlsFailed(be *backend.Backend, srv *backend.Server, reason int, err error, log *slog.Logger) {
	if ok, held := srv.TLSFailed(reason); ok {
		if log == nil {
			log = slog.Default()
		}
		log.Warn("TLS handshake with a server failed", "backend", be.Name, "server", srv.Name, "addr", srv.Addr,
			"reason", backend.TLSReasonNames[reason], "err", err, "not_logged", held)
	}
}

// WriteProxyHeader writes hdr on a fresh server connection in one write, as
// the spec asks, bounded by timeout when it is positive.
func WriteProxyHeader(c net.Conn, hdr *ProxyHeader, timeout time.Duration) error {
	b, err := hdr.Format()
	if err != nil {
		return err
	}
	if timeout > 0 {
		c.SetWriteDeadline(time.Now().Add(timeout))
		defer c.SetWriteDeadline(time.Time{})
	}
	if _, err := c.Write(b); err != nil {
		return fmt.Errorf("send proxy header: %w", err)
	}
	return nil
}
