//go:build linux

package fdconn

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"syscall"
	"testing"
	"time"
)

// accepted returns a Conn of a real accepted connection and its client.
func accepted(t *testing.T) (*Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	rc, _ := ln.(*net.TCPListener).SyscallConn()
	fd := -1
	rc.Control(func(lfd uintptr) {
		for fd < 0 {
			fd, _, err = syscall.Accept4(int(lfd), syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC)
			if err != nil && err != syscall.EAGAIN {
				t.Fatal(err)
			}
		}
	})
	c := New(fd, netip.MustParseAddrPort(client.LocalAddr().String()), netip.MustParseAddrPort(ln.Addr().String()))
	t.Cleanup(func() { c.Close() })
	return c, client
}

// A request already there is read and answered on the bare descriptor;
// the connection never enters the poller.
func TestBareExchange(t *testing.T) {
	c, client := accepted(t)
	client.Write([]byte("ping"))
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	var b [16]byte
	n := 0
	for n == 0 { // the bytes cross loopback at once, but not before Write returns
		m, err := c.Read(b[:])
		if err != nil {
			t.Fatal(err)
		}
		n = m
	}
	if string(b[:n]) != "ping" || c.f != nil {
		t.Fatalf("read %q, promoted %v", b[:n], c.f != nil)
	}
	if _, err := c.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	c.Close()
	got, err := io.ReadAll(client)
	if err != nil || string(got) != "pong" {
		t.Fatalf("client read %q, %v", got, err)
	}
	if c.f != nil {
		t.Fatal("promoted with nothing to wait for")
	}
}

// A read with nothing to read waits in the poller, under its deadline,
// and a Close from another goroutine ends it.
func TestWaitDeadlineAndClose(t *testing.T) {
	c, client := accepted(t)
	c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	var b [16]byte
	if _, err := c.Read(b[:]); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read with no bytes: %v, want a deadline error", err)
	}
	if c.f == nil {
		t.Fatal("a wait did not move the connection to the poller")
	}
	c.SetReadDeadline(time.Time{})
	go client.Write([]byte("late"))
	n, err := c.Read(b[:])
	if err != nil || string(b[:n]) != "late" {
		t.Fatalf("read %q, %v", b[:n], err)
	}
	done := make(chan error)
	go func() {
		_, err := c.Read(b[:])
		done <- err
	}()
	c.Close()
	if err := <-done; err == nil {
		t.Fatal("a read went on after Close")
	}
	if err := c.Close(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("second Close: %v", err)
	}
}

// A past deadline ends a read even on the bare descriptor (a drain wakes
// a waiting keep-alive client that way), and the raw read as well.
func TestPastDeadlineBare(t *testing.T) {
	c, client := accepted(t)
	client.Write([]byte("x"))
	c.SetReadDeadline(time.Unix(1, 0))
	var b [1]byte
	if _, err := c.Read(b[:]); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read: %v", err)
	}
	rc, _ := c.SyscallConn()
	if err := rc.Read(func(uintptr) bool { return true }); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("raw read: %v", err)
	}
	if c.f != nil {
		t.Fatal("promoted")
	}
}
