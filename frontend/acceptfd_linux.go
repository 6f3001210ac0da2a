package frontend

import (
	"net"
	"net/netip"
	"os"
	"syscall"

	"golang.org/x/sys/unix"

	"sluice/internal/fdconn"
	"sluice/internal/rawio"
)

// fdAccepter accepts with accept4 on the listener's descriptor and makes
// an fdconn.Conn of each connection, for every http frontend (plain, h2c,
// TLS, whose handshake and records go through it too, and accept_proxy,
// whose header it reads): the connection enters Go's netpoller only if it
// must wait, and then reads and writes with raw system calls (see fdconn).
// nil when ln cannot.
func (f *Frontend) fdAccepter(ln net.Listener, s *Server) func() (net.Conn, error) {
	done := s.done
	tl, ok := ln.(*net.TCPListener)
	if f.http == nil || !ok || testConnHook != nil {
		return nil
	}
	lrc, err := tl.SyscallConn()
	if err != nil {
		return nil
	}
	// A listener's RawConn cannot wait (net refuses Read): a duplicate
	// descriptor in an os.File can, closed when the server stops
	// accepting (the listener's Close does not wake it). Accepted sockets
	// inherit TCP_NODELAY from the listener, which Go's accept sets on
	// each: one system call here instead of one a connection.
	dup := -1
	lrc.Control(func(fd uintptr) {
		unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
		dup, _ = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	})
	if dup < 0 {
		return nil
	}
	lf := os.NewFile(uintptr(dup), "listener")
	rc, err := lf.SyscallConn()
	if err != nil {
		lf.Close()
		return nil
	}
	// StopAccepting closes it (a loop started after it, closed here).
	s.mu.Lock()
	select {
	case <-done:
		s.mu.Unlock()
		lf.Close()
		return nil
	default:
	}
	s.fdListeners = append(s.fdListeners, lf)
	s.mu.Unlock()
	// A listener bound to one address is every connection's local
	// address: no getsockname a connection.
	local := addrPort(tl.Addr())
	fixed := local.Addr().IsValid() && !local.Addr().IsUnspecified()
	var (
		nfd  int
		rsa  syscall.RawSockaddrAny
		aerr error
	)
	// A raw accept4: x/sys/unix's asks the listener its SO_PROTOCOL after
	// every accept of an IPv4 connection, and both allocate the address.
	accept := func(lfd uintptr) bool {
		nfd, aerr = rawio.Accept4(int(lfd), &rsa, syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC)
		return aerr != syscall.EAGAIN
	}
	return func() (net.Conn, error) {
		for {
			if err := rc.Read(accept); err != nil {
				select {
				case <-done: // lf closed: "use of closed file"
					return nil, net.ErrClosed
				default:
				}
				return nil, err
			}
			switch aerr {
			case nil:
			case syscall.ECONNABORTED, syscall.EINTR:
				continue // the client left before its accept
			default:
				return nil, os.NewSyscallError("accept4", aerr)
			}
			l := local
			if !fixed {
				if lsa, err := syscall.Getsockname(nfd); err == nil {
					l = sockaddrAddrPort(lsa)
				}
			}
			return fdconn.New(nfd, rawio.AddrPort(&rsa), l), nil
		}
	}
}

func sockaddrAddrPort(sa syscall.Sockaddr) netip.AddrPort {
	switch a := sa.(type) {
	case *syscall.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
	case *syscall.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr).Unmap(), uint16(a.Port))
	}
	return netip.AddrPort{}
}
