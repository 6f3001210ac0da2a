// Package sockets binds listening sockets and carries them between
// processes. A socket is known by its Key ("tcp 127.0.0.1:80"), so a process
// that inherits files can match them to the listeners its config asks for.
package sockets

import (
	"context"
	"fmt"
	"net"
	"os"
	"reflect"
	"syscall"
	"unsafe"

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
//
// The duplicate is made here rather than with net's File(): os/exec calls
// Fd on every ExtraFile, and Fd of a file from net's File() switches the
// descriptor to blocking mode. O_NONBLOCK belongs to the open file
// description, which the master and every worker holding the socket share:
// a running worker's accept(2) then blocked in the kernel, where closing
// the listener does not wake it, and the worker hung in StopAccepting.
// A file from os.NewFile keeps the descriptor as it is.
func (s *Socket) File() (*os.File, error) {
	var sc syscall.Conn
	switch {
	case s.Listener != nil:
		sc, _ = s.Listener.(syscall.Conn)
	case s.Packet != nil:
		sc, _ = s.Packet.(syscall.Conn)
	}
	if sc == nil {
		return nil, fmt.Errorf("socket %s cannot be handed over", s.Key)
	}
	nfd, err := s.dup(sc)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(nfd), s.Key.String()), nil
}

// dup duplicates the descriptor of sc (close on exec, its flags kept).
func (s *Socket) dup(sc syscall.Conn) (int, error) {
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1, fmt.Errorf("socket %s: %w", s.Key, err)
	}
	nfd, derr := -1, error(nil)
	if err := rc.Control(func(fd uintptr) {
		nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return -1, fmt.Errorf("socket %s: %w", s.Key, err)
	}
	if derr != nil {
		return -1, fmt.Errorf("socket %s: dup: %w", s.Key, derr)
	}
	return nfd, nil
}

// SetDeferAccept sets TCP_DEFER_ACCEPT on a tcp listener: with it on, the
// kernel hands over a connection only once its first bytes arrived (or,
// for a silent client, after a SYN-ACK retransmit, about a second), so the
// first read finds the request and the connection never waits in the
// poller: a third of the connections of a new-connection-per-request load
// did, at the cost of an os.File, fcntl, two epoll_ctl and a watched
// close. Set (or cleared) at every start: the socket outlives reloads.
func (s *Socket) SetDeferAccept(on bool) error {
	sc, ok := s.Listener.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	secs := 0
	if on {
		secs = 1
	}
	if cerr := rc.Control(func(fd uintptr) {
		err = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, secs)
	}); cerr != nil {
		return cerr
	}
	return err
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
	// Plain TCP, as HAProxy binds unless told "mptcp@": Go (1.24 on)
	// makes listeners Multipath TCP by default, whose accepted
	// connections from MPTCP clients neither splice nor take every
	// socket option sluice sets (TCP MD5, say), and whose SYNs take the
	// MPTCP path in the kernel for nothing.
	lc.SetMultipathTCP(false)
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
		if err == nil {
			noKeepAlive(s.Listener)
		}
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

// noKeepAlive gives a listener made by net.FileListener what Listen's
// ListenConfig says (KeepAlive -1), which FileListener has no way to take:
// otherwise each accepted connection gets keep-alive probes, and four
// setsockopt calls, that the workers (which only ever inherit) were not
// meant to have. The field is found by name and type, so a net package
// that changes shape leaves keep-alive on instead of writing astray; a test
// notices.
func noKeepAlive(ln net.Listener) {
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		return
	}
	v := reflect.ValueOf(tl).Elem().FieldByName("lc")
	if !v.IsValid() || v.Type() != reflect.TypeFor[net.ListenConfig]() {
		return
	}
	(*net.ListenConfig)(unsafe.Pointer(v.UnsafeAddr())).KeepAlive = -1
}

// Set is the sockets a process serves, by key.
type Set map[Key]*Socket

// Close closes every socket in the set.
func (s Set) Close() {
	for _, sock := range s {
		sock.Close()
	}
}

// Roles say what a handed-over socket is for. A manifest carries the role
// with each socket so that a process can tell them apart; the role is not
// part of the Key (a socket is reused across reloads by network and address
// alone).
const (
	RoleFrontend = "frontend" // a tcp/http/udp frontend's listener
	RoleStats    = "stats"    // the stats/admin HTTP listener ([stats] bind)
	RolePeers    = "peers"    // the stick-table sync listener ([peers] bind)
	RoleControl  = "control"  // the master's control socket (binary upgrade only)
)

// Spec is one socket a configuration needs.
type Spec struct {
	Key     Key
	Role    string
	Options Options
}

// Bind returns a set holding a socket for every spec: taken from have when a
// socket with the same key is there, bound otherwise. On error the sockets it
// bound are closed again and have is left alone. Sockets of have that specs
// do not name are not in the result (and not closed).
func Bind(specs []Spec, have Set) (Set, error) {
	out := Set{}
	for _, sp := range specs {
		if _, dup := out[sp.Key]; dup {
			continue
		}
		if s, ok := have[sp.Key]; ok {
			out[sp.Key] = s
			continue
		}
		s, err := Listen(sp.Key, sp.Options)
		if err != nil {
			for k, s2 := range out {
				if _, inherited := have[k]; !inherited {
					s2.Close()
				}
			}
			return nil, fmt.Errorf("%s %s: %w", sp.Role, sp.Key, err)
		}
		out[sp.Key] = s
	}
	return out, nil
}

// Entry is one line of a manifest: which descriptor of the receiving process
// holds which socket.
type Entry struct {
	Network string `json:"network"`
	Addr    string `json:"addr"`
	Role    string `json:"role,omitempty"`
	FD      int    `json:"fd"`
}

// Key returns the entry's socket key.
func (e Entry) Key() Key { return Key{Network: e.Network, Addr: e.Addr} }

// Adopt rebuilds the sockets an entry list names from descriptors this
// process inherited (fd numbers as listed). Every listed descriptor is
// consumed, also on error.
func Adopt(entries []Entry) (Set, error) {
	out := Set{}
	var firstErr error
	for _, e := range entries {
		f := os.NewFile(uintptr(e.FD), e.Network+":"+e.Addr)
		if f == nil {
			if firstErr == nil {
				firstErr = fmt.Errorf("inherit %s: bad descriptor %d", e.Key(), e.FD)
			}
			continue
		}
		if firstErr != nil {
			f.Close()
			continue
		}
		s, err := FromFile(e.Key(), f)
		if err != nil {
			firstErr = err
			continue
		}
		out[e.Key()] = s
	}
	if firstErr != nil {
		out.Close()
		return nil, firstErr
	}
	return out, nil
}
