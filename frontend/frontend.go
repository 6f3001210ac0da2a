// Package frontend runs listeners: it accepts connections (on sockets the
// engine bound or inherited), applies connection limits, and hands each connection
// to the right backend.
package frontend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"sluice/backend"
	"sluice/conf"
	"sluice/internal/gopool"
	"sluice/internal/recovery"
	"sluice/internal/sockets"
	"sluice/l4"
	"sluice/l7"
	"sluice/policy"
)

// Counters are a frontend's running totals. Must not be copied.
type Counters struct {
	Sessions  atomic.Uint64 // connections accepted
	Current   atomic.Int64  // connections open now
	MaxActive atomic.Int64
	BytesIn   atomic.Uint64 // from clients
	BytesOut  atomic.Uint64 // to clients
	Denied    atomic.Uint64 // refused before reaching a server (no server up, bad PROXY header...)
	Errors    atomic.Uint64 // connection errors (server unreachable after retries)
	// ProxyErrors counts connections closed for their PROXY header
	// (accept_proxy): missing, malformed, truncated, too slow, or sent by a
	// peer outside proxy_trusted. Each is also counted in Denied.
	ProxyErrors atomic.Uint64
	// ProxyUnexpected counts connections that opened with a PROXY header on
	// a frontend without accept_proxy (logged once per peer and minute).
	ProxyUnexpected atomic.Uint64
	// Panics counts connections closed because serving them panicked (a
	// bug): the worker recovers, logs, and serves the others on.
	Panics atomic.Uint64
	// ServerConnsExhausted counts tcp connections closed because every
	// server connection of the descriptor budget was in use.
	ServerConnsExhausted atomic.Uint64
	// LoopConnections counts tcp connections an epoll loop accepted and
	// connected to their server itself (see l4.Accept).
	LoopConnections atomic.Uint64
}

// Frontend is one configured frontend at run time.
type Frontend struct {
	Name    string
	Mode    conf.Mode
	cfg     *conf.Frontend
	backend *backend.Backend
	sem     chan struct{} // per-frontend maxconn; nil when unlimited
	socks   []*sockets.Socket
	http    *l7.Proxy // http mode
	// policy is the frontend's rules and rate limit (tcp and http modes);
	// nil: none.
	policy *policy.Frontend
	udp    *l4.UDPProxy // udp mode
	// sendProxy is the PROXY header version sent to the default backend's
	// servers in tcp mode (send_proxy).
	sendProxy conf.ProxyVersion
	peerLog   peerLog // rate-limits the log of unexpected PROXY headers
	// loop and acceptors: when the epoll loops accept for the frontend.
	loop      *l4.LoopTCP
	acceptors []*l4.Acceptor
	// certs: a TLS frontend's certificates as served (tls_ocsp.go).
	certs []*l7.ServedCert

	Counters Counters
	// UDP holds the counters only udp frontends have (evicted and expired
	// flows, datagrams); Counters.Sessions and Current count flows there.
	UDP l4.UDPCounters
}

// Config returns the frontend's configuration.
func (f *Frontend) Config() *conf.Frontend { return f.cfg }

// Backend returns the default backend.
func (f *Frontend) Backend() *backend.Backend { return f.backend }

// HTTP returns the HTTP proxy of an http frontend, else nil.
func (f *Frontend) HTTP() *l7.Proxy { return f.http }

// Server runs every frontend of one configuration.
type Server struct {
	Frontends []*Frontend
	log       *slog.Logger
	global    chan struct{} // global.maxconn
	// serverConns is the budget of server connections every mode shares
	// (see backend.ServerConns): a tcp relay holds a slot for its server
	// side.
	serverConns *backend.ServerConns
	done        chan struct{} // closed when shutting down
	// stop ends at a hard stop (Shutdown's deadline): connections still
	// queued or dialing give up at once.
	stop     context.Context
	hardStop context.CancelFunc
	relays   l4.Group // the epoll relays: killed when a drain runs out of time
	// loopOpen counts the connections a loop accepted and serves (in
	// no conns map): what a hard stop cuts besides the tracked ones.
	loopOpen atomic.Int64

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	// fdListeners are the duplicate listeners accept4 loops wait on
	// (acceptfd_linux.go), closed by StopAccepting with the sockets.
	fdListeners []io.Closer
	held        map[*held]struct{} // connections a tarpit holds (policy.go)
	wg          sync.WaitGroup     // accept loops and connections
	connW       sync.WaitGroup     // connections only
	acceptW     sync.WaitGroup     // accept loops only

	// ocspStop and ocspW: the OCSP fetchers (tls_ocsp.go).
	ocspStop context.CancelFunc
	ocspW    sync.WaitGroup
}

