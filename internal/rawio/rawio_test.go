package rawio

import (
	"net"
	"net/netip"
	"syscall"
	"testing"
	"unsafe"
)

// Accept4 and AddrPort give the peer address a real connection came from,
// over IPv4 and IPv6.
func TestAcceptAddrPort(t *testing.T) {
	for _, network := range []string{"tcp4", "tcp6"} {
		ln, err := net.Listen(network, map[string]string{"tcp4": "127.0.0.1:0", "tcp6": "[::1]:0"}[network])
		if err != nil {
			t.Skipf("%s: %v", network, err)
		}
		defer ln.Close()
		c, err := net.Dial(network, ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		rc, err := ln.(*net.TCPListener).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var (
			sa  syscall.RawSockaddrAny
			fd  = -1
			aer error
		)
		// Dial returned: the kernel holds the connection in the queue.
		rc.Control(func(lfd uintptr) {
			fd, aer = Accept4(int(lfd), &sa, syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC)
		})
		if aer != nil {
			t.Fatalf("%s: accept4: %v", network, aer)
		}
		Close(fd)
		want := c.LocalAddr().(*net.TCPAddr).AddrPort()
		if got := AddrPort(&sa); got != want {
			t.Errorf("%s: peer %v, want %v", network, got, want)
		}
	}
}

// A link-local IPv6 peer keeps its zone: the interface's name.
func TestAddrPortKeepsZone(t *testing.T) {
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Skip(err)
	}
	var sa syscall.RawSockaddrAny
	a := (*syscall.RawSockaddrInet6)(unsafe.Pointer(&sa))
	a.Family = syscall.AF_INET6
	a.Addr = netip.MustParseAddr("fe80::1").As16()
	a.Port = 0x5000 // network order: port 80
	a.Scope_id = uint32(lo.Index)
	if got, want := AddrPort(&sa), netip.MustParseAddrPort("[fe80::1%lo]:80"); got != want {
		t.Errorf("got %v, want %v", got, want)
	}
}
