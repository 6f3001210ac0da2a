package l7

import (
	"sync/atomic"

	"sluice/l4"
)

// tunnel relays an upgraded connection (WebSocket and the like) both ways
// with half-close, idle for at most timeout_tunnel. Bytes the server sent
// right after its 101 head and bytes the client sent after its request are
// delivered first.
func (c *clientConn) tunnel(sc *serverConn, x *exchange) {
	if n := sc.hr.buffered(); n > 0 {
		if _, err := c.conn.Write(sc.hr.buf[sc.hr.r : sc.hr.r+n]); err != nil {
			return
		}
		sc.hr.r += n
	}
	if n := c.hr.buffered(); n > 0 {
		if _, err := sc.conn.Write(c.hr.buf[c.hr.r : c.hr.r+n]); err != nil {
			return
		}
		c.hr.r += n
	}
	c.log(x)
	l4.Relay(c.conn, sc.conn, l4.RelayOptions{
		ClientIdle: c.p.TimeoutTunnel,
		ServerIdle: c.p.TimeoutTunnel,
		In:         []*atomic.Uint64{&c.p.Counters.BytesIn, &sc.srv.Counters.BytesIn},
		Out:        []*atomic.Uint64{&c.p.Counters.BytesOut, &sc.srv.Counters.BytesOut},
	})
}
