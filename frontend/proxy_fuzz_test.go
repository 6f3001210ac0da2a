package frontend

import (
	"bytes"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"

	"sluice/conf"
)

// bytesConn is a client connection that sends a fixed input, then EOF.
type bytesConn struct {
	r *bytes.Reader
}

func (c *bytesConn) Read(b []byte) (int, error)  { return c.r.Read(b) }
func (c *bytesConn) Write(b []byte) (int, error) { return len(b), nil }
func (c *bytesConn) Close() error                { return nil }
func (c *bytesConn) LocalAddr() net.Addr         { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 80} }
func (c *bytesConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5000}
}
func (c *bytesConn) SetDeadline(time.Time) error      { return nil }
func (c *bytesConn) SetReadDeadline(time.Time) error  { return nil }
func (c *bytesConn) SetWriteDeadline(time.Time) error { return nil }

// FuzzAcceptProxy feeds arbitrary bytes to the accepting path of a frontend
// with accept_proxy. It must never panic; when it accepts, the client
// address is a real one and the connection reads exactly the bytes after
// the header. Run in CI with:
//
//	go test -run '^$' -fuzz '^FuzzAcceptProxy$' -fuzztime 20s ./frontend
func FuzzAcceptProxy(f *testing.F) {
	v2 := func(src, dst string, tlvs ...proxyproto.TLV) []byte {
		h := proxyproto.HeaderProxyFromAddrs(2, net.TCPAddrFromAddrPort(netip.MustParseAddrPort(src)), net.TCPAddrFromAddrPort(netip.MustParseAddrPort(dst)))
		h.SetTLVs(tlvs)
		b, _ := h.Format()
		return b
	}
	for _, s := range [][]byte{
		[]byte("PROXY TCP4 192.0.2.1 192.0.2.2 1000 80\r\nGET / HTTP/1.1\r\n\r\n"),
		[]byte("PROXY TCP6 2001:db8::1 2001:db8::2 1000 80\r\n"),
		[]byte("PROXY UNKNOWN\r\n"),
		[]byte("PROXY UNKNOWN ffff::1 ffff::2 1 2\r\nrest"),
		[]byte("PROXY TCP4 192.0.2.1 192.0.2.2 1000 80\n"),
		[]byte("GET / HTTP/1.1\r\n\r\n"),
		append(v2("192.0.2.1:1", "192.0.2.2:2"), "data"...),
		v2("[2001:db8::1]:1", "[2001:db8::2]:2", proxyproto.TLV{Type: proxyproto.PP2_TYPE_UNIQUE_ID, Value: []byte("abc")}),
		append(append([]byte{}, proxyproto.SIGV2...), 0x20, 0x00, 0x00, 0x00),
		append(append([]byte{}, proxyproto.SIGV2...), 0x21, 0x11, 0xff, 0xff),
		proxyproto.SIGV2[:7],
	} {
		f.Add(s)
	}
	fr := &Frontend{Name: "fuzz", cfg: &conf.Frontend{AcceptProxy: true, TimeoutProxyHeader: time.Second}}
	f.Fuzz(func(t *testing.T, in []byte) {
		unexpectedProxy(in) // the sniffing side sees the same bytes
		m := connMeta{accepted: time.Now(), client: netip.MustParseAddrPort("127.0.0.1:5000"), local: netip.MustParseAddrPort("127.0.0.1:80")}
		conn, err := fr.acceptProxy(&bytesConn{r: bytes.NewReader(in)}, &m)
		if err != nil {
			return
		}
		if !m.client.Addr().IsValid() || !m.local.Addr().IsValid() {
			t.Fatalf("accepted with client %v local %v", m.client, m.local)
		}
		if m.id != "" && !printable([]byte(m.id)) {
			t.Fatalf("id %q taken from the header is not printable", m.id)
		}
		rest, err := io.ReadAll(conn)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasSuffix(in, rest) {
			t.Fatalf("after the header the connection reads %q, not a suffix of the input", rest)
		}
		_ = conn.RemoteAddr().String()
		_ = conn.LocalAddr().String()
	})
}
