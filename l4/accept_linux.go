package l4

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"sluice/backend"
	"sluice/internal/rawio"
)

// The loops also accept a plain tcp frontend's connections and connect
// them to their server themselves: a connection then never enters Go's
// netpoller nor wakes a goroutine (accept4, socket, connect, epoll_ctl and
// the relay's reads and writes, as HAProxy does). The decisions are the
// backend's (TryPick, Connected, Failed: the steps Backend.Connect is
// made of); what a loop cannot do without waiting goes to the goroutine
// path through LoopTCP.Fallback: a frontend at its maxconn, a connection
// that would queue for a server.

// LoopTCP is what the loops need to serve a tcp frontend's connections.
// The functions run on a loop: they must not block.
type LoopTCP struct {
	Backend *backend.Backend
	// Budget is the process's server-connection budget (nil: no limit).
	Budget     *backend.ServerConns
	ClientIdle time.Duration
	// In and Out are the frontend's byte counters (client to server and
	// back); the server's are added at connect.
	In, Out *atomic.Uint64
	Panics  *atomic.Uint64
	Log     *slog.Logger
	Group   *Group // whose Kill ends these connections, connecting or relayed

	// Admit takes the frontend's and the process's connection slots
	// without waiting, and reports whether it did; Opened then counts the
	// connection and Closed, once, its end (peer: the client).
	Admit  func() bool
	Opened func()
	Closed func(peer netip.Addr)
	// Check, when set, decides a connection Opened counted before a
	// server is picked (the frontend's edge policy): false when it took
	// the connection over (closed fd, or holds it) and ends it itself,
	// without Closed.
	Check func(fd int, peer netip.Addr) bool
	// First sees the client's first bytes.
	First func(peer netip.Addr, b []byte)
	// Fallback takes over a connection the loop cannot serve, owning fd
	// (the client's, non-blocking): admitted false when Admit refused it
	// (the frontend is at a cap: the listener is paused until Resume),
	// true when it would queue for a server (Opened and Check ran; retries
	// is how many connects were already retried).
	Fallback func(a *Acceptor, fd int, peer netip.AddrPort, admitted bool, retries int)

	// Counted in as serveTCP does: refused before reaching a server, a
	// connect that failed after the retries, the budget spent.
	Denied, Errors, ServerConnsExhausted *atomic.Uint64
	// Loop counts connections connected by a loop.
	Loop *atomic.Uint64
}

// Acceptor is a listening socket whose connections the loops accept.
type Acceptor struct {
	fd    int // a duplicate of the listener's, owned here
	t     *LoopTCP
	loops []*loop
	// mu is held by a loop for a batch of accepts, and by Close, Pause and
	// Resume: the descriptor is never closed under an accept. Per listener,
	// uncontended but for the few loops.
	mu     sync.Mutex
	closed bool
	paused bool
}

// maxAccept bounds the accepts of one readiness event, so that a flood of
// new connections does not starve the relays of the loop. 4 is HAProxy's
// tune.maxaccept: with 32, a loop dialled a burst of servers before it
// relayed any request, and the servers idled meanwhile (tcp conn-per-req
// +1 to +5% req/s in 8 of 9 interleaved pairs, the loop idling less; 1
// costs more CPU).
const maxAccept = 4