// New builds the frontends of cfg over the given backends and sockets; the
// sockets are bound by the caller (engine.Listeners, sockets.Bind), which
// is the one place a listener is bound or inherited.
func New(cfg *conf.Config, backends map[string]*backend.Backend, socks sockets.Set, log *slog.Logger) (*Server, error) {
	s := &Server{
		log:    log,
		global: make(chan struct{}, cfg.Global.MaxConn),
		done:   make(chan struct{}),
		conns:  map[net.Conn]struct{}{},
		held:   map[*held]struct{}{},
	}
	// Server connections of every http frontend share one budget, the
	// size of global.maxconn: the descriptor limit is fitted to maxconn
	// client connections and as many server connections.
	serverConns := backend.NewServerConns(cfg.Global.MaxConn)
	s.serverConns = serverConns
	s.stop, s.hardStop = context.WithCancel(context.Background())
	for _, fc := range cfg.Frontends {
		f := &Frontend{Name: fc.Name, Mode: fc.Mode, cfg: fc, backend: backends[fc.DefaultBackend]}
		f.peerLog = peerLog{interval: time.Minute, max: 1024}
		if fc.Mode != conf.ModeUDP {
			f.policy = policy.New(fc)
		}
		for _, bc := range cfg.Backends {
			if bc.Name == fc.DefaultBackend {
				f.sendProxy = bc.SendProxy
			}
		}
		if fc.Mode == conf.ModeHTTP {
			p, err := newHTTPProxy(fc, f.policy, cfg.Backends, backends, log)
			if p != nil {
				p.Panics = &f.Counters.Panics
			}
			if err != nil {
				return nil, fmt.Errorf("frontend %s: %w", fc.Name, err)
			}
			p.ServerConns = serverConns
			p.Stop = s.stop
			serverConns.OnExhausted(p.CloseIdle)
			f.http = p
			if f.certs, err = servedCerts(fc, p.TLS); err != nil {
				return nil, fmt.Errorf("frontend %s: %w", fc.Name, err)
			}
		}
		if fc.MaxConn > 0 {
			f.sem = make(chan struct{}, fc.MaxConn)
		}
		for _, a := range fc.Bind {
			k := sockets.Key{Network: fc.Network(), Addr: a}
			sock, ok := socks[k]
			if !ok {
				return nil, fmt.Errorf("frontend %s: no socket for %s", fc.Name, k)
			}
			f.socks = append(f.socks, sock)
		}
		if fc.Mode == conf.ModeUDP {
			if err := s.newUDP(f, cfg.Backend(fc.DefaultBackend)); err != nil {
				return nil, fmt.Errorf("frontend %s: %w", fc.Name, err)
			}
		}
		s.Frontends = append(s.Frontends, f)
	}
	return s, nil
}

// ServerConns is the budget of server connections every frontend shares.
func (s *Server) ServerConns() *backend.ServerConns { return s.serverConns }

// Serve starts accepting on every frontend and returns.
func (s *Server) Serve() {
	s.startOCSP()
	for _, f := range s.Frontends {
		if f.udp != nil {
			f.udp.Serve()
			continue
		}
		for _, sock := range f.socks {
			if err := sock.SetDeferAccept(f.cfg.DeferAccept); err != nil {
				s.log.Warn("defer_accept not applied: connections are accepted before their first bytes", "frontend", f.Name, "bind", sock.Key.Addr, "err", err)
			}
			if f.loopable() && s.serveLoop(f, sock) {
				continue
			}
			s.wg.Add(1)
			s.acceptW.Add(1)
			go s.acceptLoop(f, sock.Listener)
		}
	}
}

