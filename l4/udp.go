package l4

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sluice/internal/lograte"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/pires/go-proxyproto"
	"golang.org/x/sys/unix"

	"sluice/backend"
	"sluice/conf"
	"sluice/internal/recovery"
	"sluice/internal/sockets"
)

// MaxDatagram is the largest UDP payload relayed (64 KiB buffers hold any
// IPv4 or IPv6 datagram without jumbograms).
const MaxDatagram = 64 << 10

// udpHeadroom is room left in front of each client datagram read, so that
// a PROXY v2 header (16 bytes + 36 for IPv6 addresses) can be put before it
// without a copy of the payload or an allocation.
const udpHeadroom = 64

// udpBufs holds the buffers replies are read into. A flow takes one only
// while a reply is ready to be read, so an idle flow holds no buffer.
var udpBufs = sync.Pool{New: func() any { b := make([]byte, MaxDatagram); return &b }}

// UDPCounters are the UDP-only totals of a frontend. Must not be copied.
type UDPCounters struct {
	Evicted      atomic.Uint64 // flows ended because max_flows was reached (oldest idle first)
	Expired      atomic.Uint64 // flows ended after timeout_udp without a datagram
	Moved        atomic.Uint64 // flows ended because their server went down; the next datagram picks another
	Completed    atomic.Uint64 // flows ended after `responses` replies
	DatagramsIn  atomic.Uint64 // client -> server
	DatagramsOut atomic.Uint64 // server -> client
	Dropped      atomic.Uint64 // client datagrams dropped (no server available, flow refused, send failed)
	// New flows refused (their datagram dropped), by reason: the client
	// address held max_flows_per_source flows; max_flows was reached and
	// no flow could be evicted; no socket could be had (EMFILE, ENFILE,
	// ENOBUFS…), which is refused here rather than left to the listeners.
	RefusedSource atomic.Uint64
	RefusedFull   atomic.Uint64
	RefusedSocket atomic.Uint64
}

// UDPTotals point at the frontend counters a UDP proxy shares with the TCP
// path, so that stats read the same fields for every mode. All must be set.
type UDPTotals struct {
	Sessions *atomic.Uint64 // flows started
	Current  *atomic.Int64  // flows open now
	BytesIn  *atomic.Uint64 // payload bytes from clients
	BytesOut *atomic.Uint64 // payload bytes to clients
	Errors   *atomic.Uint64 // server unreachable, send or receive errors
	Denied   *atomic.Uint64 // datagrams refused: no server available
	Panics   *atomic.Uint64 // flows ended because relaying them panicked; may be nil
}

// UDPOptions configure a UDPProxy.
type UDPOptions struct {
	Backend  *backend.Backend
	Idle     time.Duration // timeout_udp: a flow with no datagram either way for this long ends
	MaxFlows int           // 0: no limit; the flows never hold more sockets than this
	// MaxFlowsPerSource caps the flows of one client address (an IPv6
	// /64); 0: no cap.
	MaxFlowsPerSource int
	Responses         int // replies that end a flow; 0: none does
	Retries           int // other servers tried when opening a flow's socket fails
	// SendProxy v2 puts a PROXY v2 header (DGRAM, client and local
	// address) in front of every datagram sent to a server, as dnsdist,
	// Unbound and Envoy expect for UDP; ProxyNone sends none.
	SendProxy conf.ProxyVersion
	// Readers is the number of goroutines reading each listening socket
	// (0: min(GOMAXPROCS, 4)). With more than one, two datagrams of a flow
	// that arrive together may leave in either order, as UDP allows.
	Readers  int
	Counters *UDPCounters
	Totals   UDPTotals
	Log      *slog.Logger
}

// UDPProxy balances datagrams arriving on one or more listening sockets
// over a backend's servers. A flow is one client address (and the local
// address it sent to): its first datagram picks a server, and every later
// one goes to that server over the flow's own connected socket, whose
// replies go back to the client from the address the client sent to.
//
// The flow table is split into shards, each with its own lock, so readers
// of different clients do not contend; the server side of each flow is read
// by its own goroutine that holds a buffer only while a reply is ready.
type UDPProxy struct {
	o          UDPOptions
	lns        []*udpListener
	shards     [udpShards]flowShard
	count      atomic.Int64 // flows in the table or being opened: the sockets they hold
	srcs       [udpShards]srcShard
	refusedLog lograte.Limiter // "flows refused" lines
	stopping   atomic.Bool
	readers    sync.WaitGroup
	flows      sync.WaitGroup
}

