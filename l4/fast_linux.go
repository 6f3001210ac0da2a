package l4

import (
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"sluice/backend"
	"sluice/internal/poller"
	"sluice/internal/rawio"
	"sluice/internal/recovery"
)

// The fast relay moves plain TCP connections out of Go's netpoller into
// epoll loops of its own, one per CPU. Go's model costs, per message and
// direction, a read that returns EAGAIN before the goroutine parks, and a
// goroutine wake-up; a level-triggered loop reads once per readiness, as
// HAProxy does (about +16% requests/s on the keep-alive benchmark, and
// about 3 KiB per open connection: no goroutine waits for a relay).
// Semantics are Relay's: half-close passed on, idle timeouts, batched
// counters, a reset is a normal end.

// FastRelay relays like Relay when both connections are *net.TCPConn and
// the loops run (StartLoops), and reports false without touching them
// otherwise (the caller uses Relay); so does a connection the loop cannot
// register.
// On true the connections are closed: their descriptors now belong to a
// loop, and no goroutine waits for the relay. done is called once, on the
// loop, when both sides are closed, with nil or what ended the relay; it
// must not block. g, when not nil, is the group whose Kill ends this relay.
// first, when not nil, sees the client's first bytes.
func FastRelay(client, server net.Conn, o RelayOptions, g *Group, first func([]byte), done func(error)) bool {
	ls := loopsNow.Load()
	if ls == nil {
		return false // not started, or stopped: the goroutine relay serves
	}
	cfd, ok := takeFD(client)
	if !ok {
		return false
	}
	sfd, ok := takeFD(server)
	if !ok {
		// Out of descriptors, say: both net.Conns are still whole, so the
		// caller relays them the usual way.
		rawClose(cfd)
		return false
	}
	p := &pair{first: first, opts: o, group: g, done: done}
	p.last.Store(time.Now().UnixNano())
	p.sides[0] = side{fd: cfd, idle: o.ClientIdle, counters: o.In}
	p.sides[1] = side{fd: sfd, idle: o.ServerIdle, counters: o.Out}
	l := (*ls)[int(nextLoop.Add(1))%len(*ls)]
	if err := l.add(p); err != nil {
		// epoll_ctl refused it (or the loop just stopped): the net.Conns
		// are still whole, the caller relays them the usual way.
		rawClose(cfd)
		rawClose(sfd)
		if o.Log != nil {
			o.Log.Debug("epoll relay refused a connection, relaying with goroutines", "err", err)
		}
		return false
	}
	client.Close()
	server.Close()
	// A Kill that ran before the add saw no pair to end: end it here.
	if g != nil && g.killed.Load() {
		l.kill(p)
	}
	return true
}

// Group is the relays of one owner (a frontend server), ended together by
// Kill when a graceful stop runs out of time. The zero value is ready.
type Group struct {
	killed atomic.Bool
}

// Kill ends every relay of g at once, and every one started after.
func (g *Group) Kill() {
	g.killed.Store(true) // before the scan: a relay added after it sees the flag
	ls := loopsNow.Load()
	if ls == nil {
		return // no loop, so no relay of its
	}
	for _, l := range *ls {
		l.mu.Lock()
		var mine []*pair
		for p := range l.pairs {
			if p.group == g {
				mine = append(mine, p)
			}
		}
		l.mu.Unlock()
		for _, p := range mine {
			l.kill(p)
		}
	}
}

