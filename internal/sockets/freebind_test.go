package sockets

import (
	"errors"
	"net"
	"os"
	"syscall"
	"testing"
)

// TestFreebindNonLocal binds 192.0.2.10 (TEST-NET-1, held by no interface
// here): without IP_FREEBIND the kernel refuses it with EADDRNOTAVAIL, with
// it the socket binds and listens, as the backup box of a keepalived pair
// does for the VIP it does not hold yet.
func TestFreebindNonLocal(t *testing.T) {
	if local(t, "192.0.2.10") {
		t.Skip("192.0.2.10 is assigned on this host; the test needs it not to be")
	}
	if nonlocalBindSysctl() {
		t.Skip("net.ipv4.ip_nonlocal_bind = 1 here: every address binds, so freebind cannot be told apart")
	}
	k := Key{Network: "tcp", Addr: "192.0.2.10:0"}
	if s, err := Listen(k, Options{}); err == nil {
		s.Close()
		t.Fatal("binding a non-local address without freebind succeeded; expected EADDRNOTAVAIL")
	} else if !errors.Is(err, syscall.EADDRNOTAVAIL) {
		t.Fatalf("without freebind: got %v, want EADDRNOTAVAIL", err)
	}
	for _, network := range []string{"tcp", "udp"} {
		s, err := Listen(Key{Network: network, Addr: "192.0.2.10:0"}, Options{Freebind: true})
		if err != nil {
			t.Fatalf("%s with freebind: %v", network, err)
		}
		var a net.Addr
		if s.Listener != nil {
			a = s.Listener.Addr()
		} else {
			a = s.Packet.LocalAddr()
		}
		host, _, _ := net.SplitHostPort(a.String())
		if host != "192.0.2.10" {
			t.Errorf("%s bound %s, want 192.0.2.10", network, a)
		}
		s.Close()
	}
}

func local(t *testing.T, ip string) bool {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.String() == ip {
			return true
		}
	}
	return false
}

func nonlocalBindSysctl() bool {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_nonlocal_bind")
	return err == nil && len(b) > 0 && b[0] == '1'
}
