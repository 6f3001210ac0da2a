package frontend

import (
	"bufio"
	"bytes"
	"cmp"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
)

// connMeta is what the frontend knows about a client connection once any
// PROXY header has been read: from then on these addresses are the
// client's everywhere (balancing, stickiness, forwarding headers, logs).
type connMeta struct {
	conn     net.Conn // as accepted: the key it is tracked by in Server.conns
	accepted time.Time
	client   netip.AddrPort // the client: the peer, or the header's source
	local    netip.AddrPort // the address the client reached
	id       string         // unique connection id
	// passed: the edge policy passed the connection, and hears of its end
	// (policy.Frontend.Closed) once.
	passed bool
}

func addrPort(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}

// Unique connection ids: a random per-process prefix and a counter, so ids
// differ across workers and restarts without a random read per connection.
var (
	idPrefix = func() string {
		var b [6]byte
		rand.Read(b[:])
		return hex.EncodeToString(b[:])
	}()
	idSeq atomic.Uint64
)

func newConnID() string {
	var b [32]byte
	out := append(b[:0], idPrefix...)
	out = append(out, '-')
	out = strconv.AppendUint(out, idSeq.Add(1), 16)
	return string(out)
}

// errUntrusted refuses a PROXY header from a peer outside proxy_trusted.
var errUntrusted = errors.New("peer is not in proxy_trusted")

// proxyHeaderBuf is the read buffer for the header: it must hold a whole v1
// line (107 bytes); v2 refills it.
const proxyHeaderBuf = 256

// trusted reports whether peer may send PROXY headers to f.
func (f *Frontend) trusted(peer netip.Addr) bool {
	if len(f.cfg.ProxyTrusted) == 0 {
		return true
	}
	for _, p := range f.cfg.ProxyTrusted {
		if p.Contains(peer) {
			return true
		}
	}
	return false
}

