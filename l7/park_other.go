//go:build !linux

package l7

// park is the Linux epoll wait of an idle client; elsewhere the client
// waits on a goroutine.
func (c *clientConn) park() bool { return false }

func (p *Proxy) unparkAll() {}