// Accept has the loops accept ln's connections for t. It fails, leaving ln
// alone, when the loops do not run or ln is no plain TCP listener; the
// caller then accepts with ln.Accept. ln stays open and no one accepts on
// it: Close the Acceptor before (or as) it closes.
func Accept(ln net.Listener, t *LoopTCP) (*Acceptor, error) {
	ls := loopsNow.Load()
	if ls == nil {
		return nil, errors.New("epoll loops not running")
	}
	tl, ok := ln.(syscall.Conn) // *net.TCPListener, or a parked one
	if !ok || ln.Addr().Network() != "tcp" {
		return nil, fmt.Errorf("%T is not a TCP listener", ln)
	}
	rc, err := tl.SyscallConn()
	if err != nil {
		return nil, err
	}
	fd := -1
	if err := rc.Control(func(lfd uintptr) {
		fd, err = unix.FcntlInt(lfd, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil || fd < 0 {
		return nil, fmt.Errorf("dup listener: %v", err)
	}
	// Accepted sockets inherit TCP_NODELAY from the listener, as Go sets
	// it on each: one system call here instead of one per connection.
	unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	a := &Acceptor{fd: fd, t: t, loops: *ls}
	a.mu.Lock()
	defer a.mu.Unlock()
	for i, l := range a.loops {
		if err := l.addAcceptor(a); err != nil {
			for _, l := range a.loops[:i] {
				l.delAcceptor(a)
			}
			rawClose(fd)
			LoopErrors.Add(1)
			return nil, err
		}
	}
	return a, nil
}

// addAcceptor registers a with l: every loop waits on the listener, and
// EPOLLEXCLUSIVE wakes one of them per connection. Under a.mu.
func (l *loop) addAcceptor(a *Acceptor) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return net.ErrClosed
	}
	if err := l.p.Add(a.fd, unix.EPOLLIN|unix.EPOLLEXCLUSIVE); err != nil {
		return err
	}
	l.acceptors[a.fd] = a
	return nil
}

func (l *loop) delAcceptor(a *Acceptor) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.acceptors[a.fd] == a {
		delete(l.acceptors, a.fd)
		if !l.closed {
			l.p.Del(a.fd)
		}
	}
}

// Close stops accepting and closes the duplicate descriptor; connections
// already accepted go on. Safe to call more than once.
func (a *Acceptor) Close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return
	}
	a.closed = true
	for _, l := range a.loops {
		l.delAcceptor(a)
	}
	rawClose(a.fd)
}

// pause stops every loop from accepting (under a.mu), until Resume.
func (a *Acceptor) pause() {
	if a.paused || a.closed {
		return
	}
	a.paused = true
	for _, l := range a.loops {
		l.delAcceptor(a)
	}
}

// Resume has the loops accept again after a pause (Fallback with admitted
// false). Safe from any goroutine.
func (a *Acceptor) Resume() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.paused || a.closed {
		return
	}
	a.paused = false
	for _, l := range a.loops {
		if l.addAcceptor(a) != nil {
			LoopErrors.Add(1)
		}
	}
}

// accept takes a's pending connections, up to maxAccept.
func (l *loop) accept(a *Acceptor) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for range maxAccept {
		if a.closed || a.paused {
			return
		}
		fd, peer, err := rawAccept(a.fd)
		switch {
		case err == nil:
			l.accepted(a, fd, peer)
		case err == unix.EAGAIN:
			return
		case err == unix.EINTR || err == unix.ECONNABORTED:
		default:
			// EMFILE and friends: the listener stays readable, so stop
			// watching it for a while instead of spinning.
			LoopErrors.Add(1)
			a.t.Log.Warn("accept failed; retrying", "err", err, "retry_in", time.Second)
			a.pause()
			time.AfterFunc(time.Second, a.Resume)
			return
		}
	}
}

// accepted serves a new client connection: a free slot, a server, and a
// non-blocking connect to it; whatever has to wait goes to Fallback.
func (l *loop) accepted(a *Acceptor, fd int, peer netip.AddrPort) {
	t := a.t
	if !t.Admit() {
		// At the frontend's or the process's maxconn: the goroutine path
		// holds this one connection until a slot frees, and the listener
		// takes no more meanwhile (clients wait in the kernel's queue).
		a.pause()
		t.Fallback(a, fd, peer, false, 0)
		return
	}
	t.Opened()
	if t.Check != nil && !t.Check(fd, peer.Addr()) {
		return
	}
	p := &pair{lf: t, peer: peer, group: t.Group}
	p.opts.Panics, p.opts.Log = t.Panics, t.Log
	p.cn.Client.Addr = peer.Addr()
	p.cn.Budget = t.Budget
	p.cn.ObserveConnect = true
	p.sides[0] = side{fd: fd, idle: t.ClientIdle}
	p.sides[1] = side{fd: -1, idle: t.Backend.TimeoutServer}
	p.connecting = true
	p.last.Store(l.now)
	l.mu.Lock()
	l.pairs[p] = struct{}{}
	l.mu.Unlock()
	if g := t.Group; g != nil && g.killed.Load() {
		l.end(p, net.ErrClosed)
		return
	}
	l.dial(p)
}