// takeFD duplicates a TCP connection's descriptor (non-blocking, close on
// exec), so that closing the net.Conn takes it out of Go's netpoller while
// the socket lives on.
func takeFD(c net.Conn) (int, bool) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return -1, false
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return -1, false
	}
	nfd := -1
	if err := rc.Control(func(fd uintptr) {
		nfd, _ = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil || nfd < 0 {
		return -1, false
	}
	return nfd, true
}

// side is one connection of a pair; data read from it goes to the other.
type side struct {
	fd       int
	idle     time.Duration
	counters []*atomic.Uint64
	eof      bool   // read side ended
	shut     bool   // the other side's write half was shut down after eof
	hup      bool   // epoll reported HUP: never leave it registered with nothing to wait for
	due      bool   // has a read event later in the batch being served
	rdhup    bool   // its last event said the peer's FIN is in
	watched  bool   // registered with the loop's epoll
	events   uint32 // what it is registered for
	pending  []byte // read from this side, not yet written to the other
	buf      *[]byte
	unflush  uint64 // bytes not yet added to counters
}

type pair struct {
	sides [2]side // 0 client, 1 server
	opts  RelayOptions
	first func([]byte)
	last  atomic.Int64 // unix nanoseconds of the last activity (the loop's clock)
	group *Group
	done  func(error)
	ended bool
	seen  bool // first bytes shown to first

	// A connection the loop accepted (Accept) has lf, and while it
	// connects no client registration and a server descriptor (or -1)
	// registered for writability, until deadline (unix nanoseconds, 0:
	// none).
	lf         *LoopTCP
	cn         backend.Connect
	peer       netip.AddrPort
	connecting bool
	holding    bool // cn holds a server and a budget slot, given back at the end
	deadline   int64
	ctrs       [4]*atomic.Uint64 // the sides' counters: no slice allocated
}

// loop is one epoll instance served by one goroutine.
type loop struct {
	p    *poller.Poller
	mu   sync.Mutex
	byFD map[int]*pair
	// acceptors are the listeners this loop accepts on (Accept).
	acceptors map[int]*Acceptor
	pairs     map[*pair]struct{}
	killq     []*pair // pairs to end, handed over under mu
	// closed: the loop ended its pairs and takes no more (under mu).
	closed   bool
	stopping atomic.Bool   // stop asked for
	exited   chan struct{} // closed when run returned
	buf      []byte        // what a read brings in, until it is written on
	now      int64         // unix nanoseconds when the current batch of events arrived
	cur      *pair         // the pair being served: the one a panic ends
	waitErrs int           // epoll_wait failures in a row
	// lastPanic is when serve last recovered (0: never), for the backoff of
	// a loop that panics at once again.
	lastPanic time.Time
	backoff   time.Duration
}

var (
	loopsMu   sync.Mutex // StartLoops and stop; never on a relay's path
	loopUsers int
	loopsNow  atomic.Pointer[[]*loop] // nil: no loops, FastRelay reports false
	nextLoop  atomic.Uint32
	newPoller = poller.New // a test makes it fail
	// testAddHook, when set, fails the registration of a pair.
	testAddHook atomic.Pointer[func() error]
)

// LoopErrors counts what went wrong with the epoll relay's loops instead
// of panicking: a start that failed (the goroutine relay serves instead),
// a connection epoll would not take (relayed with goroutines), an
// epoll_ctl or epoll_wait that failed later (the pair, or the wait, ends).
var LoopErrors atomic.Uint64

// StartLoops starts n epoll loops for FastRelay (at least one), or counts
// one more user of the loops running (n is then ignored). stop, called
// once by each user, ends the loops and the relays on them when the last
// user calls it. On error, out of descriptors say, nothing runs and
// FastRelay keeps reporting false: callers relay with goroutines. The
// caller decides the scheduler's slots (GOMAXPROCS); see the worker's.
func StartLoops(n int) (stop func(), err error) {
	loopsMu.Lock()
	defer loopsMu.Unlock()
	if loopUsers == 0 {
		ls := make([]*loop, 0, max(n, 1))
		for range max(n, 1) {
			l, err := newLoop()
			if err != nil {
				for _, l := range ls {
					l.stop()
				}
				LoopErrors.Add(1)
				return nil, err
			}
			ls = append(ls, l)
		}
		loopsNow.Store(&ls)
	}
	loopUsers++
	var once sync.Once
	return func() { once.Do(releaseLoops) }, nil
}

func releaseLoops() {
	loopsMu.Lock()
	defer loopsMu.Unlock()
	if loopUsers--; loopUsers > 0 {
		return
	}
	// New relays see no loop from here on; one that picked a loop just
	// before is refused by it (closed) and falls back.
	if ls := loopsNow.Swap(nil); ls != nil {
		for _, l := range *ls {
			l.stop()
		}
	}
}

func newLoop() (*loop, error) {
	p, err := newPoller()
	if err != nil {
		return nil, err
	}
	l := &loop{p: p, byFD: map[int]*pair{}, acceptors: map[int]*Acceptor{}, pairs: map[*pair]struct{}{}, exited: make(chan struct{}), buf: make([]byte, BufSize)}
	go l.run()
	return l, nil
}

// stop ends the loop's pairs (net.ErrClosed), closes its epoll and waits
// for its goroutine to return.
func (l *loop) stop() {
	l.stopping.Store(true)
	l.mu.Lock()
	if !l.closed {
		l.p.Wake()
	}
	l.mu.Unlock()
	<-l.exited
}

// add registers p's sides with the loop; on error neither is registered
// and the caller still owns the descriptors.
func (l *loop) add(p *pair) error {
	// Set before the pair is published to the loop under l.mu.
	for i := range p.sides {
		p.sides[i].watched, p.sides[i].events = true, epollIn
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return net.ErrClosed
	}
	// Both are registered before the loop can look the pair up, so it never
	// changes the interest of a side that is not registered yet.
	for i := range p.sides {
		err := l.p.Add(p.sides[i].fd, epollIn)
		if h := testAddHook.Load(); h != nil && err == nil && i == 1 {
			if err = (*h)(); err != nil {
				l.p.Del(p.sides[1].fd)
			}
		}
		if err != nil {
			if i == 1 {
				l.p.Del(p.sides[0].fd)
			}
			LoopErrors.Add(1)
			return err
		}
	}
	l.byFD[p.sides[0].fd] = p
	l.byFD[p.sides[1].fd] = p
	l.pairs[p] = struct{}{}
	return nil
}

// kill has the loop end p. Under mu, so that it never wakes a loop whose
// descriptors are closed.
func (l *loop) kill(p *pair) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return // it ended every pair it had
	}
	l.killq = append(l.killq, p)
	l.p.Wake()
}

