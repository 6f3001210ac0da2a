//go:build !linux

package frontend

import "net"

// fdAccepter: accept4 on bare descriptors is Linux's (acceptfd_linux.go).
func (f *Frontend) fdAccepter(net.Listener, *Server) func() (net.Conn, error) { return nil }