const udpShards = 64

type udpListener struct {
	idx     int
	conn    *net.UDPConn
	pktinfo bool // bound to a wildcard address: learn and reply from each datagram's destination
}

type flowKey struct {
	client netip.AddrPort
	local  netip.Addr // destination of the client's datagrams (wildcard binds), else zero
	ln     int
}

// srcShard counts the flows of each client address, for
// max_flows_per_source. It is keyed by address alone, apart from the flow
// shards (keyed by address and port), so that one busy address does not put
// all its flows behind one lock.
type srcShard struct {
	mu sync.Mutex
	n  map[netip.Addr]int32
	_  [48]byte
}

type flowShard struct {
	mu    sync.Mutex
	flows map[flowKey]*flow
	lru   flow // sentinel: lru.next is the most recently used, lru.prev the least
	_     [40]byte
}

// flow is one client's session with one server.
type flow struct {
	p       *UDPProxy
	key     flowKey
	shard   *flowShard
	ln      *udpListener
	srv     *backend.Server
	src     netip.Addr // counted against max_flows_per_source when valid
	conn    *os.File   // a UDP socket connected to srv (see dialUDP)
	raw     syscall.RawConn
	oob     []byte // control message that sets the reply's source address
	proxy   []byte // PROXY v2 header put before each datagram to the server, or nil
	last    atomic.Int64
	replies int
	closed  atomic.Bool

	prev, next *flow // shard LRU, under shard.mu

	// State of readReply, which runs inside raw.Read; only the flow's own
	// goroutine touches these.
	readFn func(fd uintptr) bool
	buf    *[]byte
	n      int
	rerr   error
}

// NewUDPProxy builds a proxy over the given listening sockets. Call Serve
// to start it.
func NewUDPProxy(conns []net.PacketConn, o UDPOptions) (*UDPProxy, error) {
	if o.Readers <= 0 {
		o.Readers = min(runtime.GOMAXPROCS(0), 4)
	}
	if o.Counters == nil {
		o.Counters = &UDPCounters{}
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	p := &UDPProxy{o: o}
	for i := range p.shards {
		s := &p.shards[i]
		s.flows = map[flowKey]*flow{}
		s.lru.next, s.lru.prev = &s.lru, &s.lru
		p.srcs[i].n = map[netip.Addr]int32{}
	}
	for i, pc := range conns {
		uc, ok := pc.(*net.UDPConn)
		if !ok {
			return nil, errors.New("udp: listening socket is not a *net.UDPConn")
		}
		ln := &udpListener{idx: i, conn: uc}
		if a, ok := uc.LocalAddr().(*net.UDPAddr); ok && a.IP.IsUnspecified() {
			if err := enablePktinfo(uc); err != nil {
				return nil, err
			}
			ln.pktinfo = true
		}
		p.lns = append(p.lns, ln)
	}
	return p, nil
}

// enablePktinfo asks the kernel for each datagram's destination address
// (IP_PKTINFO, IPV6_RECVPKTINFO), so that a reply can leave from it: on a
// socket bound to 0.0.0.0 or [::] the kernel would otherwise pick the source
// from the route, and a client that sent to a VIP would get its reply from
// the host's own address and drop it.
func enablePktinfo(c *net.UDPConn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		domain, e := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DOMAIN)
		if e != nil {
			serr = e
			return
		}
		if domain == unix.AF_INET6 {
			// A dual-stack socket reports IPv4 destinations as v4-mapped
			// IPV6_PKTINFO too, and accepts them back when sending.
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1)
		} else {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_PKTINFO, 1)
		}
	})
	if err != nil {
		return err
	}
	if serr != nil {
		return os.NewSyscallError("setsockopt pktinfo", serr)
	}
	return nil
}

// Counters returns the UDP-only counters.
func (p *UDPProxy) Counters() *UDPCounters { return p.o.Counters }

// Flows is the number of flows open now (the sockets they hold).
func (p *UDPProxy) Flows() int { return int(p.count.Load()) }

// MaxFlows is the cap on open flows, 0 for none.
func (p *UDPProxy) MaxFlows() int { return p.o.MaxFlows }

