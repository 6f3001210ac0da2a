// Package peers synchronises sticky = "source" tables between the two boxes
// of a keepalived pair, or the N nodes of a BGP/ECMP group, like HAProxy's
// peers section: each node pushes the entries its picks record to every
// configured peer, and applies what its peers push to it, so a client keeps
// its server when the floating address moves or the router sends it to
// another node.
//
// N nodes form a full mesh: each lists all the others. A node sends only
// what it used itself (its picks, and on refresh the entries it looked up
// since the last sweep), never what it received, so every node gets each
// entry once from the node that used it and nothing goes round. The full
// dump on (re)connect is the exception: it carries every live entry, so a
// node that restarts learns the entries of a peer that is down meanwhile.
//
// Each node dials each peer and only writes on that connection; it only
// reads on the connections it accepts. A connection starts with a mutual
// HMAC-SHA256 challenge/response over the shared secret (which never goes on
// the wire), then carries length-prefixed batches of entries, each batch
// authenticated with a key derived from the secret and both challenges. On
// (re)connect the dialer first sends its whole tables, then new choices as
// they happen (batched for up to flush_interval) and, periodically, entries
// whose last use moved, so the peer's copies do not expire while a client is
// active.
//
// The same connections carry the counts of rate limits with shared = true:
// every flush_interval each node takes what its shared limiters counted
// since the last flush (policy.Limiter.TakeIncrements) and sends it to every
// peer, which adds it to the limiter of the frontend of the same name
// (AddRemote), so each node enforces the sum. Rates are best-effort: a
// peer's queue is bounded, and what does not fit while it is down is
// dropped (and counted); the sliding window forgets it soon anyway.
package peers

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sluice/internal/lograte"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"sluice/backend"
	"sluice/conf"
	"sluice/policy"
)

// Counters are the syncer's running totals. Must not be copied.
type Counters struct {
	Sent         atomic.Uint64 // entries written to peers
	Received     atomic.Uint64 // entries applied from peers
	AuthFailures atomic.Uint64 // handshakes that failed authentication, either side
	Dropped      atomic.Uint64 // entries not sent because a queue was full (the next reconnect resends all)
	Connects     atomic.Uint64 // successful outgoing connections
	// Refused counts accepted connections closed at once because
	// maxUnauthenticated others were still to prove the secret, or
	// maxPerSource from the same address (not a configured peer's).
	Refused atomic.Uint64

	// Shared rate limits: per-client increments of one period.
	RatesSent     atomic.Uint64 // increments written to peers
	RatesReceived atomic.Uint64 // increments added to this node's limiters
	RatesDropped  atomic.Uint64 // increments not sent: a peer's queue was full (peer down or slow) or it speaks protocol 1
	RatesIgnored  atomic.Uint64 // increments received for a frontend without a shared rate_limit here
}

// Syncer runs the peers protocol for one engine.
type Syncer struct {
	cfg     conf.Peers
	secret  []byte
	tables  map[string]*backend.StickyTable // backend name -> its sticky = "source" table
	names   []string                        // sorted keys of tables
	limits  map[string]*policy.Limiter      // frontend name -> its shared rate limit
	fronts  []string                        // sorted keys of limits
	incs    []policy.Increment              // collect's buffer for TakeIncrements
	log     *slog.Logger
	ln      net.Listener
	changes chan change
	peers   []*peer

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  map[net.Conn]struct{} // accepted connections, closed by Close

	unauth atomic.Int32 // accepted connections still in the handshake
	// peerIPs are the addresses of the hosts in peers.peers: their
	// connections wait in a pool of their own, so that others cannot lock
	// the peer out. Guarded by mu, as the counts below.
	peerIPs     map[netip.Addr]bool
	peerWaiting int                // handshakes from peerIPs
	strangers   int                // handshakes from any other address
	bySource    map[netip.Addr]int // handshakes per other address
	authLog     lograte.Limiter    // failed handshakes on accepted connections
	capLog      lograte.Limiter    // connections refused by the cap
	ignoreLog   lograte.Limiter    // increments for an unknown frontend

	// Refresh is how often entries whose last use moved are pushed again;
	// set before Start returns to take effect (tests). Defaults from the
	// tables' TTLs.
	refresh time.Duration
	sweeps  atomic.Uint64 // refresh sweeps done (tests)

	Counters Counters
}

