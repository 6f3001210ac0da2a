package l4

import (
	"errors"
	"net"
	"sync/atomic"
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

// SetCopyHook, SetLoopHook and SetDatagramHook make h see the bytes of
// every read of the goroutine relay, the epoll relay, and every client
// datagram of a UDP reader, until the test ends; a test panics in it.
func SetCopyHook(t testing.TB, h func(b []byte))     { setHook(t, &testCopyHook, h) }
func SetLoopHook(t testing.TB, h func(b []byte))     { setHook(t, &testLoopHook, h) }
func SetDatagramHook(t testing.TB, h func(b []byte)) { setHook(t, &testDatagramHook, h) }

func setHook(t testing.TB, p *atomic.Pointer[func([]byte)], h func([]byte)) {
	p.Store(&h)
	t.Cleanup(func() { p.Store(nil) })
}

// Shutdowns is how many write halves the epoll relay shut down so far.
func Shutdowns() uint64 { return shutdowns.Load() }

// EndsWithData is how many ends the epoll relay read at once after their
// last bytes (the peer's FIN already in).
func EndsWithData() uint64 { return endsWithData.Load() }