// Serve starts the readers of every listening socket and returns.
func (p *UDPProxy) Serve() {
	for _, ln := range p.lns {
		for range p.o.Readers {
			p.readers.Add(1)
			go p.readLoop(ln)
		}
	}
}

// StopReading stops taking datagrams from the listening sockets without
// closing them: another process sharing the sockets (a new worker) gets
// every new datagram, while flows already open here go on until they end.
func (p *UDPProxy) StopReading() {
	if p.stopping.Swap(true) {
		return
	}
	for _, ln := range p.lns {
		ln.conn.SetReadDeadline(time.Unix(1, 0)) // wakes blocked readers
	}
	p.readers.Wait()
}

// Wait returns a channel closed once no flow is left (after StopReading).
func (p *UDPProxy) Wait() <-chan struct{} {
	done := make(chan struct{})
	go func() { p.flows.Wait(); close(done) }()
	return done
}

// Close stops reading and ends every flow; it returns how many it ended.
// The listening sockets are left to their owner.
func (p *UDPProxy) Close() int {
	p.StopReading()
	n := 0
	for i := range p.shards {
		s := &p.shards[i]
		s.mu.Lock()
		victims := make([]*flow, 0, len(s.flows))
		for _, f := range s.flows {
			victims = append(victims, f)
		}
		s.mu.Unlock()
		for _, f := range victims {
			if f.end() {
				n++
			}
		}
	}
	p.flows.Wait()
	return n
}

func (p *UDPProxy) readLoop(ln *udpListener) {
	defer p.readers.Done()
	// This reader's own buffer: a datagram is sent on before the next is
	// read. The payload lands after udpHeadroom bytes.
	buf := make([]byte, udpHeadroom+MaxDatagram)
	oob := make([]byte, 128)
	var last time.Time
	var backoff time.Duration
	for !p.read(ln, buf, oob) {
		// A panic on a datagram (a bug, maybe reached through a client's
		// bytes) drops that datagram; the reader goes on. One that panics
		// again at once waits, longer each time, up to a second.
		if now := time.Now(); now.Sub(last) < time.Second {
			backoff = min(max(2*backoff, time.Millisecond), time.Second)
			time.Sleep(backoff)
		} else {
			backoff = 0
		}
		last = time.Now()
	}
}