// tick is how often idle pairs are looked for.
const tick = 250 * time.Millisecond

// run serves the loop until stop: a panic (a bug, maybe reached through a
// client's bytes) ends the pair being served, is logged and counted, and
// the loop goes on, rather than take the worker and every relay with it.
func (l *loop) run() {
	for !l.serve() {
	}
	l.p.Close()
	close(l.exited)
}

// serve is the loop proper; it returns true when stopped, false after
// recovering a panic. Its one defer is per run, not per event.
func (l *loop) serve() (stopped bool) {
	defer l.recoverPanic()
	events := make([]unix.EpollEvent, 256)
	owners := make([]*pair, len(events))
	accs := make([]*Acceptor, len(events))
	var kills []*pair
	lastScan := time.Now().UnixNano()
	busy := false
	for {
		var n int
		var err error
		if busy {
			// While traffic flows, look without blocking first: a
			// non-blocking epoll_wait keeps this goroutine's P, where a
			// blocking one hands it off and has to win it back.
			n, err = l.p.PollNow(events)
		}
		if n <= 0 && err == nil {
			n, err = l.p.Wait(events, int(tick/time.Millisecond))
		}
		if err != nil {
			l.waitFailed(err)
			n = 0
		} else {
			l.waitErrs = 0
		}
		busy = n > 0
		// One clock reading per batch stamps every pair's activity in it.
		l.now = time.Now().UnixNano()
		// One lock for the batch's lookups. A pair that ends within the
		// batch is marked ended; level-triggered events of a descriptor
		// number reused meanwhile come again in the next batch.
		l.mu.Lock()
		for i := 0; i < n; i++ {
			owners[i] = l.byFD[int(events[i].Fd)]
			if owners[i] == nil {
				accs[i] = l.acceptors[int(events[i].Fd)]
			}
		}
		kills = append(kills[:0], l.killq...)
		clear(l.killq)
		l.killq = l.killq[:0]
		l.mu.Unlock()
		for i := 0; i < n; i++ {
			if p := owners[i]; p != nil && !p.connecting && events[i].Events&(unix.EPOLLIN|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
				p.side(int(events[i].Fd)).due = true
			}
		}
		for i := 0; i < n; i++ {
			fd := int(events[i].Fd)
			if l.p.IsWake(events[i].Fd) {
				l.p.Drain()
				continue
			}
			if p := owners[i]; p != nil && !p.ended {
				l.cur = p
				if p.connecting {
					if fd == p.sides[1].fd {
						l.connecting(p, events[i].Events)
					}
				} else {
					l.event(p, fd, events[i].Events)
				}
			} else if a := accs[i]; a != nil {
				accs[i] = nil
				l.accept(a)
			}
		}
		l.cur = nil
		for i, p := range kills {
			kills[i] = nil
			l.cur = p
			l.end(p, net.ErrClosed)
			l.cur = nil
		}
		if l.stopping.Load() {
			l.endAll()
			return true
		}
		if l.now-lastScan >= int64(tick) { // the batch's clock reading serves here too
			lastScan = l.now
			l.scanIdle(l.now)
		}
	}
}

