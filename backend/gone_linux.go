package backend

import (
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// watchGone watches the client connection conn while its connect waits and
// calls gone when the client closes it: a reset, and unless resetOnly a
// FIN, whether or not bytes wait unread (as HAProxy's `option
// abortonclose` for a queued HTTP request; TCP cannot tell a half-close
// from a close). resetOnly (tcp) keeps a client that half-closed: it sent
// all it had and may still read. The goroutine sleeps on the runtime's
// poller (a peek at each wake-up, no byte consumed) until stop, which
// returns once it is gone and leaves the read deadline cleared. nil when
// conn is no socket it can wait on.
func watchGone(conn net.Conn, resetOnly bool, gone func()) (stop func()) {
	conn = rawConn(conn)
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	// A deadline left from reading the request head must not end the
	// watch early; the stop below clears it again.
	conn.SetReadDeadline(time.Time{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		var b [1]byte
		rc.Read(func(fd uintptr) bool {
			for {
				n, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
				switch {
				case err == unix.EINTR:
					continue
				case err == unix.EAGAIN:
					return false // sleep until the socket changes
				case err != nil:
					gone() // reset
					return true
				case n == 0 && !resetOnly:
					gone()
					return true
				case n == 0:
					// A FIN: the socket stays readable, but the
					// edge-triggered poller wakes again only for a
					// change, such as a reset.
					return false
				}
				// Bytes wait to be read, so the peek cannot see an end
				// behind them: the TCP state can.
				if info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); err == nil && (info.State == tcpClose || info.State == tcpCloseWait && !resetOnly) {
					gone()
					return true
				}
				return false
			}
		})
	}()
	return func() {
		conn.SetReadDeadline(time.Unix(1, 0))
		<-done
		conn.SetReadDeadline(time.Time{})
	}
}

// TCP states in tcp_info: the peer closed (FIN) or reset.
const (
	tcpClose     = 7
	tcpCloseWait = 8
)

// rawConn unwraps conn to the connection it wraps (TLS, a replay of peeked
// bytes, a PROXY header reader), as far as they tell.
func rawConn(conn net.Conn) net.Conn {
	for range 8 {
		u, ok := conn.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		conn = u.NetConn()
	}
	return conn
}
