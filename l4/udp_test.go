package l4_test

import (
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"sluice/backend"
	"sluice/conf"
	"sluice/l4"
)

// TestUDPHotPathAllocations pins "no allocation per datagram": once a flow
// is open, a request and its reply through the proxy allocate nothing.
func TestUDPHotPathAllocations(t *testing.T) {
	be := echoBackend(t)
	ln, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var sessions, in, out, errs, denied atomic.Uint64
	var current atomic.Int64
	p, err := l4.NewUDPProxy([]net.PacketConn{ln}, l4.UDPOptions{Backend: be, Idle: time.Minute, Readers: 1,
		Totals: l4.UDPTotals{Sessions: &sessions, Current: &current, BytesIn: &in, BytesOut: &out, Errors: &errs, Denied: &denied}})
	if err != nil {
		t.Fatal(err)
	}
	p.Serve()
	defer p.Close()
	c, err := net.DialUDP("udp4", nil, ln.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	msg := []byte("0123456789abcdef")
	buf := make([]byte, 2048)
	roundTrip := func() {
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		if n, err := c.Read(buf); err != nil || n != len(msg) {
			t.Fatalf("read %d bytes: %v", n, err)
		}
	}
	for range 50 { // open the flow, warm the buffer pool
		roundTrip()
	}
	if allocs := testing.AllocsPerRun(200, roundTrip); allocs > 0.1 && !raceEnabled {
		t.Errorf("%.2f allocations per datagram round trip, want 0", allocs)
	}
	if sessions.Load() != 1 {
		t.Errorf("%d flows, want 1", sessions.Load())
	}
}

// TestUDPReplySourceIPv4Socket covers the IP_PKTINFO path: an AF_INET
// socket on 0.0.0.0 (the frontend's own binds are dual-stack and take the
// IPV6_PKTINFO path, tested in frontend).
func TestUDPReplySourceIPv4Socket(t *testing.T) {
	be := echoBackend(t)
	ln, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4zero})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var sessions, in, out, errs, denied atomic.Uint64
	var current atomic.Int64
	p, err := l4.NewUDPProxy([]net.PacketConn{ln}, l4.UDPOptions{Backend: be, Idle: time.Minute,
		Totals: l4.UDPTotals{Sessions: &sessions, Current: &current, BytesIn: &in, BytesOut: &out, Errors: &errs, Denied: &denied}})
	if err != nil {
		t.Fatal(err)
	}
	p.Serve()
	defer p.Close()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	port := uint16(ln.LocalAddr().(*net.UDPAddr).Port)
	for _, dst := range []string{"127.0.0.2", "127.0.0.5"} {
		to := netip.AddrPortFrom(netip.MustParseAddr(dst), port)
		if _, err := c.WriteToUDPAddrPort([]byte("hi"), to); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		buf := make([]byte, 64)
		_, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("no reply to %s: %v", to, err)
		}
		if from != to {
			t.Errorf("reply to a datagram sent to %s came from %s", to, from)
		}
	}
	if n := sessions.Load(); n != 2 {
		t.Errorf("%d flows, want 2 (one per local address)", n)
	}
}

// echoBackend is a backend of one UDP echo server on loopback, stopped when
// the test ends.
func echoBackend(tb testing.TB) *backend.Backend {
	tb.Helper()
	echo := l4.UDPEcho(tb, "udp4", "127.0.0.1")
	if echo == nil {
		tb.Fatal("no UDP echo on the IPv4 loopback")
	}
	be, err := backend.New(&conf.Backend{Name: "b", Servers: []conf.Server{{Name: "e", Address: echo.LocalAddr().String(), Weight: 1}}})
	if err != nil {
		tb.Fatal(err)
	}
	return be
}
