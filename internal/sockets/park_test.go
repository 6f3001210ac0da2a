package sockets

import (
	"io"
	"net"
	"testing"
	"time"
)

// A parked listener keeps its socket: a Go accept still works on it (built
// again on first use), File still hands it over, Close closes it.
func TestParkKeepsTheSocket(t *testing.T) {
	s, err := Listen(Key{Network: "tcp", Addr: "127.0.0.1:0"}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	addr := s.Listener.Addr().String()
	if err := s.Park(); err != nil {
		t.Fatal(err)
	}
	if s.Listener.Addr().String() != addr {
		t.Fatalf("parked address %s, want %s", s.Listener.Addr(), addr)
	}
	if err := s.Park(); err == nil {
		t.Fatal("parking a parked listener succeeded")
	}

	// Handed over, as to a new worker: the other copy accepts.
	f, err := s.File()
	if err != nil {
		t.Fatal(err)
	}
	other, err := FromFile(s.Key, f)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()

	for _, ln := range []net.Listener{s.Listener, other.Listener} {
		done := make(chan error, 1)
		go func() {
			c, err := ln.Accept()
			if err == nil {
				c.Write([]byte("hi"))
				c.Close()
			}
			done <- err
		}()
		// Both hold the same socket: dial until this one accepts (the
		// other may take a connection first).
		for i := 0; ; i++ {
			c, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			c.SetDeadline(time.Now().Add(5 * time.Second))
			b, _ := io.ReadAll(c)
			c.Close()
			if string(b) == "hi" {
				break
			}
			if i > 50 {
				t.Fatalf("%T never accepted", ln)
			}
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Listener.Accept(); err == nil {
		t.Fatal("accept on a closed parked listener succeeded")
	}
}

// TestParkListenersHandsOver: a master parks its tcp listeners (out of its
// netpoller), and what it hands a worker still accepts connections.
func TestParkListenersHandsOver(t *testing.T) {
	s, sock := parkedOne(t, "tcp")
	if _, still := sock.Listener.(*net.TCPListener); still {
		t.Fatal("the listener is still in the poller")
	}
	if err := ParkListeners(s); err != nil { // parked already: nothing to do
		t.Fatal(err)
	}
	f, err := sock.File()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.FileListener(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	a, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	a.Close()
}

// TestParkListenersUDP: a master's udp sockets leave its poller too, and
// what it hands a worker still reads datagrams.
func TestParkListenersUDP(t *testing.T) {
	_, sock := parkedOne(t, "udp")
	if _, still := sock.Packet.(*net.UDPConn); still {
		t.Fatal("the udp socket is still in the poller")
	}
	f, err := sock.File()
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.FilePacketConn(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	c, err := net.Dial("udp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	pc.SetReadDeadline(time.Now().Add(10 * time.Second))
	b := make([]byte, 16)
	n, _, err := pc.ReadFrom(b)
	if err != nil || string(b[:n]) != "ping" {
		t.Fatalf("read %q, %v", b[:n], err)
	}
}

// parkedOne binds one frontend socket of network on 127.0.0.1, closed at
// the test's end, and parks it as a master does.
func parkedOne(t *testing.T, network string) (Set, *Socket) {
	t.Helper()
	s, err := Bind([]Spec{{Key: Key{network, "127.0.0.1:0"}, Role: RoleFrontend}}, Set{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if err := ParkListeners(s); err != nil {
		t.Fatal(err)
	}
	for _, v := range s {
		return s, v
	}
	t.Fatal("no socket bound")
	return nil, nil
}