// dial picks a server for p and starts connecting to it, again on another
// server while a connect fails at once and retries last.
func (l *loop) dial(p *pair) {
	t := p.lf
	be := t.Backend
	for {
		srv, err := be.TryPick(&p.cn)
		switch {
		case err == backend.ErrWouldQueue:
			l.handOff(p)
			return
		case err != nil: // ErrNoServer
			if p.cn.Retries > 0 {
				t.Errors.Add(1) // the connect error stands
			} else {
				t.Denied.Add(1)
			}
			l.end(p, nil)
			return
		}
		ap, perr := netip.ParseAddrPort(srv.Addr)
		if perr != nil || ap.Addr().Zone() != "" {
			// A name, or a zone: the dialer of the goroutine path knows
			// what to do with it.
			p.cn.Abandon()
			l.handOff(p)
			return
		}
		if err := p.cn.TakeSlot(); err != nil {
			p.cn.Abandon()
			t.Denied.Add(1)
			t.ServerConnsExhausted.Add(1)
			l.end(p, nil)
			return
		}
		p.holding = true
		sfd, err := rawConnect(ap)
		if err == unix.EINPROGRESS {
			// On loopback and near servers the handshake is often done by
			// the time connect returns: asking again (as HAProxy does
			// before it waits) saves the wait for writability, an
			// epoll_ctl and a turn of the loop, and the request reaches
			// the server sooner.
			err = rawConnect2(sfd, ap)
		}
		if err == nil || err == unix.EINPROGRESS {
			p.sides[1].fd = sfd
			if err == nil {
				l.connected(p)
				return
			}
			p.deadline = 0
			if be.TimeoutConnect > 0 {
				p.deadline = l.now + int64(be.TimeoutConnect)
			}
			p.sides[1].watched, p.sides[1].events = true, unix.EPOLLOUT
			l.mu.Lock()
			l.byFD[sfd] = p
			err = l.p.Add(sfd, unix.EPOLLOUT)
			l.mu.Unlock()
			if err != nil {
				LoopErrors.Add(1)
				l.end(p, err)
			}
			return
		}
		if sfd >= 0 {
			rawClose(sfd)
		}
		if !l.connectFailed(p, err) {
			return
		}
	}
}

// connectFailed reports a failed connect of p, whose server descriptor is
// closed, and reports true when the caller should dial again; otherwise p
// has ended.
func (l *loop) connectFailed(p *pair, err error) bool {
	t := p.lf
	p.holding = false
	t.Log.Debug("connect failed", "backend", t.Backend.Name, "server", p.cn.Server.Name, "err", err)
	if t.Backend.Failed(&p.cn, backend.ConnectFailed(err)) {
		return true
	}
	t.Errors.Add(1)
	l.end(p, nil)
	return false
}

// connecting handles readiness of p's server descriptor while it connects.
func (l *loop) connecting(p *pair, ev uint32) {
	if ev&(unix.EPOLLERR|unix.EPOLLHUP) == 0 {
		l.connected(p) // writable without an error: the handshake is done
		return
	}
	errno, _ := unix.GetsockoptInt(p.sides[1].fd, unix.SOL_SOCKET, unix.SO_ERROR)
	if errno == 0 {
		errno = int(unix.ECONNRESET)
	}
	l.retry(p, unix.Errno(errno))
}

// retry drops p's server descriptor after a failed connect (a refusal, a
// timeout) and dials again when Failed says so.
func (l *loop) retry(p *pair, err error) {
	sfd := p.sides[1].fd
	l.mu.Lock()
	delete(l.byFD, sfd)
	l.mu.Unlock()
	rawClose(sfd) // epoll forgets it too
	p.sides[1].fd, p.sides[1].watched = -1, false
	if l.connectFailed(p, err) {
		l.dial(p)
	}
}

// connected turns p into a relay.
func (l *loop) connected(p *pair) {
	t := p.lf
	p.connecting = false
	p.cn.Connected()
	srv := p.cn.Server
	p.ctrs = [4]*atomic.Uint64{t.In, &srv.Counters.BytesIn, t.Out, &srv.Counters.BytesOut}
	p.sides[0].counters, p.sides[1].counters = p.ctrs[:2], p.ctrs[2:]
	p.last.Store(l.now)
	if t.Loop != nil {
		t.Loop.Add(1)
	}
	c, s := &p.sides[0], &p.sides[1]
	l.mu.Lock()
	l.byFD[c.fd], l.byFD[s.fd] = p, p
	err := l.p.Add(c.fd, epollIn)
	if err == nil {
		if s.watched {
			err = l.p.Mod(s.fd, epollIn)
		} else {
			err = l.p.Add(s.fd, epollIn)
		}
	}
	l.mu.Unlock()
	c.watched, c.events = true, epollIn
	s.watched, s.events = true, epollIn
	if err != nil {
		LoopErrors.Add(1)
		l.end(p, err)
		return
	}
	// The client spoke while the server was being connected, as a client
	// of a client-first protocol does right after its connect: its bytes
	// go now rather than after another turn of the loop (HAProxy reads
	// them at accept). Nothing there: EAGAIN, and the loop waits as usual.
	l.read(p, c, s)
}

