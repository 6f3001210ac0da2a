package frontend

import (
	"errors"
	"net"
	"os"
	"syscall"
	"testing"

	"sluice/conf"
)

// TestFreebindFrontend: a frontend with freebind = true binds a VIP this
// host does not hold (192.0.2.10, TEST-NET-1); the same frontend without it
// is refused, so the key really reaches the socket.
func TestFreebindFrontend(t *testing.T) {
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_nonlocal_bind"); err == nil && len(b) > 0 && b[0] == '1' {
		t.Skip("net.ipv4.ip_nonlocal_bind = 1 here: every address binds, so freebind cannot be told apart")
	}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.String() == "192.0.2.10" {
				t.Skip("192.0.2.10 is assigned on this host")
			}
		}
	}
	for _, tc := range []struct {
		desc     string
		freebind bool
	}{
		{"without freebind", false},
		{"with freebind", true},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			src := "[frontend.vip]\nbind = [\"192.0.2.10:0\"]\ndefault_backend = \"b\"\n"
			if tc.freebind {
				src += "freebind = true\n"
			}
			src += "[[backend.b.server]]\naddress = \"127.0.0.1:1\"\n"
			cfg, err := conf.Parse("freebind.toml", []byte(src))
			if err != nil {
				t.Fatal(err)
			}
			socks, err := Bind(cfg, nil)
			if !tc.freebind {
				if err == nil {
					socks.Close()
					t.Fatal("bound a non-local address without freebind")
				}
				if !errors.Is(err, syscall.EADDRNOTAVAIL) {
					t.Fatalf("got %v, want EADDRNOTAVAIL", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer socks.Close()
			for _, s := range socks {
				if host, _, _ := net.SplitHostPort(s.Listener.Addr().String()); host != "192.0.2.10" {
					t.Fatalf("listening on %s", s.Listener.Addr())
				}
			}
		})
	}
}
