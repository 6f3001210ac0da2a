package sockets

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Park takes a tcp listener out of Go's netpoller, for a socket whose
// connections sluice's own epoll loops accept (on a duplicate of their
// own). Left registered, every new connection woke Go's netpoller as well:
// an epoll_pwait and a context switch per connection for nothing
// (measured: 1.2 context switches per relayed connection, 0.8 parked).
// The socket stays open on a duplicate: File hands it to other processes
// as before, and Accept on the parked listener builds a Go listener again
// on first use, for a later user that accepts with goroutines.
func (s *Socket) Park() error {
	tl, ok := s.Listener.(*net.TCPListener)
	if !ok {
		return fmt.Errorf("socket %s: %T cannot be parked", s.Key, s.Listener)
	}
	fd, err := s.dup(tl)
	if err != nil {
		return err
	}
	p := &parked{fd: fd, addr: tl.Addr()}
	tl.Close() // leaves the netpoller; the duplicate keeps the socket
	s.Listener = p
	return nil
}

// parked is a listening socket held as a bare descriptor.
type parked struct {
	mu     sync.Mutex
	fd     int
	addr   net.Addr
	ln     net.Listener // built by the first Accept
	closed bool
}

var _ syscall.Conn = (*parked)(nil)

func (p *parked) Accept() (net.Conn, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, net.ErrClosed
	}
	if p.ln == nil {
		nfd, err := unix.FcntlInt(uintptr(p.fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			p.mu.Unlock()
			return nil, err
		}
		f := os.NewFile(uintptr(nfd), p.addr.String())
		ln, err := net.FileListener(f)
		f.Close()
		if err != nil {
			p.mu.Unlock()
			return nil, err
		}
		noKeepAlive(ln)
		p.ln = ln
	}
	ln := p.ln
	p.mu.Unlock()
	return ln.Accept()
}

func (p *parked) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return net.ErrClosed
	}
	p.closed = true
	if p.ln != nil {
		p.ln.Close()
	}
	return unix.Close(p.fd)
}

func (p *parked) Addr() net.Addr { return p.addr }

// SyscallConn gives File (and l4.Accept) the descriptor through Control.
func (p *parked) SyscallConn() (syscall.RawConn, error) { return parkedRaw{p}, nil }

type parkedRaw struct{ p *parked }

func (r parkedRaw) Control(f func(fd uintptr)) error {
	r.p.mu.Lock()
	defer r.p.mu.Unlock()
	if r.p.closed {
		return net.ErrClosed
	}
	f(uintptr(r.p.fd))
	return nil
}

var errParkedIO = errors.New("a parked listener is not read or written")

func (parkedRaw) Read(func(uintptr) bool) error  { return errParkedIO }
func (parkedRaw) Write(func(uintptr) bool) error { return errParkedIO }

// ParkListeners parks the tcp listeners and udp sockets of s that are not parked yet, for
// a process that holds sockets for others and never accepts on them (the
// master): left in its netpoller, every connection a worker accepts woke
// the master too (measured: an epoll_pwait every 2.5 new connections, 13%
// of a core on new-connection-per-request traffic). It returns the first
// error; the sockets it could not park stay as they were, and work.
func ParkListeners(s Set) error {
	var first error
	for k, sock := range s {
		var err error
		switch {
		case k.Network == "udp":
			if _, ok := sock.Packet.(*net.UDPConn); ok {
				err = sock.parkPacket()
			}
		case k.Network == "tcp":
			if _, ok := sock.Listener.(*net.TCPListener); ok {
				err = sock.Park()
			}
		}
		if err != nil && first == nil {
			first = err
		}
	}
	return first
}

// parkPacket takes a udp socket out of the netpoller, for ParkListeners:
// each datagram a worker read woke the holder too. The parked socket is
// only handed over (File) and closed; its reads and writes fail.
func (s *Socket) parkPacket() error {
	uc, ok := s.Packet.(*net.UDPConn)
	if !ok {
		return fmt.Errorf("socket %s: %T cannot be parked", s.Key, s.Packet)
	}
	fd, err := s.dup(uc)
	if err != nil {
		return err
	}
	p := &parkedPacket{parked: parked{fd: fd, addr: uc.LocalAddr()}}
	uc.Close()
	s.Packet = p
	return nil
}

// errParked is the I/O of a parked udp socket: its holder only hands it on.
var errParked = errors.New("parked socket: held to be handed over, not read or written")

// parkedPacket is a udp socket held as a bare descriptor.
type parkedPacket struct{ parked }

var _ net.PacketConn = (*parkedPacket)(nil)

func (p *parkedPacket) ReadFrom([]byte) (int, net.Addr, error) { return 0, nil, errParked }
func (p *parkedPacket) WriteTo([]byte, net.Addr) (int, error)  { return 0, errParked }
func (p *parkedPacket) LocalAddr() net.Addr                    { return p.addr }
func (p *parkedPacket) SetDeadline(time.Time) error            { return nil }
func (p *parkedPacket) SetReadDeadline(time.Time) error        { return nil }
func (p *parkedPacket) SetWriteDeadline(time.Time) error       { return nil }
