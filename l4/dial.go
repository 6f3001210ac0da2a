package l4

import (
	"net"
	"time"
)

// Dial connects to a server. TCP keep-alive probes stay off, as in HAProxy
// without "option srvtcpka": the idle timeouts already bound dead peers, and
// enabling them costs four setsockopt calls per connection.
func Dial(addr string, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout, KeepAlive: -1}
	return d.Dial("tcp", addr)
}