// acceptProxy reads the PROXY header that must open conn (accept_proxy),
// in the connection's own goroutine, by m.accepted + timeout_proxy_header
// (timeout_client when that is 0).
// On success it returns the connection to use from now on (bytes that came
// after the header are read again from it) and m updated with the header's
// addresses; a LOCAL header keeps the peer's own. Any error means the
// connection must be closed.
func (f *Frontend) acceptProxy(conn net.Conn, m *connMeta) (net.Conn, error) {
	if !f.trusted(m.client.Addr()) {
		return nil, errUntrusted
	}
	// 0 means no timeout of its own: timeout_client still bounds it, so a
	// silent peer never holds a connection slot for ever.
	if t := cmp.Or(f.cfg.TimeoutProxyHeader, f.cfg.TimeoutClient); t > 0 {
		conn.SetReadDeadline(m.accepted.Add(t))
	}
	br := bufio.NewReaderSize(conn, proxyHeaderBuf)
	if err := v1Whole(br); err != nil {
		return nil, err
	}
	h, err := proxyproto.Read(br)
	if err != nil {
		return nil, err
	}
	conn.SetReadDeadline(time.Time{})
	pc := &proxiedConn{Conn: conn}
	if n := br.Buffered(); n > 0 {
		pc.pre, _ = br.Peek(n)
	}
	if !h.Command.IsProxy() {
		// LOCAL (a health check of the proxy in front): the spec says to
		// discard the whole block, family and TLVs alike, as HAProxy does.
		return pc, nil
	}
	switch h.TransportProtocol {
	case proxyproto.TCPv4, proxyproto.TCPv6:
		src, dst, ok := h.TCPAddrs()
		if !ok {
			return nil, proxyproto.ErrInvalidAddress
		}
		m.client, m.local = addrPort(src), addrPort(dst)
		pc.remote, pc.local = src, dst
	case proxyproto.UDPv4, proxyproto.UDPv6:
		return nil, fmt.Errorf("datagram addresses on a stream connection: %w", proxyproto.ErrUnsupportedAddressFamilyAndProtocol)
	default:
		// AF_UNIX (and v1 UNKNOWN's UNSPEC, refused by go-proxyproto for
		// v2 PROXY): no client address to use. HAProxy refuses AF_UNIX.
		if h.Version == 2 {
			return nil, fmt.Errorf("PROXY v2 family %#02x: %w", byte(h.TransportProtocol), proxyproto.ErrUnsupportedAddressFamilyAndProtocol)
		}
	}
	// go-proxyproto reads TLVs lazily; a malformed one must refuse the
	// connection here, as HAProxy does, not be skipped.
	tlvs, err := h.TLVs()
	if err != nil {
		return nil, err
	}
	crc := false
	for _, t := range tlvs {
		switch t.Type {
		case proxyproto.PP2_TYPE_UNIQUE_ID:
			if len(t.Value) > 128 { // the spec's maximum; HAProxy refuses more
				return nil, fmt.Errorf("PROXY v2 unique id of %d bytes, over 128: %w", len(t.Value), proxyproto.ErrMalformedTLV)
			}
			if printable(t.Value) {
				// The tier in front named this connection: keep its id, so
				// one connection can be followed across tiers.
				m.id = string(t.Value)
			}
		case proxyproto.PP2_TYPE_CRC32C:
			crc = true
		}
	}
	if crc {
		if err := checkCRC32Cs(h); err != nil {
			return nil, err
		}
	}
	return pc, nil
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// checkCRC32Cs checks every PP2_TYPE_CRC32C TLV of h against the header:
// the checksum of the whole header with the TLV's 4 bytes zeroed (zeroed
// in turn, as HAProxy does). go-proxyproto keeps no raw bytes, so the
// header is formatted again: for the TCP families reached here that
// rebuilds the bytes read exactly (addresses and ports as read, the TLV
// block byte for byte). Only headers carrying the TLV pay for it.
func checkCRC32Cs(h *proxyproto.Header) error {
	b, err := h.Format()
	if err != nil {
		return err
	}
	off := 16 + 12 // signature, ver/cmd, family, length; IPv4 addresses
	if h.TransportProtocol == proxyproto.TCPv6 {
		off = 16 + 36
	}
	for off+3 <= len(b) {
		n := int(binary.BigEndian.Uint16(b[off+1 : off+3]))
		v := b[off+3 : min(off+3+n, len(b))] // TLVs() already checked the lengths
		if proxyproto.PP2Type(b[off]) == proxyproto.PP2_TYPE_CRC32C {
			if len(v) != 4 {
				return fmt.Errorf("PROXY v2 CRC32C of %d bytes: %w", len(v), proxyproto.ErrMalformedTLV)
			}
			want := binary.BigEndian.Uint32(v)
			clear(v)
			if got := crc32.Checksum(b, castagnoli); got != want {
				return fmt.Errorf("PROXY v2 CRC32C %#08x, header sums to %#08x: %w", want, got, proxyproto.ErrMalformedTLV)
			}
		}
		off += 3 + n
	}
	return nil
}

// v1Whole buffers a v1 header line whole before go-proxyproto reads it:
// the library refuses a line that did not arrive in one read, where the
// spec recommends tolerance and HAProxy waits for the rest (a header split
// over two segments by a fragmenting path). The read deadline still bounds
// a peer that sends it byte by byte. It never asks for more than one byte
// past what a line without its LF needs, so data after the header is never
// waited for.
func v1Whole(br *bufio.Reader) error {
	if b, err := br.Peek(1); err != nil || b[0] != 'P' {
		return nil // not v1: proxyproto.Read reports what it is
	}
	for {
		n := br.Buffered()
		b, _ := br.Peek(n)
		if bytes.IndexByte(b, '\n') >= 0 || n >= 107 { // 107: the longest v1 line
			return nil
		}
		if _, err := br.Peek(n + 1); err != nil {
			return fmt.Errorf("v1 header cut short: %w", err)
		}
	}
}

func printable(b []byte) bool {
	if len(b) == 0 || len(b) > 128 {
		return false
	}
	for _, c := range b {
		if c <= ' ' || c >= 0x7f || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// proxiedConn is a client connection whose PROXY header has been read: it
// reads again what came after the header, and reports the header's
// addresses.
type proxiedConn struct {
	net.Conn
	pre           []byte
	remote, local net.Addr // nil: the socket's own
}

func (c *proxiedConn) Read(b []byte) (int, error) {
	if len(c.pre) > 0 {
		n := copy(b, c.pre)
		c.pre = c.pre[n:]
		return n, nil
	}
	return c.Conn.Read(b)
}

func (c *proxiedConn) RemoteAddr() net.Addr {
	if c.remote != nil {
		return c.remote
	}
	return c.Conn.RemoteAddr()
}

func (c *proxiedConn) LocalAddr() net.Addr {
	if c.local != nil {
		return c.local
	}
	return c.Conn.LocalAddr()
}

// CloseWrite half-closes the connection, as l4.Relay expects.
func (c *proxiedConn) CloseWrite() error { return closeWrite(c.Conn) }

// NetConn is the connection under the header, for backend.Connect's watch
// of a queued client.
func (c *proxiedConn) NetConn() net.Conn { return c.Conn }

func closeWrite(c net.Conn) error {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// sniffConn watches the first bytes of a connection on a frontend without
// accept_proxy: a PROXY header there is a misconfiguration on one side or
// the other, worth telling the operator about. It only looks at what the
// first read returns and never waits for more.
type sniffConn struct {
	net.Conn
	done bool
	f    *Frontend
	s    *Server
	peer netip.Addr
}

func (c *sniffConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if !c.done && n > 0 {
		c.inspect(b[:n])
	}
	return n, err
}

// inspect looks at the connection's first bytes.
func (c *sniffConn) inspect(b []byte) {
	if !c.done {
		c.done = true
		if saw := unexpectedProxy(b); saw != "" {
			c.f.Counters.ProxyUnexpected.Add(1)
			if c.f.peerLog.allow(c.peer, time.Now()) {
				c.s.log.Warn("PROXY protocol header on a frontend without accept_proxy; set accept_proxy = true here, or stop sending it upstream",
					"frontend", c.f.Name, "peer", c.peer, "saw", saw)
			}
		}
	}
}

func (c *sniffConn) CloseWrite() error { return closeWrite(c.Conn) }

// SyscallConn lets l7 wait for a keep-alive client's next request in the
// poller and read it from the descriptor: reads there skip inspect, which
// looks at the connection's first read only, long done by then.
func (c *sniffConn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, errors.ErrUnsupported
}

// NetConn is the accepted connection, for backend.Connect's watch of a
// queued client.
func (c *sniffConn) NetConn() net.Conn { return c.Conn }

// unexpectedProxy describes b when it starts like a PROXY header, else "".
func unexpectedProxy(b []byte) string {
	switch {
	case bytes.HasPrefix(b, []byte("PROXY ")):
		line := b
		if i := bytes.IndexByte(line, '\n'); i >= 0 {
			line = line[:i+1]
		}
		if len(line) > 107 {
			line = line[:107]
		}
		return fmt.Sprintf("v1 %q", line)
	case len(b) >= len(proxyproto.SIGV2) && bytes.HasPrefix(b, proxyproto.SIGV2):
		rest := b[len(proxyproto.SIGV2):]
		s := "v2 signature"
		if len(rest) >= 4 {
			s += fmt.Sprintf(" ver/cmd=%#02x fam=%#02x len=%d", rest[0], rest[1], binary.BigEndian.Uint16(rest[2:4]))
		}
		return s
	}
	return ""
}

// peerLog lets one log line per peer through per interval, remembering at
// most max peers, so that a flood cannot fill the log or the memory.
type peerLog struct {
	mu       sync.Mutex
	last     map[netip.Addr]time.Time
	interval time.Duration
	max      int
}

func (l *peerLog) allow(peer netip.Addr, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.last == nil {
		l.last = map[netip.Addr]time.Time{}
	}
	if t, ok := l.last[peer]; ok && now.Sub(t) < l.interval {
		return false
	}
	if len(l.last) >= l.max {
		for p, t := range l.last {
			if now.Sub(t) >= l.interval {
				delete(l.last, p)
			}
		}
		if len(l.last) >= l.max {
			return false
		}
	}
	l.last[peer] = now
	return true
}
