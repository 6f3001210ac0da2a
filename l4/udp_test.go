package l4_test

import (
	"errors"
	"net"
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
	echo, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := echo.ReadFromUDPAddrPort(buf)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			echo.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	be, err := backend.New(&conf.Backend{Name: "b", Servers: []conf.Server{{Name: "e", Address: echo.LocalAddr().String(), Weight: 1}}})
	if err != nil {
		t.Fatal(err)
	}
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