// endAll ends every pair and marks the loop closed: add refuses pairs
// from here on, kill has nothing to do.
func (l *loop) endAll() {
	l.mu.Lock()
	l.closed = true
	all := make([]*pair, 0, len(l.pairs))
	for p := range l.pairs {
		all = append(all, p)
	}
	l.mu.Unlock()
	for _, p := range all {
		l.cur = p
		l.end(p, net.ErrClosed)
	}
	l.cur = nil
}

// waitFailed counts a failed epoll_wait, logs the first of a run, and
// waits before the next, longer each time up to a second, so that a loop
// whose epoll broke neither spins nor takes the worker down.
func (l *loop) waitFailed(err error) {
	LoopErrors.Add(1)
	if l.waitErrs == 0 {
		slog.Default().Error("epoll relay loop: wait failed", "err", err)
	}
	l.waitErrs++
	time.Sleep(min(time.Millisecond<<min(l.waitErrs, 10), time.Second))
}

// side is p's side whose descriptor is fd.
func (p *pair) side(fd int) *side {
	if p.sides[1].fd == fd {
		return &p.sides[1]
	}
	return &p.sides[0]
}

// event handles readiness of fd, one side of p.
func (l *loop) event(p *pair, fd int, ev uint32) {
	i := 0
	if p.sides[1].fd == fd {
		i = 1
	}
	src, dst := &p.sides[i], &p.sides[1-i]
	src.due = false
	src.rdhup = ev&unix.EPOLLRDHUP != 0
	if ev&unix.EPOLLOUT != 0 && len(dst.pending) > 0 {
		// fd is writable and the other side read data that waits for it.
		if !l.flush(p, dst, src) {
			return
		}
	}
	if ev&(unix.EPOLLIN|unix.EPOLLHUP|unix.EPOLLERR) == 0 {
		return
	}
	if !src.eof && len(src.pending) == 0 {
		l.read(p, src, dst) // the read returns the data, the end or the error
		return
	}
	if ev&(unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		// Reported even when not asked for, and level-triggered, so each
		// needs an answer or the loop spins. A failed socket ends the pair.
		errno, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
		if errno != 0 {
			l.end(p, unix.Errno(errno))
			return
		}
		if len(src.pending) > 0 || src.eof && dst.shut {
			// The peer's end arrived (with data still unread behind it, or
			// we are only waiting to write what we read): HUP repeats until
			// the socket is gone, so stop watching it until there is
			// something to wait for again.
			src.hup = true
			l.watch(p, src, 0)
			return
		}
		l.end(p, nil)
	}
}

// read reads once from src and writes it to dst; it reports whether it
// read bytes.
func (l *loop) read(p *pair, src, dst *side) bool {
	// Into the loop's buffer: flush either writes it all at once (the
	// common case) or copies the rest into a buffer of the side's own.
	n, err := rawio.Read(src.fd, l.buf) // recvfrom, as a raw system call: the loop keeps its P
	switch {
	case n > 0:
		b := l.buf[:n]
		p.last.Store(l.now)
		if h := testLoopHook.Load(); h != nil {
			(*h)(b)
		}
		if !p.seen && src == &p.sides[0] {
			p.seen = true
			if p.first != nil {
				p.first(b)
			} else if p.lf != nil && p.lf.First != nil {
				p.lf.First(p.peer.Addr(), b)
			}
		}
		src.unflush += uint64(n)
		if src.unflush >= flushBytes {
			src.flushCounters()
		}
		src.pending = b
		// The peer's FIN is in and this read took all before it: its end
		// is the next read. Read it now, and the bytes and the end go on
		// together (one segment, data and FIN: MSG_MORE, then the shutdown
		// or close) instead of a segment each.
		fin := false
		if src.rdhup && n < len(l.buf) {
			m, err := rawio.Read(src.fd, l.buf[n:])
			switch {
			case m > 0:
				src.unflush += uint64(m)
				src.pending = l.buf[:n+m]
			case m == 0 && err == nil:
				fin = true
				endsWithData.Add(1)
			}
		}
		if !l.flushMore(p, src, dst, fin) || !fin {
			return true
		}
		l.atEOF(p, src, dst)
		return true
	case n == 0 && err == nil:
		l.atEOF(p, src, dst)
	case errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR):
	default:
		l.end(p, err)
	}
	return false
}