// change is one entry of one backend's table.
type change struct {
	backend string
	e       backend.StickyEntry
}

// rate is one increment of one frontend's shared rate limit.
type rate struct {
	frontend string
	inc      policy.Increment
}

type peer struct {
	addr  string
	queue chan []change
	rates chan []rate // kept across reconnections: still in the window, mostly
	// v1 is set (by push only) when the peer refused the version 2
	// handshake: an older sluice, spoken to in version 1 without rates.
	v1 bool
}

// Tuning.
const (
	changeQueue  = 8192 // picks' notifications waiting for the sync goroutine
	peerQueue    = 64   // batches waiting for one peer's connection
	maxBatch     = 1024 // entries, or rate increments, per frame
	heartbeat    = 2 * time.Second
	readIdle     = 3 * heartbeat // a receiver drops a connection silent this long
	dialTimeout  = 2 * time.Second
	handshakeMax = 5 * time.Second
	backoffMin   = 100 * time.Millisecond
	backoffMax   = 5 * time.Second
	// Anyone who can reach peers.bind can open connections: at most this
	// many may wait to authenticate at once, and only for authTimeout (a
	// peer on the same network answers the challenge in milliseconds).
	maxUnauthenticated = 16
	// maxPerSource is how many of the strangers' maxUnauthenticated one
	// address may hold: one host alone cannot fill them.
	maxPerSource = 4
	// reprobe is how long a connection in protocol 1 (to a peer that
	// refused version 2) lasts when this node has shared rate limits,
	// before version 2 is tried again: the peer may have been upgraded,
	// or the refusal was a network failure at the wrong moment.
	reprobe = 5 * time.Minute
)

// authTimeout bounds the handshake of an accepted connection (a variable
// for tests).
var authTimeout = 2 * time.Second

// Waiting is how many accepted connections are still to authenticate.
func (s *Syncer) Waiting() int { return int(s.unauth.Load()) }

// Start reads the secret, binds cfg.Bind (or uses ln when not nil: a socket
// inherited from the master), hooks every sticky = "source" table of
// backends, and starts syncing them and the limiters of limits (by
// frontend name) that are Shared. It returns nil, nil when [peers] is not
// configured.
func Start(cfg conf.Peers, ln net.Listener, backends map[string]*backend.Backend, limits map[string]*policy.Limiter, log *slog.Logger) (*Syncer, error) {
	if !cfg.Enabled() {
		return nil, nil
	}
	secret, err := conf.ReadPeerSecret(cfg.SecretFile)
	if err != nil {
		return nil, err
	}
	s := &Syncer{cfg: cfg, secret: secret, tables: map[string]*backend.StickyTable{}, log: log.With("component", "peers"),
		changes: make(chan change, changeQueue), conns: map[net.Conn]struct{}{},
		peerIPs: peerAddrs(cfg.Peers, log), bySource: map[netip.Addr]int{}}
	s.refresh = time.Minute
	for name, b := range backends {
		if t := b.StickyTable(); t != nil {
			s.tables[name] = t
			s.names = append(s.names, name)
			if t.TTL > 0 {
				s.refresh = min(s.refresh, max(t.TTL/4, time.Second))
			}
		}
	}
	sort.Strings(s.names)
	s.limits = map[string]*policy.Limiter{}
	for name, l := range limits {
		if l.Shared() {
			s.limits[name] = l
			s.fronts = append(s.fronts, name)
		}
	}
	sort.Strings(s.fronts)
	if cfg.Bind != "" && ln == nil {
		if ln, err = net.Listen("tcp", cfg.Bind); err != nil {
			return nil, err
		}
	}
	s.ln = ln
	s.ctx, s.cancel = context.WithCancel(context.Background())
	for _, a := range cfg.Peers {
		s.peers = append(s.peers, &peer{addr: a, queue: make(chan []change, peerQueue), rates: make(chan []rate, peerQueue)})
	}
	for _, name := range s.names {
		s.tables[name].SetNotify(s.notifier(name))
	}
	if s.ln != nil {
		s.wg.Add(1)
		go s.accept()
	}
	if len(s.peers) > 0 {
		s.wg.Add(1)
		go s.collect()
		for _, p := range s.peers {
			s.wg.Add(1)
			go s.push(p)
		}
	}
	s.log.Info("stick-table sync started", "bind", cfg.Bind, "peers", cfg.Peers, "tables", s.names, "shared_rate_limits", s.fronts)
	return s, nil
}

