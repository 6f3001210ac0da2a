package l4_test

import (
	"net"
	"sync/atomic"
	"testing"
	"time"

	"sluice/internal/testutil"
	"sluice/l4"
)

// A panic relaying a UDP flow ends that flow only: it is counted, the
// worker lives, and the client's next datagram opens a new flow that works.
func TestUDPFlowPanicEndsOnlyThatFlow(t *testing.T) {
	l4.SetReplyHook(func(b []byte) {
		if string(b) == "boom" {
			panic("test: boom in a UDP flow")
		}
	})
	defer l4.SetReplyHook(nil) // after p.Close below: defers run last in, first out

	be := echoBackend(t)
	ln, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var sessions, in, out, errs, denied, panics atomic.Uint64
	var current atomic.Int64
	p, err := l4.NewUDPProxy([]net.PacketConn{ln}, l4.UDPOptions{Backend: be, Idle: time.Minute,
		Totals: l4.UDPTotals{Sessions: &sessions, Current: &current, BytesIn: &in, BytesOut: &out, Errors: &errs, Denied: &denied, Panics: &panics}})
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
	if _, err := c.Write([]byte("boom")); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "the panicking flow to end", 5*time.Second, func() bool {
		return panics.Load() == 1 && current.Load() == 0
	})
	for _, msg := range []string{"hi", "again"} {
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 64)
		n, err := c.Read(buf)
		if err != nil || string(buf[:n]) != msg {
			t.Fatalf("after the panic: %q, %v; want %q echoed", buf[:n], err, msg)
		}
	}
	if n := sessions.Load(); n != 2 {
		t.Errorf("%d flows, want 2 (the one that panicked, then a new one)", n)
	}
	if n := panics.Load(); n != 1 {
		t.Errorf("panics = %d, want 1", n)
	}
}

// A panic on a client datagram in a UDP listener's reader drops that
// datagram only: it is counted (the frontend's panics and l4.LoopPanics),
// the reader goes on, and the client's next datagrams are relayed.
func TestUDPReaderPanicDropsOneDatagram(t *testing.T) {
	l4.SetDatagramHook(t, func(b []byte) {
		if string(b) == "boom" {
			panic("test: boom in a UDP reader")
		}
	})
	be := echoBackend(t)
	ln, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var sessions, in, out, errs, denied, panics atomic.Uint64
	var current atomic.Int64
	p, err := l4.NewUDPProxy([]net.PacketConn{ln}, l4.UDPOptions{Backend: be, Idle: time.Minute, Readers: 1,
		Totals: l4.UDPTotals{Sessions: &sessions, Current: &current, BytesIn: &in, BytesOut: &out, Errors: &errs, Denied: &denied, Panics: &panics}})
	if err != nil {
		t.Fatal(err)
	}
	p.Serve()
	defer p.Close()
	before := l4.LoopPanics.Load()

	c, err := net.DialUDP("udp4", nil, ln.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("boom")); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "the panic to be counted", 5*time.Second, func() bool { return panics.Load() == 1 })
	if n := l4.LoopPanics.Load() - before; n != 1 {
		t.Errorf("LoopPanics grew by %d, want 1", n)
	}
	for _, msg := range []string{"hi", "again"} {
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 64)
		n, err := c.Read(buf)
		if err != nil || string(buf[:n]) != msg {
			t.Fatalf("after the panic: %q, %v; want %q echoed", buf[:n], err, msg)
		}
	}
}
