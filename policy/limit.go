package policy

import (
	"hash/maphash"
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"sluice/conf"
)

// Limiter holds the per-client counters of a rate_limit: a sliding window
// (HAProxy's http_req_rate: the previous period's count weighted by the
// part of it still in the window, plus the current one) for requests and
// new connections, and the concurrent connections. Sharded, each shard
// under its own lock held for a few loads and stores; bounded to
// table_size clients, the least recently seen evicted.
type Limiter struct {
	cfg    conf.RateLimit
	period int64 // cfg.Period in nanoseconds
	seed   maphash.Seed
	shards []shard
	mask   uint64

	tracked atomic.Int64
	evicted atomic.Uint64
}

type shard struct {
	mu    sync.Mutex
	m     map[netip.Addr]*entry
	max   int
	lru   entry    // sentinel of the list, most recently seen first
	dirty []*entry // entries with counts not yet taken for peers
	_     [32]byte // keep neighbours' locks off one cache line
}

type entry struct {
	client     netip.Addr
	prev, next *entry

	period         int64  // the current period's number
	req, prevReq   uint32 // requests in it and in the one before (peers' included)
	conn, prevConn uint32 // new connections, likewise
	open           int32  // connections open now, on this node

	// Counts of this node not yet sent to peers (shared only), for the
	// period pend and the one before it.
	pend                   int64
	pendReq, pendConn      uint32
	pendPrevReq, pendPrevC uint32
	dirty                  bool
}

// maxShards bounds the shards; small tables get fewer, so table_size
// stays exact enough.
const maxShards = 64

// NewLimiter builds the limiter of cfg; nil for nil.
func NewLimiter(cfg *conf.RateLimit) *Limiter {
	if cfg == nil {
		return nil
	}
	c := *cfg
	if c.Period <= 0 {
		c.Period = conf.DefaultRateLimitPeriod
	}
	if c.TableSize <= 0 {
		c.TableSize = conf.DefaultRateTableSize
	}
	n := 1
	for n < maxShards && n*2 <= c.TableSize/64+1 {
		n *= 2
	}
	l := &Limiter{cfg: c, period: int64(c.Period), seed: maphash.MakeSeed(), shards: make([]shard, n), mask: uint64(n - 1)}
	// table_size is a bound: the shards share it, the first ones one
	// more each for the remainder (never rounded up past it).
	per, extra := c.TableSize/n, c.TableSize%n
	for i := range l.shards {
		s := &l.shards[i]
		s.m = make(map[netip.Addr]*entry)
		s.max = per
		if i < extra {
			s.max++
		}
		s.lru.next, s.lru.prev = &s.lru, &s.lru
	}
	return l
}

// Config is the rate limit the limiter enforces.
func (l *Limiter) Config() conf.RateLimit { return l.cfg }

func (l *Limiter) limitsConns() bool {
	return l != nil && (l.cfg.Connections > 0 || l.cfg.ConnectionRate > 0)
}

func (l *Limiter) shard(a netip.Addr) *shard {
	b := a.As16()
	return &l.shards[maphash.Bytes(l.seed, b[:])&l.mask]
}

// get returns client's entry, made (and another evicted if the shard is
// full) when absent; s.mu held.
func (l *Limiter) get(s *shard, client netip.Addr) *entry {
	e := s.m[client]
	if e != nil {
		// Most recently seen first.
		e.prev.next, e.next.prev = e.next, e.prev
	} else {
		if len(s.m) >= s.max {
			l.evict(s)
		}
		e = &entry{client: client}
		s.m[client] = e
		l.tracked.Add(1)
	}
	e.next, e.prev = s.lru.next, &s.lru
	s.lru.next.prev = e
	s.lru.next = e
	return e
}