// read takes datagrams from ln and forwards them until the proxy stops
// reading (true), or a panic, recovered, logged and counted (false). Its
// one defer is per run, not per datagram.
func (p *UDPProxy) read(ln *udpListener, buf, oob []byte) (stopped bool) {
	var from netip.AddrPort
	defer func() {
		if v := recover(); v != nil {
			LoopPanics.Add(1)
			if p.o.Totals.Panics != nil {
				p.o.Totals.Panics.Add(1)
			}
			recovery.Log(p.o.Log, v, "client", from.String(), "proto", "udp", "in", "reader")
			stopped = false
		}
	}()
	var backoff time.Duration
	for {
		n, oobn, _, addr, err := ln.conn.ReadMsgUDPAddrPort(buf[udpHeadroom:], oob)
		if err != nil {
			if p.stopping.Load() || errors.Is(err, net.ErrClosed) {
				return true
			}
			p.o.Totals.Errors.Add(1)
			backoff = min(max(2*backoff, time.Millisecond), 100*time.Millisecond)
			p.o.Log.Warn("udp read failed", "addr", ln.conn.LocalAddr(), "err", err)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		from = addr
		var local netip.Addr
		if ln.pktinfo {
			local = parsePktinfo(oob[:oobn])
		}
		if h := testDatagramHook.Load(); h != nil {
			(*h)(buf[udpHeadroom : udpHeadroom+n])
		}
		p.forward(ln, flowKey{client: from, local: local, ln: ln.idx}, buf[:udpHeadroom+n])
	}
}

// forward sends one client datagram (buf[udpHeadroom:]) to its flow's
// server, opening the flow when it is the first (or its server went down).
func (p *UDPProxy) forward(ln *udpListener, key flowKey, buf []byte) {
	b := buf[udpHeadroom:]
	now := time.Now().UnixNano()
	s := &p.shards[key.shard()]
	var moved *backend.Server
	for attempt := 0; attempt < 2; attempt++ {
		s.mu.Lock()
		f := s.flows[key]
		if f != nil {
			s.touch(f)
		}
		s.mu.Unlock()
		if f != nil && !serving(f.srv) {
			moved = f.srv
			if f.end() {
				p.o.Counters.Moved.Add(1)
			}
			f = nil
		}
		if f == nil {
			if f = p.open(ln, key, s, moved); f == nil {
				p.o.Counters.Dropped.Add(1)
				return
			}
		}
		f.last.Store(now)
		out := b
		if f.proxy != nil {
			start := udpHeadroom - len(f.proxy)
			copy(buf[start:], f.proxy)
			out = buf[start:]
		}
		if _, err := f.conn.Write(out); err != nil {
			if f.closed.Load() {
				continue // ended under us (expired, evicted): open a new one
			}
			p.o.Totals.Errors.Add(1)
			p.o.Counters.Dropped.Add(1)
			return
		}
		p.o.Counters.DatagramsIn.Add(1)
		p.o.Totals.BytesIn.Add(uint64(len(b)))
		f.srv.Counters.BytesIn.Add(uint64(len(b)))
		return
	}
	p.o.Counters.Dropped.Add(1)
}

// serving reports whether flows already on s may stay: it is up and not in
// maintenance. A server at its maxconn or draining keeps its flows, as a
// TCP server keeps its connections.
func serving(s *backend.Server) bool {
	return s.Up() && s.Admin() != backend.AdminMaint
}

// open picks a server for a new flow and connects a socket to it. It
// returns nil when the flow is refused (per-source cap, max_flows, no
// socket) or no server is available.
func (p *UDPProxy) open(ln *udpListener, key flowKey, s *flowShard, skip *backend.Server) *flow {
	var src netip.Addr
	if p.o.MaxFlowsPerSource > 0 {
		// Before taking a slot: an address at its cap must not evict the
		// flows of others.
		src = sourceKey(key.client.Addr())
		if !p.takeSource(src) {
			p.o.Counters.RefusedSource.Add(1)
			p.logRefused("max_flows_per_source", key.client, nil)
			return nil
		}
	}
	if !p.takeSlot() {
		p.releaseSource(src)
		p.o.Counters.RefusedFull.Add(1)
		p.logRefused("max_flows", key.client, nil)
		return nil
	}
	// Until the flow is in the table, a failure gives both back.
	giveBack := func() { p.count.Add(-1); p.releaseSource(src) }
	be := p.o.Backend
	// No queue: a reader serves every client of its socket, and one flow
	// waiting for a slot would hold up the datagrams of all the others;
	// a flow refused because every server is at its maxconn is counted in
	// the backend's queue timeouts (as with queue_timeout = 0).
	cn := backend.Connect{Client: backend.Client{Addr: key.client.Addr().Unmap()}, Skip: skip, NoQueue: true}
	var conn *os.File
	err := be.Connect(context.Background(), &cn, func(_ context.Context, srv *backend.Server) error {
		c, err := dialUDP(srv.Addr)
		if err == nil {
			conn = c
			return nil
		}
		if errors.Is(err, errNoSocket) {
			// This process is out of sockets, not the server at fault:
			// refuse this flow (another server would fare no better).
			return err
		}
		p.o.Totals.Errors.Add(1)
		p.o.Log.Debug("udp: cannot open a socket to the server", "backend", be.Name, "server", srv.Name, "err", err)
		return backend.ConnectFailed(err)
	})
	if err != nil {
		giveBack()
		switch {
		case errors.Is(err, errNoSocket):
			p.o.Counters.RefusedSocket.Add(1)
			p.logRefused("no socket", key.client, err)
		case !backend.IsConnectError(err):
			p.o.Totals.Denied.Add(1) // no server, or every one full
		}
		return nil
	}
	srv := cn.Server
	raw, err := conn.SyscallConn()
	if err != nil {
		conn.Close()
		srv.Release()
		giveBack()
		p.o.Counters.RefusedSocket.Add(1)
		p.logRefused("no socket", key.client, err)
		return nil
	}
	f := &flow{p: p, key: key, shard: s, ln: ln, srv: srv, src: src, conn: conn, raw: raw}
	f.readFn = f.readReply
	f.last.Store(time.Now().UnixNano())
	if key.local.IsValid() {
		f.oob = pktinfoFor(key.local, key.client.Addr())
	}
	if p.o.SendProxy == conf.ProxyV2 {
		local := key.local
		if !local.IsValid() {
			local = ln.conn.LocalAddr().(*net.UDPAddr).AddrPort().Addr()
		}
		port := ln.conn.LocalAddr().(*net.UDPAddr).Port
		if f.proxy, err = proxyV2(key.client, netip.AddrPortFrom(local, uint16(port))); err != nil {
			p.o.Log.Error("udp: cannot build the PROXY header", "client", key.client, "err", err)
			p.o.Totals.Errors.Add(1)
			conn.Close()
			srv.Release()
			giveBack()
			return nil
		}
	}
	s.mu.Lock()
	if other := s.flows[key]; other != nil {
		// Another reader opened it first: use that one.
		s.touch(other)
		s.mu.Unlock()
		conn.Close()
		srv.Release()
		giveBack()
		return other
	}
	s.flows[key] = f
	s.pushFront(f)
	p.flows.Add(1)
	s.mu.Unlock()
	p.o.Totals.Sessions.Add(1)
	p.o.Totals.Current.Add(1)
	go f.run()
	return f
}

// takeSlot counts a new flow against max_flows, evicting the least
// recently used flows to make room. The count is taken before the socket is
// opened, so that readers opening flows at once never hold more sockets
// than max_flows between them.
func (p *UDPProxy) takeSlot() bool {
	limit := int64(p.o.MaxFlows)
	if limit <= 0 {
		p.count.Add(1)
		return true
	}
	for i := 0; ; i++ {
		n := p.count.Load()
		if n < limit {
			if p.count.CompareAndSwap(n, n+1) {
				return true
			}
			continue
		}
		if i == 4 {
			return false // others took the room as fast as it was made
		}
		p.evictOldest()
	}
}

// sourceKey is what max_flows_per_source counts by: the IPv4 address, or
// the /64 of an IPv6 one (one host or site usually holds a whole /64).
func sourceKey(a netip.Addr) netip.Addr {
	a = a.Unmap()
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}

func (p *UDPProxy) srcShard(a netip.Addr) *srcShard {
	b := a.As16()
	h := (binary.LittleEndian.Uint64(b[8:]) ^ binary.LittleEndian.Uint64(b[:8])) * 0x9e3779b97f4a7c15
	return &p.srcs[(h>>32)%udpShards]
}

// takeSource counts one more flow for src, unless it is at its cap.
func (p *UDPProxy) takeSource(src netip.Addr) bool {
	s := p.srcShard(src)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.n[src] >= int32(p.o.MaxFlowsPerSource) {
		return false
	}
	s.n[src]++
	return true
}

// releaseSource gives back a flow taken by takeSource; a zero src (no cap)
// is ignored.
func (p *UDPProxy) releaseSource(src netip.Addr) {
	if !src.IsValid() {
		return
	}
	s := p.srcShard(src)
	s.mu.Lock()
	if s.n[src]--; s.n[src] <= 0 {
		delete(s.n, src)
	}
	s.mu.Unlock()
}

// logRefused logs refused flows at most once a second, with the totals so
// far: a flood must not turn into a flood of log lines.
func (p *UDPProxy) logRefused(reason string, client netip.AddrPort, err error) {
	if ok, _ := p.refusedLog.Allow(time.Now()); !ok {
		return // the line carries the totals: nothing held back is lost
	}
	c := p.o.Counters
	args := []any{"reason", reason, "client", client, "flows", p.count.Load(), "max_flows", p.o.MaxFlows,
		"refused_source", c.RefusedSource.Load(), "refused_full", c.RefusedFull.Load(), "refused_socket", c.RefusedSocket.Load()}
	if err != nil {
		args = append(args, "err", err)
	}
	p.o.Log.Warn("udp: new flows refused (at most one line a second)", args...)
}

// errNoSocket marks a dialUDP failure to get a socket at all, as opposed to
// one to reach the server.
var errNoSocket = errors.New("no socket for a new flow")

// dialUDP opens a non-blocking UDP socket connected to addr. A socket of
// its own, wrapped by os.NewFile (which registers it with the netpoller),
// costs socket, connect, fcntl and epoll_ctl; net.DialUDP adds
// SO_BROADCAST, getsockname and getpeername, and a flow is opened per
// client (per datagram with responses = 1).
func dialUDP(addr string) (*os.File, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		ra, rerr := net.ResolveUDPAddr("udp", addr) // a name: resolve it
		if rerr != nil {
			return nil, rerr
		}
		ap = ra.AddrPort()
	}
	family, sa := sockets.Sockaddr(ap)
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errNoSocket, os.NewSyscallError("socket", err))
	}
	if err := unix.Connect(fd, sa); err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("connect", err)
	}
	return os.NewFile(uintptr(fd), "udp-flow"), nil
}