// atEOF handles src's end of data, read just now.
func (l *loop) atEOF(p *pair, src, dst *side) {
	src.eof = true
	if dst.due && !dst.eof && len(dst.pending) == 0 {
		// The other side has an event later in this batch: most often
		// its own end (a client closing as its server did). Read it
		// now (its data first, a few reads while each is written on
		// whole), and when it ended too the pair closes at once, with
		// no epoll change and no shutdown first.
		dst.due = false
		for range 4 {
			if !l.read(p, dst, src) || p.ended || dst.eof || len(dst.pending) > 0 {
				break
			}
		}
		if p.ended {
			return
		}
	}
	if dst.eof && len(dst.pending) == 0 {
		// The other way ended and was written on: this is the end of
		// the pair, no epoll change first.
		l.halfClose(p, src, dst)
		return
	}
	if l.watch(p, src, l.outFor(p, src)) { // nothing more to read
		l.halfClose(p, src, dst)
	}
}

// flush writes src's pending bytes to dst. It reports false when the pair
// ended.
func (l *loop) flush(p *pair, src, dst *side) bool { return l.flushMore(p, src, dst, false) }

// flushMore is flush; more says src's end follows at once (MSG_MORE: the
// kernel holds the last bytes for the FIN the shutdown or close sends).
func (l *loop) flushMore(p *pair, src, dst *side, more bool) bool {
	for len(src.pending) > 0 {
		n, err := rawio.WriteMore(dst.fd, src.pending, more)
		if n > 0 {
			src.pending = src.pending[n:]
			p.last.Store(l.now)
			continue
		}
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if errors.Is(err, unix.EAGAIN) {
			if src.buf == nil {
				src.buf = bufPool.Get().(*[]byte)
				src.pending = (*src.buf)[:copy(*src.buf, src.pending)]
			}
			// Back-pressure: stop reading src until dst drains.
			return l.watch(p, src, l.outFor(p, src)) && l.watch(p, dst, l.want(dst)|unix.EPOLLOUT)
		}
		l.end(p, err)
		return false
	}
	// Drained: read src again, stop waiting for dst to be writable.
	if src.buf != nil {
		bufPool.Put(src.buf)
		src.buf = nil
	}
	if !src.eof && !l.watch(p, src, epollIn|l.outFor(p, src)) {
		return false
	}
	if !l.watch(p, dst, l.want(dst)) {
		return false
	}
	if src.eof {
		l.halfClose(p, src, dst)
	}
	return !p.ended
}

// want is what dst waits for apart from writability.
func (l *loop) want(s *side) uint32 {
	if s.eof || len(s.pending) > 0 {
		return 0
	}
	return epollIn
}

// epollIn is the loop's read interest: EPOLLRDHUP tells a read that the
// peer's FIN is in, so that its end can go on with its last bytes.
const epollIn = unix.EPOLLIN | unix.EPOLLRDHUP

// outFor is EPOLLOUT when the other side has data waiting to be written to
// s.
func (l *loop) outFor(p *pair, s *side) uint32 {
	other := &p.sides[0]
	if other == s {
		other = &p.sides[1]
	}
	if len(other.pending) > 0 {
		return unix.EPOLLOUT
	}
	return 0
}

// watch sets what the loop waits for on s, a side of p. A side that
// reported HUP and has nothing to wait for leaves the epoll set (HUP is
// reported whatever the interest, and would spin the loop); it comes back
// when it has. When epoll refuses, the pair ends with the error (counted
// in LoopErrors) and watch reports false.
func (l *loop) watch(p *pair, s *side, events uint32) bool {
	var err error
	switch {
	case events == 0:
		// Nothing to wait for (its read side ended, nothing to write to it):
		// out of the set at once, rather than a MOD now and a DEL at its HUP.
		// An error on it shows at the next write.
		if !s.watched {
			return true
		}
		s.watched = false
		err = l.p.Del(s.fd)
	case !s.watched:
		s.watched, s.events = true, events
		err = l.p.Add(s.fd, events)
	case s.events == events:
		return true // the common case: no system call per message
	default:
		s.events = events
		err = l.p.Mod(s.fd, events)
	}
	if err != nil {
		LoopErrors.Add(1)
		l.end(p, err)
		return false
	}
	return true
}

// halfClose passes src's end of data on to dst once everything was written,
// and ends the pair when both directions are done.
func (l *loop) halfClose(p *pair, src, dst *side) {
	if len(src.pending) > 0 || src.shut {
		return
	}
	src.shut = true
	if dst.eof && len(dst.pending) == 0 {
		// dst ended too and all it sent was written on: both directions
		// are done. Nothing is left unread on either socket, so the close
		// sends each the FIN a shutdown would, one system call sooner.
		l.end(p, nil)
		return
	}
	if err := rawShutdown(dst.fd); err != nil && !errors.Is(err, unix.ENOTCONN) {
		l.end(p, err)
		return
	}
	if p.sides[0].shut && p.sides[1].shut {
		l.end(p, nil)
	}
}

