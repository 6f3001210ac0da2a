package frontend

import (
	"net"
	"net/netip"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"sluice/conf"
	"sluice/internal/sockets"
	"sluice/l4"
	"sluice/policy"
)

// loopable reports whether the epoll loops may accept f's connections and
// connect them to their server themselves (l4.Accept): plain tcp, with
// nothing to read from the client (accept_proxy) nor write before its
// bytes (send_proxy) first, and plain TCP to the servers (no TLS).
func (f *Frontend) loopable() bool {
	return f.Mode == conf.ModeTCP && !f.cfg.AcceptProxy && len(f.cfg.TLS) == 0 &&
		f.sendProxy == conf.ProxyNone && f.backend != nil && f.backend.TLS == nil && testConnHook == nil
}

// serveLoop has the loops accept sock's connections for f; false: they
// cannot (not running, say), and the caller accepts with a goroutine.
func (s *Server) serveLoop(f *Frontend, sock *sockets.Socket) bool {
	if f.loop == nil {
		f.loop = &l4.LoopTCP{
			Backend:    f.backend,
			Budget:     s.serverConns,
			ClientIdle: f.cfg.TimeoutClient,
			In:         &f.Counters.BytesIn,
			Out:        &f.Counters.BytesOut,
			Panics:     &f.Counters.Panics,
			Log:        s.log.With("frontend", f.Name),
			Group:      &s.relays,
			Admit:      func() bool { return s.tryAcquire(f) },
			Opened: func() {
				s.wg.Add(1)
				s.connW.Add(1)
				s.loopOpen.Add(1)
				f.opened()
			},
			Closed: func(peer netip.Addr) {
				if f.policy != nil {
					f.policy.Closed(peer)
				}
				s.loopClosed(f)
			},
			First: func(peer netip.Addr, b []byte) {
				c := sniffConn{f: f, s: s, peer: peer}
				c.inspect(b)
			},
			Fallback: func(a *l4.Acceptor, fd int, peer netip.AddrPort, admitted bool, retries int) {
				s.fallback(f, a, fd, peer.Addr(), admitted, retries)
			},
			Denied:               &f.Counters.Denied,
			Errors:               &f.Counters.Errors,
			ServerConnsExhausted: &f.Counters.ServerConnsExhausted,
			Loop:                 &f.Counters.LoopConnections,
		}
	}
	if f.policy != nil && f.loop.Check == nil {
		f.loop.Check = func(fd int, peer netip.Addr) bool { return s.loopCheck(f, fd, peer) }
	}
	a, err := l4.Accept(sock.Listener, f.loop)
	if err != nil {
		s.log.Debug("accepting with a goroutine", "frontend", f.Name, "addr", sock.Key.Addr, "err", err)
		return false
	}
	f.acceptors = append(f.acceptors, a)
	if err := sock.Park(); err != nil {
		s.log.Debug("listener left in Go's netpoller", "frontend", f.Name, "addr", sock.Key.Addr, "err", err)
	}
	return true
}

// loopClosed is the end of a connection a loop counted (Opened).
func (s *Server) loopClosed(f *Frontend) {
	s.loopOpen.Add(-1)
	f.Counters.Current.Add(-1)
	s.release(f)
	s.connW.Done()
	s.wg.Done()
}

// loopCheck asks f's policy about a connection a loop accepted and
// counted, as admit does on the goroutine path: false when it is closed
// (deny) or held (tarpit; a timer closes the descriptor), and ended here.
func (s *Server) loopCheck(f *Frontend, fd int, peer netip.Addr) bool {
	v := f.policy.CheckConn(peer, false, time.Now())
	if v.Outcome == policy.Pass {
		return true
	}
	f.Counters.Denied.Add(1)
	end := func() {
		unix.Close(fd)
		s.loopClosed(f)
	}
	if v.Outcome == policy.Tarpit {
		s.hold(v.Hold, end)
	} else {
		end()
	}
	return false
}

// tryAcquire is acquire without waiting: the frontend's slot and the
// process's, or neither.
func (s *Server) tryAcquire(f *Frontend) bool {
	if f.sem != nil {
		select {
		case f.sem <- struct{}{}:
		default:
			return false
		}
	}
	select {
	case s.global <- struct{}{}:
		return true
	default:
		if f.sem != nil {
			<-f.sem
		}
		return false
	}
}

// fallback serves on a goroutine a connection a loop accepted but could
// not serve: admitted false, at a connection cap (it waits for a slot as
// the accept loop would, then the listener resumes); true, it would queue
// for a server.
func (s *Server) fallback(f *Frontend, a *l4.Acceptor, fd int, peer netip.Addr, admitted bool, retries int) {
	accepted := time.Now()
	conn, err := fdConn(fd)
	if err != nil {
		s.log.Warn("cannot serve an accepted connection", "frontend", f.Name, "err", err)
		if admitted {
			f.loop.Closed(peer)
		} else {
			a.Resume()
		}
		return
	}
	if admitted {
		s.loopOpen.Add(-1) // tracked from here on
		s.track(conn, true)
		go func() {
			if !s.handle(f, conn, accepted, true, retries) {
				s.closed(f, conn)
			}
		}()
		return
	}
	// Counted as an accept loop holding the connection it accepted: a
	// stop waits for it before it waits for connections.
	s.acceptW.Add(1)
	go func() {
		if !s.acquire(f) {
			conn.Close() // stopping
			s.acceptW.Done()
			return
		}
		s.track(conn, true)
		s.wg.Add(1)
		s.connW.Add(1)
		s.acceptW.Done()
		a.Resume()
		if !s.handle(f, conn, accepted, false, 0) {
			s.closed(f, conn)
		}
	}()
}

// fdConn makes a net.Conn of a connected socket's descriptor, which it
// closes (the net.Conn has its own).
func fdConn(fd int) (net.Conn, error) {
	f := os.NewFile(uintptr(fd), "")
	if f == nil {
		unix.Close(fd)
		return nil, os.ErrInvalid
	}
	defer f.Close()
	c, err := net.FileConn(f)
	if tc, ok := c.(*net.TCPConn); ok {
		// FileConn turns on TCP keep-alive probes (15 s), which the
		// listener's connections never have (sockets.noKeepAlive): the
		// idle timeouts bound dead clients, as HAProxy's default does.
		tc.SetKeepAlive(false)
	}
	return c, err
}