// evictOldest ends the flow that has been idle longest. Each shard's LRU
// tail is its least recently used flow, so the oldest of all is among the
// tails.
func (p *UDPProxy) evictOldest() {
	var victim *flow
	var oldest int64
	for i := range p.shards {
		s := &p.shards[i]
		s.mu.Lock()
		if t := s.lru.prev; t != &s.lru {
			if l := t.last.Load(); victim == nil || l < oldest {
				victim, oldest = t, l
			}
		}
		s.mu.Unlock()
	}
	if victim != nil && victim.end() {
		p.o.Counters.Evicted.Add(1)
	}
}

// end removes the flow from the table and closes its socket, which stops
// its goroutine. It reports whether this call ended it.
func (f *flow) end() bool {
	if f.closed.Swap(true) {
		return false
	}
	s := f.shard
	s.mu.Lock()
	if s.flows[f.key] == f {
		delete(s.flows, f.key)
	}
	s.unlink(f)
	s.mu.Unlock()
	f.p.o.Totals.Current.Add(-1)
	// Close returns once the descriptor is closed (it waits for the
	// flow's reader to let go): only then is its slot free, so that the
	// flows never hold more descriptors than max_flows.
	f.conn.Close()
	f.p.releaseSource(f.src)
	f.p.count.Add(-1)
	return true
}

