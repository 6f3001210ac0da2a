package l4

import (
	"net"
	"strconv"
	"testing"
	"time"
)

// dialUDP's socket reaches an IPv4, an IPv6 and a named server, and a bad
// address is an error.
func TestDialUDP(t *testing.T) {
	echo := func(network, ip string) int {
		if c := UDPEcho(t, network, ip); c != nil {
			return c.LocalAddr().(*net.UDPAddr).Port
		}
		return 0
	}
	p4 := echo("udp4", "127.0.0.1")
	if p4 == 0 {
		t.Fatal("no IPv4 loopback")
	}
	addrs := []string{"127.0.0.1:" + strconv.Itoa(p4), "localhost:" + strconv.Itoa(p4)}
	if p6 := echo("udp6", "::1"); p6 != 0 {
		addrs = append(addrs, "[::1]:"+strconv.Itoa(p6))
	}
	for _, addr := range addrs {
		f, err := dialUDP(addr)
		if err != nil {
			t.Fatalf("%s: %v", addr, err)
		}
		if _, err := f.Write([]byte("ping " + addr)); err != nil {
			t.Fatalf("%s: write: %v", addr, err)
		}
		f.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 512)
		n, err := f.Read(buf)
		if err != nil || string(buf[:n]) != "ping "+addr {
			t.Fatalf("%s: echo %q, %v", addr, buf[:n], err)
		}
		f.Close()
	}
	if _, err := dialUDP("not an address"); err == nil {
		t.Fatal("a bad address was dialed")
	}
}