// Current is the number of connections open on all frontends.
func (s *Server) Current() int {
	n := 0
	for _, f := range s.Frontends {
		n += int(f.Counters.Current.Load())
	}
	return n
}

// acquire takes a connection slot of the frontend and of the process,
// waiting while either is full. It returns false when shutting down.
//
// It is called with a connection already accepted, which no other process
// can take any more: it is served even while the server stops, with the
// slot a draining connection frees (a reload at the cap reset it before);
// only a hard stop gives up the wait.
func (s *Server) acquire(f *Frontend) bool {
	if f.sem != nil {
		select {
		case f.sem <- struct{}{}:
		default:
			select {
			case f.sem <- struct{}{}:
			case <-s.stop.Done():
				return false
			}
		}
	}
	select {
	case s.global <- struct{}{}:
		return true
	default:
	}
	select {
	case s.global <- struct{}{}:
		return true
	case <-s.stop.Done():
		if f.sem != nil {
			<-f.sem
		}
		return false
	}
}

func (s *Server) release(f *Frontend) {
	<-s.global
	if f.sem != nil {
		<-f.sem
	}
}

func (s *Server) acceptLoop(f *Frontend, ln net.Listener) {
	defer s.wg.Done()
	defer s.acceptW.Done()
	var backoff time.Duration
	accept := f.fdAccepter(ln, s)
	if accept == nil {
		accept = ln.Accept
	}
	for {
		// Accept first, then wait for a slot: at the cap the loop holds the
		// one connection it accepted and takes no more, so later clients
		// wait in the kernel's queue, as behind HAProxy's paused listener.
		// Waiting for the slot before Accept would let the idle loops of
		// some listeners hold every slot while another listener's clients
		// are never served (more binds than maxconn).
		conn, err := accept()
		accepted := time.Now()
		if err == nil && !s.acquire(f) {
			conn.Close() // stopping
			return
		}
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// EMFILE and friends: back off instead of spinning.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn("accept failed; retrying", "frontend", f.Name, "err", err, "retry_in", backoff)
			select {
			case <-time.After(backoff):
			case <-s.done:
				return
			}
			continue
		}
		backoff = 0
		s.track(conn, true)
		s.wg.Add(1)
		s.connW.Add(1)
		// A kept goroutine, its stack grown by the last connection it
		// served: no start and no stack growth per connection.
		gopool.Go(func() {
			if !s.handle(f, conn, accepted, false, 0) {
				s.closed(f, conn)
			}
		})
	}
}

// closed is the end of an accepted connection: once, from its goroutine, or
// from the epoll loop that was handed its relay.
func (s *Server) closed(f *Frontend, conn net.Conn) {
	s.track(conn, false)
	f.Counters.Current.Add(-1)
	s.release(f)
	s.connW.Done()
	s.wg.Done()
}

func (s *Server) track(c net.Conn, add bool) {
	s.mu.Lock()
	if add {
		s.conns[c] = struct{}{}
	} else {
		delete(s.conns, c)
	}
	s.mu.Unlock()
}

// testConnHook, set by tests only (export_test.go), runs for every
// connection before it is served: a test makes it panic.
var testConnHook func(frontend string)

