package l4

import (
	"errors"
	"net"
	"testing"
)

// UDPEcho starts a UDP echo server on ip (network "udp4" or "udp6") for the
// tests of both test packages, closed when the test ends. It returns nil
// when the host has no such loopback.
func UDPEcho(tb testing.TB, network, ip string) *net.UDPConn {
	tb.Helper()
	c, err := net.ListenUDP(network, &net.UDPAddr{IP: net.ParseIP(ip)})
	if err != nil {
		tb.Logf("no %s echo on %s: %v", network, ip, err)
		return nil
	}
	tb.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err != nil {
				continue
			}
			c.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	return c
}

// SetReplyHook makes h see every UDP reply before it is relayed (nil:
// none); a test panics in it to see the flow end and the others go on.
func SetReplyHook(h func(reply []byte)) { testReplyHook = h }
