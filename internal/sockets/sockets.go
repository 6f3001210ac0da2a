// Package sockets binds listening sockets and carries them between
// processes. A socket is known by its Key ("tcp 127.0.0.1:80"), so a process
// that inherits files can match them to the listeners its config asks for.
package sockets

import (
	"context"
	"fmt"
	"net"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// Key names a listening socket by network and address.
type Key struct {
	Network string // "tcp" or "udp"
	Addr    string // host:port as configured (after template expansion)
}

func (k Key) String() string { return k.Network + " " + k.Addr }

// Options tune how a socket is bound.
type Options struct {
	Freebind bool // IP_FREEBIND: bind an address this host does not hold yet
}

// Socket is a bound listening socket: a net.Listener for tcp, a
// net.PacketConn for udp.
type Socket struct {
	Key      Key
	Listener net.Listener
	Packet   net.PacketConn
}

// Close closes the socket.
func (s *Socket) Close() error {
	if s.Listener != nil {
		return s.Listener.Close()
	}
	if s.Packet != nil {
		return s.Packet.Close()
	}
	return nil
}

// File returns a duplicate of the socket's file descriptor, to hand to
// another process. The caller closes it.
func (s *Socket) File() (*os.File, error) {
	type filer interface{ File() (*os.File, error) }
	var f filer
	switch {
	case s.Listener != nil:
		f, _ = s.Listener.(filer)
	case s.Packet != nil:
		f, _ = s.Packet.(filer)
	}
	if f == nil {
		return nil, fmt.Errorf("socket %s cannot be handed over", s.Key)
	}
	return f.File()
}

// Listen binds k with SO_REUSEADDR (and IP_FREEBIND when asked).
func Listen(k Key, o Options) (*Socket, error) {
	// KeepAlive -1: no TCP keep-alive probes on accepted connections (HAProxy's
	// default too); the idle timeouts bound dead clients.
	lc := net.ListenConfig{KeepAlive: -1, Control: func(network, address string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			if o.Freebind {
				if e := unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_FREEBIND, 1); e != nil {
					serr = fmt.Errorf("IP_FREEBIND: %w", e)
					return
				}
				// IPv6 has its own option; ignore failure on v4 sockets.
				_ = unix.SetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_FREEBIND, 1)
			}
		})
		if err != nil {
			return err
		}
		return serr
	}}
	s := &Socket{Key: k}
	var err error
	switch k.Network {
	case "tcp":
		s.Listener, err = lc.Listen(context.Background(), "tcp", k.Addr)
	case "udp":
		s.Packet, err = lc.ListenPacket(context.Background(), "udp", k.Addr)
	default:
		return nil, fmt.Errorf("unknown network %q", k.Network)
	}
	if err != nil {
		return nil, err
	}
	return s, nil
}

// FromFile rebuilds a socket from an inherited file. The file is closed; the
// socket keeps its own descriptor.
func FromFile(k Key, f *os.File) (*Socket, error) {
	defer f.Close()
	s := &Socket{Key: k}
	var err error
	switch k.Network {
	case "tcp":
		s.Listener, err = net.FileListener(f)
	case "udp":
		s.Packet, err = net.FilePacketConn(f)
	default:
		err = fmt.Errorf("unknown network %q", k.Network)
	}
	if err != nil {
		return nil, fmt.Errorf("inherit %s: %w", k, err)
	}
	return s, nil
}

// Set is the sockets a process serves, by key.
type Set map[Key]*Socket

// Close closes every socket in the set.
func (s Set) Close() {
	for _, sock := range s {
		sock.Close()
	}
}