// handle serves an accepted connection. It reports true when the connection
// was handed on (to an epoll relay, or to the goroutine that waits for a
// keep-alive client's next request), whose end calls s.closed; false when
// it is over and the caller calls it. opened: it was counted already (a
// loop accepted it, see fallback), and retries connects were retried.
func (s *Server) handle(f *Frontend, conn net.Conn, accepted time.Time, opened bool, retries int) (handedOn bool) {
	raw := conn // conn becomes a wrapper below
	defer func() {
		if p := recover(); p != nil {
			f.Counters.Panics.Add(1)
			recovery.Log(s.log, p, "frontend", f.Name, "client", raw.RemoteAddr().String())
			raw.Close()
			handedOn = false
		}
	}()
	if !opened {
		f.opened()
	}
	m := connMeta{conn: conn, accepted: accepted}
	if ac, ok := conn.(interface {
		AddrPorts() (peer, local netip.AddrPort)
	}); ok {
		m.client, m.local = ac.AddrPorts() // no net.Addr to allocate
	} else {
		m.client, m.local = addrPort(conn.RemoteAddr()), addrPort(conn.LocalAddr())
	}
	if f.cfg.AcceptProxy {
		// Read here, in the connection's own goroutine: a slow header
		// holds this connection only, never the accept loop.
		pc, err := f.acceptProxy(conn, &m)
		if err != nil {
			f.Counters.ProxyErrors.Add(1)
			f.Counters.Denied.Add(1)
			s.log.Debug("PROXY header refused", "frontend", f.Name, "peer", m.client, "err", err)
			conn.Close()
			return false
		}
		conn = pc
	} else {
		conn = &sniffConn{Conn: conn, f: f, s: s, peer: m.client.Addr()}
	}
	if m.id == "" {
		m.id = newConnID()
	}
	if f.policy != nil {
		// opened: a loop accepted it, and its Check passed it.
		if !opened && !s.admit(f, raw, &m, func() { s.closed(f, raw) }) {
			return true // closed, or held: its end calls s.closed
		}
		m.passed = true
		client := m.client.Addr()
		defer func() {
			if !handedOn {
				f.policy.Closed(client)
			}
		}()
	}
	if testConnHook != nil {
		testConnHook(f.Name)
	}
	if f.http != nil {
		return s.serveHTTP(f, conn, &m)
	}
	return s.serveTCP(f, conn, &m, retries)
}

// opened counts a new connection of f.
func (f *Frontend) opened() {
	f.Counters.Sessions.Add(1)
	n := f.Counters.Current.Add(1)
	for {
		m := f.Counters.MaxActive.Load()
		if n <= m || f.Counters.MaxActive.CompareAndSwap(m, n) {
			break
		}
	}
}

// serveTCP connects the client to a server of the default backend, retrying
// the connect on another server, then relays bytes until both sides end. It
// reports true when an epoll loop took the relay over (and calls s.closed
// at its end), leaving this goroutine free to exit.
func (s *Server) serveTCP(f *Frontend, conn net.Conn, m *connMeta, retries int) bool {
	be := f.backend
	var hdr *l4.ProxyHeader
	if f.sendProxy != 0 {
		hdr = &l4.ProxyHeader{Version: f.sendProxy, Src: m.client, Dst: m.local, UniqueID: m.id}
	}
	cn := backend.Connect{
		Client:         backend.Client{Addr: m.client.Addr()},
		Budget:         s.serverConns,
		Watch:          m.conn,
		WatchResetOnly: true, // a half-closed tcp client still reads its answer
		ObserveConnect: true, // a tcp server is alive once it accepts
		Retries:        retries,
	}
	var server net.Conn
	err := be.Connect(s.stop, &cn, func(ctx context.Context, srv *backend.Server) error {
		// The slot is taken once a server is picked: a client waiting in
		// the queue holds no descriptor of the budget.
		if err := cn.TakeSlot(); err != nil {
			return err
		}
		c, err := l4.DialServer(ctx, be, srv, hdr, s.log)
		if err != nil {
			s.log.Debug("connect failed", "frontend", f.Name, "backend", be.Name, "server", srv.Name, "err", err)
			return backend.ConnectFailed(err)
		}
		server = c
		return nil
	})
	if err != nil {
		switch {
		case errors.Is(err, backend.ErrServerConns):
			// Every server connection the descriptor budget holds is in
			// use (HTTP/2 streams count too): refuse this client, not the
			// process.
			f.Counters.Denied.Add(1)
			f.Counters.ServerConnsExhausted.Add(1)
		case backend.IsConnectError(err):
			f.Counters.Errors.Add(1)
		case err == backend.ErrNoServer || err == backend.ErrQueueTimeout:
			f.Counters.Denied.Add(1)
		}
		// Otherwise the client left while queued or the process stops.
		conn.Close()
		return false
	}
	srv := cn.Server
	opts := l4.RelayOptions{
		ClientIdle: f.cfg.TimeoutClient,
		ServerIdle: be.TimeoutServer,
		In:         []*atomic.Uint64{&f.Counters.BytesIn, &srv.Counters.BytesIn},
		Out:        []*atomic.Uint64{&f.Counters.BytesOut, &srv.Counters.BytesOut},
		Panics:     &f.Counters.Panics,
		Log:        s.log, // the line names the client; no per-connection With
	}
	ended := func(err error) {
		srv.Release()
		s.serverConns.Release()
		if err != nil && !errors.Is(err, l4.ErrIdle) {
			s.log.Debug("relay ended", "frontend", f.Name, "server", srv.Name, "id", m.id, "err", err)
		}
	}
	// Plain TCP on both sides goes to the epoll relay, and no goroutine
	// waits for it; a connection with bytes buffered in Go (after a PROXY
	// header) takes the goroutine one.
	raw, first := conn, func([]byte) {}
	if sc, ok := conn.(*sniffConn); ok {
		raw, first = sc.Conn, sc.inspect
	}
	client, passed := m.client.Addr(), m.passed
	// TLS to the server is relayed by goroutines: the epoll relay moves
	// raw bytes between descriptors.
	if be.TLS == nil && l4.FastRelay(raw, server, opts, &s.relays, first, func(err error) {
		ended(err)
		if passed {
			f.policy.Closed(client)
		}
		s.closed(f, m.conn) // as accepted and tracked, not a wrapper
	}) {
		return true
	}
	ended(l4.Relay(conn, server, opts))
	return false
}

