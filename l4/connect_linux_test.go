package l4

import (
	"net"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"
)

// TestConnectAsksAgain: a loopback handshake is over by the time connect
// returns, so asking again finds the socket connected and the loop need
// not wait for writability; a refusal is found the same way; a connect
// still under way stays EINPROGRESS.
func TestConnectAsksAgain(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ap := ln.Addr().(*net.TCPAddr).AddrPort()
	done := 0
	for range 20 {
		fd, err := rawConnect(ap)
		if err == unix.EINPROGRESS {
			err = rawConnect2(fd, ap)
		}
		switch err {
		case nil:
			done++
			if _, err := unix.Getpeername(fd); err != nil {
				t.Fatalf("connect reported done, but getpeername: %v", err)
			}
		case unix.EINPROGRESS:
		default:
			t.Fatalf("connect to a listener: %v", err)
		}
		rawClose(fd)
	}
	if done == 0 {
		t.Fatal("no loopback connect was found done when asked again: every connection waits a turn of the loop")
	}

	closed := netip.MustParseAddrPort(ln.Addr().String())
	ln.Close()
	fd, err := rawConnect(closed)
	if err == unix.EINPROGRESS {
		err = rawConnect2(fd, closed)
	}
	rawClose(fd)
	if err != unix.ECONNREFUSED && err != unix.EINPROGRESS {
		t.Fatalf("connect to a closed port: %v, want ECONNREFUSED (or still in progress)", err)
	}
}
