//go:build !linux

package l7

// The HTTP/2 fast path needs epoll: elsewhere every stream takes a
// goroutine.

type fastConn struct{}

func (c *h2Conn) fastStart(s *h2Stream) bool { return false }
func (fc *fastConn) forget()                 {}
func (fc *fastConn) kill(s *h2Stream)        {}
func (c *h2Conn) fastClosed()                {}