// evict drops the least recently seen entry of s, preferring one with no
// open connection among the last few (its concurrent count would be lost).
func (l *Limiter) evict(s *shard) {
	victim := s.lru.prev
	for e, i := s.lru.prev, 0; e != &s.lru && i < 8; e, i = e.prev, i+1 {
		if e.open == 0 {
			victim = e
			break
		}
	}
	if victim == &s.lru {
		return
	}
	victim.prev.next, victim.next.prev = victim.next, victim.prev
	delete(s.m, victim.client)
	if victim.dirty {
		// Unsent counts go with it; remove it from the dirty list.
		for i, d := range s.dirty {
			if d == victim {
				s.dirty[i] = s.dirty[len(s.dirty)-1]
				s.dirty = s.dirty[:len(s.dirty)-1]
				break
			}
		}
	}
	l.tracked.Add(-1)
	l.evicted.Add(1)
}

// roll moves e to period p: the counts of a period that ended become the
// previous ones; older ones are forgotten.
func roll(e *entry, p int64) {
	switch {
	case p == e.period:
	case p == e.period+1:
		e.prevReq, e.prevConn = e.req, e.conn
		e.req, e.conn = 0, 0
		e.period = p
	case p > e.period:
		e.prevReq, e.prevConn, e.req, e.conn = 0, 0, 0, 0
		e.period = p
	}
}

// window returns the period number of now and the share of the previous
// period still in the sliding window.
func (l *Limiter) window(now time.Time) (int64, float64) {
	ns := now.UnixNano()
	p := ns / l.period
	return p, 1 - float64(ns-p*l.period)/float64(l.period)
}

func rate(cur, prev uint32, w float64) float64 { return float64(cur) + float64(prev)*w }

// count adds one request (conn false) or new connection (conn true) of
// this node to e in period p, and its pending share for peers.
func (l *Limiter) count(s *shard, e *entry, p int64, conn bool) {
	if conn {
		e.conn++
	} else {
		e.req++
	}
	if !l.cfg.Shared {
		return
	}
	switch {
	case e.pend == p:
	case e.pend == p-1:
		e.pendPrevReq, e.pendPrevC = e.pendReq, e.pendConn
		e.pendReq, e.pendConn = 0, 0
		e.pend = p
	default:
		e.pendPrevReq, e.pendPrevC, e.pendReq, e.pendConn = 0, 0, 0, 0
		e.pend = p
	}
	if conn {
		e.pendConn++
	} else {
		e.pendReq++
	}
	if !e.dirty {
		e.dirty = true
		s.dirty = append(s.dirty, e)
	}
}

// request counts a request of client and reports whether it is within
// rate_limit.requests. Refused requests count too, as HAProxy's
// http_req_rate counts every tracked request: a client that keeps
// sending past the limit stays refused until it slows down.
func (l *Limiter) request(client netip.Addr, now time.Time) bool {
	client = client.Unmap()
	p, w := l.window(now)
	s := l.shard(client)
	s.mu.Lock()
	e := l.get(s, client)
	roll(e, p)
	l.count(s, e, p, false)
	ok := rate(e.req, e.prevReq, w) <= float64(l.cfg.Requests)
	s.mu.Unlock()
	return ok
}

// open counts a new connection of client and reports whether it is within
// connection_rate and connections; a connection within them is counted
// open until close.
func (l *Limiter) open(client netip.Addr, now time.Time) bool {
	client = client.Unmap()
	p, w := l.window(now)
	s := l.shard(client)
	s.mu.Lock()
	e := l.get(s, client)
	ok := true
	if l.cfg.ConnectionRate > 0 {
		roll(e, p)
		l.count(s, e, p, true)
		ok = rate(e.conn, e.prevConn, w) <= float64(l.cfg.ConnectionRate)
	}
	if ok && l.cfg.Connections > 0 && int(e.open) >= l.cfg.Connections {
		ok = false
	}
	if ok {
		e.open++
	}
	s.mu.Unlock()
	return ok
}

// close ends a connection open counted.
func (l *Limiter) close(client netip.Addr) {
	client = client.Unmap()
	s := l.shard(client)
	s.mu.Lock()
	if e := s.m[client]; e != nil && e.open > 0 {
		e.open--
	}
	s.mu.Unlock()
}

// ClientRate is one client's counters, for `sluice ctl show limits`.
type ClientRate struct {
	Client         netip.Addr
	Requests       float64 // requests in the sliding window (peers' included when shared)
	ConnectionRate float64 // new connections in the sliding window
	Connections    int     // open now, on this node
}