// StopAccepting closes this server's listeners: new connections stay in the
// kernel queue for whoever else holds the socket. Connections already
// accepted go on.
func (s *Server) StopAccepting() {
	select {
	case <-s.done:
		return
	default:
	}
	close(s.done)
	s.stopOCSP()
	s.endHolds()
	for _, f := range s.Frontends {
		if f.http != nil {
			f.http.Drain()
		}
		if f.udp != nil {
			// Stop reading but keep the sockets: open flows still send
			// their replies from them.
			f.udp.StopReading()
			continue
		}
		for _, a := range f.acceptors {
			a.Close() // before the socket: no loop accepts on it from here on
		}
		for _, sock := range f.socks {
			sock.Close()
		}
	}
	// At once, with the sockets: a draining worker accepts nothing more
	// on the duplicates its accept4 loops wait on.
	s.mu.Lock()
	for _, l := range s.fdListeners {
		l.Close()
	}
	s.fdListeners = nil
	s.mu.Unlock()
}

// Shutdown stops accepting, waits for open connections to finish, and when
// ctx ends first closes whatever is left. It returns how many connections it
// had to cut.
func (s *Server) Shutdown(ctx context.Context) int {
	s.StopAccepting()
	// No connection is counted in connW after the accept loops are gone,
	// so its Wait does not race with an Add. A loop holding a connection
	// it accepted at the cap waits for a slot a drained one frees, until
	// the hard stop.
	accepted := make(chan struct{})
	go func() { s.acceptW.Wait(); close(accepted) }()
	select {
	case <-accepted:
	case <-ctx.Done():
		s.hardStop()
		<-accepted
	}
	finished := make(chan struct{})
	go func() { s.connW.Wait(); close(finished) }()
	cut := 0
	select {
	case <-finished:
	case <-ctx.Done():
		s.hardStop() // queued and dialing connections give up
		// Counted before the epoll relays are killed: their ends untrack
		// their connections as soon as the loops get to them.
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
			cut++
		}
		s.mu.Unlock()
		cut += int(s.loopOpen.Load())
		s.relays.Kill() // the epoll relays own their sockets
		<-finished
	}
	s.hardStop()
	cut += s.shutdownUDP(ctx)
	s.wg.Wait()
	s.ocspW.Wait()
	for _, f := range s.Frontends {
		if f.http != nil {
			f.http.CloseIdle()
		}
	}
	return cut
}