// handOff gives p's client to the goroutine path, which waits in the
// queue: p ends here without closing it or counting its end.
func (l *loop) handOff(p *pair) {
	p.ended = true
	l.mu.Lock()
	delete(l.pairs, p)
	l.mu.Unlock()
	p.lf.Fallback(nil, p.sides[0].fd, p.peer, true, p.cn.Retries)
}

// finish is the end of a pair the loop accepted: the server and its budget
// slot go back, the frontend counts the end.
func (p *pair) finish(err error) {
	if p.holding {
		p.holding = false
		p.cn.Abandon()
	}
	if err != nil && !errors.Is(err, ErrIdle) {
		p.lf.Log.Debug("relay ended", "client", p.peer, "err", err)
	}
	p.lf.Closed(p.peer.Addr())
}

// rawAccept is accept4 (non-blocking, close on exec) with the peer's
// address read from the kernel's sockaddr, without allocating.
func rawAccept(lfd int) (int, netip.AddrPort, error) {
	var rsa syscall.RawSockaddrAny
	fd, err := rawio.Accept4(lfd, &rsa, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
	if err != nil {
		return -1, netip.AddrPort{}, err
	}
	return fd, rawio.AddrPort(&rsa), nil
}

// rawConnect opens a non-blocking socket and connects it to ap: nil (done
// at once), EINPROGRESS (wait for writability) or the failure, with the
// descriptor (-1 when none was opened).
func rawConnect(ap netip.AddrPort) (int, error) {
	family := unix.AF_INET6
	if ap.Addr().Is4() || ap.Addr().Is4In6() {
		family = unix.AF_INET
	}
	r, _, e := unix.RawSyscall(unix.SYS_SOCKET, uintptr(family), unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if e != 0 {
		return -1, e
	}
	fd := int(r)
	one := int32(1)
	unix.RawSyscall6(unix.SYS_SETSOCKOPT, uintptr(fd), unix.IPPROTO_TCP, unix.TCP_NODELAY, uintptr(unsafe.Pointer(&one)), 4, 0)
	return fd, sysConnect(fd, ap)
}

// rawConnect2 asks again how fd's connect to ap goes: nil (done),
// EINPROGRESS (still under way: wait for writability) or the failure (a
// refusal, say).
func rawConnect2(fd int, ap netip.AddrPort) error {
	switch err := sysConnect(fd, ap); err {
	case unix.EALREADY, unix.EINPROGRESS:
		return unix.EINPROGRESS
	case unix.EISCONN:
		return nil
	default:
		return err
	}
}

// sysConnect is connect(2) of fd to ap, without allocating.
func sysConnect(fd int, ap netip.AddrPort) error {
	port := ap.Port()
	var e unix.Errno
	if ap.Addr().Is4() || ap.Addr().Is4In6() {
		sa := unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: ap.Addr().Unmap().As4()}
		pp := (*[2]byte)(unsafe.Pointer(&sa.Port))
		pp[0], pp[1] = byte(port>>8), byte(port)
		_, _, e = unix.RawSyscall(unix.SYS_CONNECT, uintptr(fd), uintptr(unsafe.Pointer(&sa)), unix.SizeofSockaddrInet4)
	} else {
		sa := unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: ap.Addr().As16()}
		pp := (*[2]byte)(unsafe.Pointer(&sa.Port))
		pp[0], pp[1] = byte(port>>8), byte(port)
		_, _, e = unix.RawSyscall(unix.SYS_CONNECT, uintptr(fd), uintptr(unsafe.Pointer(&sa)), unix.SizeofSockaddrInet6)
	}
	if e != 0 {
		return e
	}
	return nil
}