func (s *side) flushCounters() {
	if s.unflush == 0 {
		return
	}
	for _, c := range s.counters {
		if c != nil {
			c.Add(s.unflush)
		}
	}
	s.unflush = 0
}

// scanIdle ends pairs on which nothing moved for the idle timeout of a side
// still being read (the smaller one when both are).
func (l *loop) scanIdle(now int64) {
	l.mu.Lock()
	var idle, late []*pair
	for p := range l.pairs {
		if p.connecting {
			if p.deadline != 0 && now >= p.deadline && p.sides[1].fd >= 0 {
				late = append(late, p)
			}
			continue
		}
		var limit time.Duration
		for i := range p.sides {
			s := &p.sides[i]
			if s.eof || s.idle <= 0 {
				continue
			}
			if limit == 0 || s.idle < limit {
				limit = s.idle
			}
		}
		if limit > 0 && now-p.last.Load() >= int64(limit) {
			idle = append(idle, p)
		}
		// Counters of long connections are not held back for long.
		for i := range p.sides {
			p.sides[i].flushCounters()
		}
	}
	l.mu.Unlock()
	for _, p := range idle {
		l.cur = p
		l.end(p, ErrIdle)
	}
	for _, p := range late {
		// timeout_connect: on to the next server, or the end.
		l.cur = p
		if !p.ended && p.connecting {
			l.retry(p, unix.ETIMEDOUT)
		}
	}
	l.cur = nil
}

// recoverPanic, deferred by serve, ends the pair being served when a panic
// came, with ErrPanicked, counts and logs it.
func (l *loop) recoverPanic() {
	v := recover()
	if v == nil {
		return
	}
	LoopPanics.Add(1)
	p := l.cur
	l.cur = nil
	log := slog.Default()
	attrs := []any{"proto", "tcp", "relay", "epoll"}
	if p != nil {
		if p.opts.Panics != nil {
			p.opts.Panics.Add(1)
		}
		if p.opts.Log != nil {
			log = p.opts.Log
		}
	}
	recovery.Log(log, v, attrs...)
	if p != nil && !p.ended {
		func() {
			// Ending it may run into the same bug: the loop must survive that too.
			defer func() {
				if v := recover(); v != nil {
					recovery.Log(log, v, attrs...)
				}
			}()
			l.end(p, ErrPanicked)
		}()
	}
	// A loop that panics again at once (a broken epoll descriptor) must not
	// spin: it waits, longer each time, up to a second.
	if now := time.Now(); now.Sub(l.lastPanic) < time.Second {
		l.backoff = min(max(2*l.backoff, time.Millisecond), time.Second)
		time.Sleep(l.backoff)
	} else {
		l.backoff = 0
	}
	l.lastPanic = time.Now()
}

// end closes both connections and tells the relay's owner.
func (l *loop) end(p *pair, err error) {
	if p.ended {
		return
	}
	p.ended = true
	l.mu.Lock()
	delete(l.byFD, p.sides[0].fd)
	delete(l.byFD, p.sides[1].fd)
	delete(l.pairs, p)
	l.mu.Unlock()
	for i := range p.sides {
		s := &p.sides[i]
		s.flushCounters()
		if s.fd < 0 {
			continue // a server not connected (yet)
		}
		rawClose(s.fd) // the last descriptor of the socket: epoll forgets it too
		if s.buf != nil {
			bufPool.Put(s.buf)
			s.buf = nil
		}
	}
	if ignorable(err) {
		err = nil
	}
	if p.lf != nil {
		p.finish(err)
	} else if p.done != nil {
		p.done(err)
	}
}

// shutdowns counts rawShutdown's calls, and endsWithData the ends read
// right after their last bytes (epollIn), for the tests.
var shutdowns, endsWithData atomic.Uint64

// rawShutdown and rawClose are shutdown(SHUT_WR) and close without the
// scheduler's bookkeeping either: neither waits on a socket without
// SO_LINGER.
func rawShutdown(fd int) error {
	shutdowns.Add(1)
	if _, _, e := unix.RawSyscall(unix.SYS_SHUTDOWN, uintptr(fd), unix.SHUT_WR, 0); e != 0 {
		return e
	}
	return nil
}

func rawClose(fd int) {
	unix.RawSyscall(unix.SYS_CLOSE, uintptr(fd), 0, 0)
}