// notifier returns the function a table calls after each Set: a non-blocking
// send, dropping (and counting) when the sync goroutine is behind.
func (s *Syncer) notifier(name string) func(backend.StickyEntry) {
	if len(s.peers) == 0 {
		return nil
	}
	return func(e backend.StickyEntry) {
		select {
		case s.changes <- change{backend: name, e: e}:
		default:
			s.Counters.Dropped.Add(1)
		}
	}
}

// Addr is the address peers' entries are received on, or nil.
func (s *Syncer) Addr() net.Addr {
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// Close stops syncing, closes the listener and every connection, and unhooks
// the tables.
func (s *Syncer) Close() {
	for _, name := range s.names {
		s.tables[name].SetNotify(nil)
	}
	s.cancel()
	if s.ln != nil {
		s.ln.Close()
	}
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// collect batches the tables' changes and the periodic refreshes and hands
// each batch to every peer's queue.
func (s *Syncer) collect() {
	defer s.wg.Done()
	flush := time.NewTicker(s.cfg.FlushInterval)
	defer flush.Stop()
	refresh := time.NewTicker(s.refresh)
	defer refresh.Stop()
	lastSweep := time.Now()
	var pending []change
	send := func() {
		if len(pending) == 0 {
			return
		}
		for _, p := range s.peers {
			select {
			case p.queue <- pending:
			default:
				s.Counters.Dropped.Add(uint64(len(pending)))
			}
		}
		pending = nil // the queued slice is shared read-only: start a new one
	}
	for {
		select {
		case <-s.ctx.Done():
			return
		case c := <-s.changes:
			pending = append(pending, c)
			if len(pending) >= maxBatch {
				send()
			}
		case <-flush.C:
			send()
			s.sendRates()
		case now := <-refresh.C:
			for _, name := range s.names {
				// Only this node's uses: in a mesh every node hears of an
				// entry from the node that used it, and passing on what a
				// peer sent would send each entry around again.
				for _, e := range s.tables[name].UsedHereSince(lastSweep) {
					pending = append(pending, change{backend: name, e: e})
					if len(pending) >= maxBatch {
						send()
					}
				}
			}
			lastSweep = now
			send()
			s.sweeps.Add(1)
		}
	}
}

// sendRates takes what the shared limiters counted since the last call and
// queues it for every peer, maxBatch increments a frame; a full queue drops
// (and counts) the batch.
func (s *Syncer) sendRates() {
	var batch []rate
	queue := func() {
		if len(batch) == 0 {
			return
		}
		for _, p := range s.peers {
			select {
			case p.rates <- batch:
			default:
				s.Counters.RatesDropped.Add(uint64(len(batch)))
			}
		}
		batch = nil // shared read-only by the queues: start a new one
	}
	for _, name := range s.fronts {
		s.incs = s.limits[name].TakeIncrements(s.incs[:0])
		for _, inc := range s.incs {
			batch = append(batch, rate{frontend: name, inc: inc})
			if len(batch) >= maxBatch {
				queue()
			}
		}
	}
	queue()
}

// push keeps a connection to one peer and writes to it, reconnecting with
// backoff (reset once a connection got through the handshake).
func (s *Syncer) push(p *peer) {
	defer s.wg.Done()
	backoff := backoffMin
	failing := false
	for s.ctx.Err() == nil {
		connected, err := s.session(p)
		if s.ctx.Err() != nil {
			return
		}
		if connected {
			backoff, failing = backoffMin, false
		}
		if errors.Is(err, errOldPeer) && !p.v1 {
			p.v1 = true
			s.log.Warn("peer refused protocol 2: an older sluice? Syncing sticky entries with it in protocol 1; shared rate limits are not sent to it until it is upgraded",
				"peer", p.addr)
			continue // at once: the peer answered, it is not down
		}
		switch {
		case errors.Is(err, errAuth):
			s.Counters.AuthFailures.Add(1)
			s.log.Error("peer failed authentication; check that both nodes have the same secret_file", "peer", p.addr, "err", err)
		case connected:
			s.log.Warn("peer connection lost; reconnecting", "peer", p.addr, "err", err)
		case !failing:
			s.log.Warn("peer unreachable; retrying with backoff", "peer", p.addr, "err", err)
		default:
			s.log.Debug("peer still unreachable", "peer", p.addr, "err", err)
		}
		failing = true
		select {
		case <-s.ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, backoffMax)
	}
}

// session runs one connection to p until it fails; connected reports
// whether it got through the handshake.
func (s *Syncer) session(p *peer) (connected bool, err error) {
	d := net.Dialer{Timeout: dialTimeout, KeepAlive: -1}
	c, err := d.DialContext(s.ctx, "tcp", p.addr)
	if err != nil {
		return false, err
	}
	stop := context.AfterFunc(s.ctx, func() { c.Close() })
	defer stop()
	defer c.Close()
	c.SetDeadline(time.Now().Add(handshakeMax))
	version := 2
	if p.v1 {
		version = 1
	}
	w, err := clientHandshake(c, s.secret, version)
	if err != nil {
		return false, err
	}
	c.SetDeadline(time.Time{})
	s.Counters.Connects.Add(1)
	s.log.Info("peer connected; sending the whole tables", "peer", p.addr)
	// What is queued now is older than the full dump that follows.
	for drained := false; !drained; {
		select {
		case <-p.queue:
		default:
			drained = true
		}
	}
	var all []change
	for _, name := range s.names {
		for _, e := range s.tables[name].UsedSince(time.Time{}) {
			all = append(all, change{backend: name, e: e})
		}
	}
	for len(all) > 0 {
		n := min(len(all), maxBatch)
		if err := s.write(c, w, all[:n]); err != nil {
			return true, err
		}
		all = all[n:]
	}
	beat := time.NewTicker(heartbeat)
	defer beat.Stop()
	var again <-chan time.Time // protocol 1 with shared limits: try 2 again later
	if version == 1 && len(s.fronts) > 0 {
		t := time.NewTimer(reprobe)
		defer t.Stop()
		again = t.C
	}
	for {
		select {
		case <-s.ctx.Done():
			return true, nil
		case <-again:
			p.v1 = false
			return true, errors.New("trying protocol 2 again")
		case batch := <-p.queue:
			if err := s.write(c, w, batch); err != nil {
				return true, err
			}
		case batch := <-p.rates:
			if version < 2 {
				s.Counters.RatesDropped.Add(uint64(len(batch)))
				continue
			}
			c.SetWriteDeadline(time.Now().Add(readIdle))
			if err := w.writeRates(c, batch); err != nil {
				return true, err
			}
			s.Counters.RatesSent.Add(uint64(len(batch)))
		case <-beat.C:
			if err := s.write(c, w, nil); err != nil {
				return true, err
			}
		}
	}
}

func (s *Syncer) write(c net.Conn, w *frameWriter, batch []change) error {
	c.SetWriteDeadline(time.Now().Add(readIdle))
	if err := w.write(c, batch, time.Now()); err != nil {
		return err
	}
	s.Counters.Sent.Add(uint64(len(batch)))
	return nil
}

func (s *Syncer) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if s.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Warn("accept", "err", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		ip := remoteIP(c)
		s.mu.Lock()
		if s.ctx.Err() != nil {
			s.mu.Unlock()
			c.Close()
			return
		}
		peer := s.peerIPs[ip]
		var full string
		switch {
		case peer && s.peerWaiting >= maxUnauthenticated:
			full = "from peers"
		case !peer && s.strangers >= maxUnauthenticated:
			full = "from addresses that are no peer"
		case !peer && s.bySource[ip] >= maxPerSource:
			full = "from this address"
		}
		if full != "" {
			s.mu.Unlock()
			s.Counters.Refused.Add(1) // before Close: whoever sees it closed sees it counted
			c.Close()
			if ok, n := s.capLog.Allow(time.Now()); ok {
				s.log.Warn("too many peer connections waiting to authenticate; closing new ones", "from", c.RemoteAddr().String(),
					"which", full, "limit", maxUnauthenticated, "limit_per_source", maxPerSource, "suppressed", n)
			}
			continue
		}
		if peer {
			s.peerWaiting++
		} else {
			s.strangers++
			s.bySource[ip]++
		}
		s.unauth.Add(1)
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		release := func() {
			s.mu.Lock()
			if peer {
				s.peerWaiting--
			} else {
				s.strangers--
				if s.bySource[ip]--; s.bySource[ip] <= 0 {
					delete(s.bySource, ip)
				}
			}
			s.mu.Unlock()
			s.unauth.Add(-1)
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.receive(c, release)
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
			c.Close()
		}()
	}
}

// receive authenticates an accepted connection and applies its batches.
func (s *Syncer) receive(c net.Conn, release func()) {
	from := c.RemoteAddr().String()
	c.SetDeadline(time.Now().Add(authTimeout))
	r, err := serverHandshake(c, s.secret)
	release()
	if err != nil {
		auth := errors.Is(err, errAuth)
		if auth {
			s.Counters.AuthFailures.Add(1)
		}
		if s.ctx.Err() != nil {
			return
		}
		if ok, n := s.authLog.Allow(time.Now()); ok {
			if auth {
				s.log.Error("peer failed authentication; connection dropped", "from", from, "err", err, "suppressed", n)
			} else {
				s.log.Warn("peer handshake failed; connection dropped", "from", from, "err", err, "suppressed", n)
			}
		}
		return
	}
	s.log.Info("peer authenticated", "from", from)
	for {
		c.SetReadDeadline(time.Now().Add(readIdle))
		entries, rates, err := r.read(c, time.Now(), handler{entry: s.apply, rate: s.applyRate})
		s.Counters.Received.Add(uint64(entries))
		s.Counters.RatesReceived.Add(uint64(rates))
		if err != nil {
			if errors.Is(err, errAuth) {
				s.Counters.AuthFailures.Add(1)
				s.log.Error("peer sent a batch that fails authentication; connection dropped", "from", from, "err", err)
			} else if s.ctx.Err() == nil {
				s.log.Info("peer connection closed", "from", from, "err", err)
			}
			return
		}
	}
}

// apply stores one received entry; entries of backends this node does not
// have, or has without a source table, are skipped.
func (s *Syncer) apply(name string, client netip.Addr, serverID string, used time.Time) bool {
	t := s.tables[name]
	if t == nil {
		return false
	}
	t.SetEntry(backend.StickyEntry{Client: client, ServerID: serverID, LastUsed: used})
	return true
}

// applyRate adds one received increment to the shared limiter of the
// frontend of that name; others are counted and skipped (the nodes'
// configurations differ).
func (s *Syncer) applyRate(frontend string, inc policy.Increment) bool {
	l := s.limits[frontend]
	if l == nil {
		s.Counters.RatesIgnored.Add(1)
		if ok, n := s.ignoreLog.Allow(time.Now()); ok {
			s.log.Warn("peer sent rate increments for a frontend without a shared rate_limit here; give both nodes the same frontends with shared = true",
				"frontend", frontend, "suppressed", n)
		}
		return false
	}
	l.AddRemote(inc, time.Now())
	return true
}

// remoteIP is c's peer address, IPv4 unmapped (zero when c is not TCP).
func remoteIP(c net.Conn) netip.Addr {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		ip, _ := netip.AddrFromSlice(a.IP)
		return ip.Unmap()
	}
	return netip.Addr{}
}

// peerAddrs resolves the hosts of peers.peers, once, at start: a peer
// dials from the address it is reached at. A name that does not resolve
// now leaves that peer in the strangers' pool (logged), where it still
// gets in unless a flood holds it.
func peerAddrs(peers []string, log *slog.Logger) map[netip.Addr]bool {
	out := map[netip.Addr]bool{}
	for _, p := range peers {
		host, _, err := net.SplitHostPort(p)
		if err != nil {
			host = p
		}
		if ip, err := netip.ParseAddr(host); err == nil {
			out[ip.Unmap()] = true
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
		ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		cancel()
		if err != nil {
			log.Warn("peers: cannot resolve a peer's name; its connections share the strangers' handshake slots", "peer", p, "err", err)
			continue
		}
		for _, ip := range ips {
			out[ip.Unmap()] = true
		}
	}
	return out
}