// testReplyHook, set by tests only (export_test.go), sees every reply
// before it is relayed: a test makes it panic.
var testReplyHook func(reply []byte)

// run relays the server's replies to the client until the flow ends.
func (f *flow) run() {
	p := f.p
	defer func() {
		if v := recover(); v != nil {
			// A bug costs this flow only, not the worker.
			if p.o.Totals.Panics != nil {
				p.o.Totals.Panics.Add(1)
			}
			recovery.Log(p.o.Log, v, "client", f.key.client.String(), "proto", "udp")
		}
		f.end()
		f.srv.Release()
		p.flows.Done()
	}()
	idle := p.o.Idle
	f.conn.SetReadDeadline(time.Unix(0, f.last.Load()).Add(idle))
	for {
		err := f.raw.Read(f.readFn)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				last := time.Unix(0, f.last.Load())
				if time.Since(last) >= idle {
					if !f.closed.Load() {
						p.o.Counters.Expired.Add(1)
					}
					return
				}
				f.conn.SetReadDeadline(last.Add(idle))
				continue
			}
			return // closed
		}
		if f.rerr != nil {
			// ECONNREFUSED: the server's port is closed (ICMP unreachable).
			p.o.Totals.Errors.Add(1)
			f.srv.Counters.ConnErrors.Add(1)
			f.srv.ObserveError()
			return
		}
		// A reply is a udp server's sign of life (see backend.Connect).
		f.srv.ObserveOK()
		// The last reply allowed ends the flow before it is sent, so that
		// the client's next datagram, which may follow at once, opens a new
		// flow instead of reaching this closing one.
		f.replies++
		last := p.o.Responses > 0 && f.replies >= p.o.Responses
		if last && f.end() {
			p.o.Counters.Completed.Add(1)
		}
		b := (*f.buf)[:f.n]
		if testReplyHook != nil {
			testReplyHook(b)
		}
		// Stamped before the send: once the client has the reply its next
		// datagram may come (and stamp another flow) at once, and a later
		// stamp here would make this flow look the more recent one to
		// max_flows' eviction (a CI run under load saw it).
		f.last.Store(time.Now().UnixNano())
		_, _, werr := f.ln.conn.WriteMsgUDPAddrPort(b, f.oob, f.key.client)
		udpBufs.Put(f.buf)
		f.buf = nil
		if werr != nil {
			if errors.Is(werr, net.ErrClosed) {
				return
			}
			p.o.Totals.Errors.Add(1)
			continue
		}
		p.o.Counters.DatagramsOut.Add(1)
		p.o.Totals.BytesOut.Add(uint64(f.n))
		f.srv.Counters.BytesOut.Add(uint64(f.n))
		if last {
			return
		}
	}
}