// Tracked returns how many clients the table holds.
func (l *Limiter) Tracked() int { return int(l.tracked.Load()) }

// Evicted returns how many clients were evicted to keep table_size.
func (l *Limiter) Evicted() uint64 { return l.evicted.Load() }

// Top returns up to n clients with the highest request rates (then
// connection rates, then open connections).
func (l *Limiter) Top(n int, now time.Time) []ClientRate {
	p, w := l.window(now)
	var out []ClientRate
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		for _, e := range s.m {
			req, prevReq, conn, prevConn := e.req, e.prevReq, e.conn, e.prevConn
			switch {
			case e.period == p:
			case e.period == p-1:
				req, prevReq, conn, prevConn = 0, req, 0, conn
			default:
				req, prevReq, conn, prevConn = 0, 0, 0, 0
			}
			out = append(out, ClientRate{Client: e.client, Requests: rate(req, prevReq, w),
				ConnectionRate: rate(conn, prevConn, w), Connections: int(e.open)})
		}
		s.mu.Unlock()
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Requests != b.Requests {
			return a.Requests > b.Requests
		}
		if a.ConnectionRate != b.ConnectionRate {
			return a.ConnectionRate > b.ConnectionRate
		}
		if a.Connections != b.Connections {
			return a.Connections > b.Connections
		}
		return a.Client.Less(b.Client)
	})
	if len(out) > n {
		out = out[:n]
	}
	return out
}

// Increment is a node's count for one client in one period, sent to peers
// when the limit is shared. Periods are numbered from the Unix epoch
// (unix time / period), so that nodes with synchronised clocks agree on
// them.
type Increment struct {
	Client      netip.Addr
	Period      int64
	Requests    uint32
	Connections uint32 // new connections
}

// Shared reports whether the limit's counters are summed with peers.
func (l *Limiter) Shared() bool { return l != nil && l.cfg.Shared }

// TakeIncrements appends the counts made on this node since the last call
// (only when shared) and forgets them.
func (l *Limiter) TakeIncrements(dst []Increment) []Increment {
	if !l.Shared() {
		return dst
	}
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		for _, e := range s.dirty {
			if e.pendPrevReq > 0 || e.pendPrevC > 0 {
				dst = append(dst, Increment{Client: e.client, Period: e.pend - 1, Requests: e.pendPrevReq, Connections: e.pendPrevC})
			}
			if e.pendReq > 0 || e.pendConn > 0 {
				dst = append(dst, Increment{Client: e.client, Period: e.pend, Requests: e.pendReq, Connections: e.pendConn})
			}
			e.pendPrevReq, e.pendPrevC, e.pendReq, e.pendConn = 0, 0, 0, 0
			e.dirty = false
		}
		clear(s.dirty)
		s.dirty = s.dirty[:0]
		s.mu.Unlock()
	}
	return dst
}

// AddRemote adds a peer's increment to the client's counters; one for a
// period that has left the window is ignored, one ahead of this node's
// clock moves the client's window forward.
func (l *Limiter) AddRemote(inc Increment, now time.Time) {
	if l == nil || !inc.Client.IsValid() {
		return
	}
	p, _ := l.window(now)
	if inc.Period < p-1 || inc.Period > p+1 {
		return // outside the window, or a peer whose clock is far off
	}
	client := inc.Client.Unmap()
	s := l.shard(client)
	s.mu.Lock()
	e := l.get(s, client)
	roll(e, max(p, inc.Period))
	switch inc.Period {
	case e.period:
		e.req = addSat(e.req, inc.Requests)
		e.conn = addSat(e.conn, inc.Connections)
	case e.period - 1:
		e.prevReq = addSat(e.prevReq, inc.Requests)
		e.prevConn = addSat(e.prevConn, inc.Connections)
	}
	s.mu.Unlock()
}

func addSat(a, b uint32) uint32 {
	if s := a + b; s >= a {
		return s
	}
	return ^uint32(0)
}