// readReply is called by raw.Read when the server socket may be readable;
// it takes a pooled buffer only when a datagram is really there.
func (f *flow) readReply(fd uintptr) bool {
	bp := udpBufs.Get().(*[]byte)
	n, err := unix.Read(int(fd), *bp)
	if err == unix.EAGAIN || err == unix.EINTR {
		udpBufs.Put(bp)
		return false
	}
	if err != nil {
		udpBufs.Put(bp)
		f.buf, f.n, f.rerr = nil, 0, err
		return true
	}
	f.buf, f.n, f.rerr = bp, n, nil
	return true
}

// Shard LRU, under s.mu.

func (s *flowShard) pushFront(f *flow) {
	f.prev, f.next = &s.lru, s.lru.next
	s.lru.next.prev = f
	s.lru.next = f
}

func (s *flowShard) unlink(f *flow) {
	if f.prev == nil {
		return
	}
	f.prev.next = f.next
	f.next.prev = f.prev
	f.prev, f.next = nil, nil
}

func (s *flowShard) touch(f *flow) {
	if s.lru.next == f || f.prev == nil {
		return
	}
	s.unlink(f)
	s.pushFront(f)
}

func (k *flowKey) shard() int {
	a := k.client.Addr().As16()
	h := binary.LittleEndian.Uint64(a[8:]) ^ binary.LittleEndian.Uint64(a[:8])*0x9e3779b97f4a7c15
	h ^= uint64(k.client.Port()) * 0xff51afd7ed558ccd
	h ^= h >> 29
	return int(h % udpShards)
}

// parsePktinfo finds the destination address in a datagram's control
// messages (IP_PKTINFO or IPV6_PKTINFO) without allocating.
func parsePktinfo(oob []byte) netip.Addr {
	for len(oob) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(h.Len)
		if l < unix.SizeofCmsghdr || l > len(oob) {
			return netip.Addr{}
		}
		data := oob[unix.CmsgLen(0):l]
		switch {
		case h.Level == unix.IPPROTO_IP && h.Type == unix.IP_PKTINFO && len(data) >= unix.SizeofInet4Pktinfo:
			// struct in_pktinfo { int ifindex; in_addr spec_dst; in_addr addr; }
			return netip.AddrFrom4([4]byte(data[8:12]))
		case h.Level == unix.IPPROTO_IPV6 && h.Type == unix.IPV6_PKTINFO && len(data) >= unix.SizeofInet6Pktinfo:
			return netip.AddrFrom16([16]byte(data[:16]))
		}
		oob = oob[min(unix.CmsgSpace(l-unix.CmsgLen(0)), len(oob)):]
	}
	return netip.Addr{}
}

// pktinfoFor builds the control message that makes a reply leave from
// local. The kind follows the client's address: an IPv6 socket (dual-stack
// with a v4-mapped client included) takes IPV6_PKTINFO, an IPv4 one
// IP_PKTINFO.
func pktinfoFor(local, client netip.Addr) []byte {
	if client.Is6() {
		info := unix.Inet6Pktinfo{Addr: local.As16()}
		return unix.PktInfo6(&info)
	}
	info := unix.Inet4Pktinfo{Spec_dst: local.Unmap().As4()}
	return unix.PktInfo4(&info)
}

// proxyV2 formats the PROXY v2 header of a flow from client to local: UDP
// over IPv4 when both are IPv4 (v4-mapped ones included), else over IPv6.
func proxyV2(client, local netip.AddrPort) ([]byte, error) {
	src := net.UDPAddrFromAddrPort(netip.AddrPortFrom(client.Addr().Unmap(), client.Port()))
	dst := net.UDPAddrFromAddrPort(netip.AddrPortFrom(local.Addr().Unmap(), local.Port()))
	b, err := proxyproto.HeaderProxyFromAddrs(2, src, dst).Format()
	if err == nil && len(b) > udpHeadroom {
		err = fmt.Errorf("PROXY v2 header of %d bytes", len(b))
	}
	return b, err
}
