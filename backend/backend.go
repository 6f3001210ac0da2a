package backend

import (
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"sluice/conf"
)

// Client is what an algorithm may know about who is asking.
type Client struct {
	Addr netip.Addr // the client address (from the PROXY header when there is one)
}

// Balancer is one balancing algorithm over a fixed list of servers (built
// anew with each pool snapshot). Pick returns an available server (see
// Server.Available), or nil when none is; the caller turns nil into a
// refusal (closed connection, 503). skip, when not nil, is a server to avoid
// (the one a retry just failed on). Pick must be safe for concurrent use,
// take no lock and allocate nothing.
type Balancer interface {
	Pick(c *Client, skip *Server) *Server
}

// pool is an immutable snapshot of a backend's servers and the balancers
// built over them. It is replaced whole, never modified.
type pool struct {
	all     []*Server
	byID    map[string]*Server
	primary Balancer
	backup  Balancer
}

// Backend is a named pool of servers. It must not be copied.
type Backend struct {
	Name           string
	Mode           conf.Mode
	TimeoutConnect time.Duration
	TimeoutServer  time.Duration
	Retries        int
	// QueueTimeout is the longest a connection waits in PickWait when every
	// server is at its maxconn; 0 refuses it at once.
	QueueTimeout time.Duration
	Sticky       conf.Sticky // cookie: the HTTP layer, with ServerByID; source: the table below
	StickyCookie string      // the cookie's name, sticky = "cookie"
	// Checked: the servers' health is watched (an active check or
	// passive observation); the stats show "no check" otherwise.
	Checked bool
	// TLS is how server connections speak TLS ([backend.NAME.tls]); nil:
	// plain TCP.
	TLS  *ClientTLS
	algo conf.Balance

	sticky *StickyTable // sticky = "source"
	// pool is what picks read, lock-free. Writers (DNS discovery, agent
	// checks, the admin API, reload carry-over) take writeMu and build the
	// next snapshot from the current one, so none overwrites another's
	// change with a snapshot it read before that change.
	pool    atomic.Pointer[pool]
	writeMu sync.Mutex
	queue   waitQueue

	Counters BackendCounters
}

// BackendCounters are totals for the whole backend.
type BackendCounters struct {
	NoServer      atomic.Uint64 // connections refused because no server was available
	Queue         atomic.Int64  // connections waiting in the queue now
	MaxQueue      atomic.Int64  // the longest the queue has been
	Queued        atomic.Uint64 // connections that had to wait in the queue
	QueueTimeouts atomic.Uint64 // connections refused after queue_timeout
	Current       atomic.Int64  // connections open to its servers now
	MaxActive     atomic.Int64  // the most Current has been
	// Resp counts, by status class as Counters.Resp, the answers sluice
	// gave itself for requests routed here (503 no server or connect
	// failed, 502 broken response, 504 server timeout): a backend's
	// responses are its servers' plus these, as HAProxy counts them.
	Resp [6]atomic.Uint64
}

// New builds a backend from its configuration.
func New(c *conf.Backend) (*Backend, error) {
	b := &Backend{
		Name:           c.Name,
		Mode:           c.Mode,
		TimeoutConnect: c.TimeoutConnect,
		TimeoutServer:  c.TimeoutServer,
		Retries:        c.Retries,
		QueueTimeout:   c.QueueTimeout,
		Sticky:         c.Sticky,
		StickyCookie:   c.StickyCookie,
		Checked:        c.Health.Check.Active() || c.Health.Observe,
		algo:           c.Balance,
		TLS:            NewClientTLS(c.TLS),
	}
	if c.Sticky == conf.StickySource {
		size := c.StickySize
		if size <= 0 {
			size = conf.DefaultStickySize
		}
		b.sticky = NewStickyTable(size, c.StickyTTL)
	}
	servers := make([]*Server, 0, len(c.Servers))
	for _, s := range c.Servers {
		servers = append(servers, NewServer(c.Name, s.Name, s.Address, s.Weight, s.Backup, s.MaxConn))
	}
	if err := b.SetServers(servers); err != nil {
		return nil, err
	}
	return b, nil
}

// SetServers replaces the pool with a new snapshot over servers. A writer
// that derives the list from the current pool must use UpdateServers.
func (b *Backend) SetServers(servers []*Server) error {
	b.writeMu.Lock()
	defer b.writeMu.Unlock()
	return b.setServersLocked(servers)
}

// UpdateServers replaces the pool with a snapshot over f(current servers),
// with other writers held off from the read to the store. f must not
// modify its argument nor call back into b's writers.
func (b *Backend) UpdateServers(f func(cur []*Server) []*Server) error {
	b.writeMu.Lock()
	defer b.writeMu.Unlock()
	return b.setServersLocked(f(b.pool.Load().all))
}

func (b *Backend) setServersLocked(servers []*Server) error {
	var prim, back []*Server
	for _, s := range servers {
		if s.Backup {
			back = append(back, s)
		} else {
			prim = append(prim, s)
		}
	}
	p := &pool{all: servers, byID: make(map[string]*Server, len(servers))}
	for _, s := range servers {
		p.byID[s.ID] = s
	}
	var err error
	if p.primary, err = newBalancer(b.algo, prim); err != nil {
		return err
	}
	if p.backup, err = newBalancer(b.algo, back); err != nil {
		return err
	}
	for _, s := range servers {
		s.queue.Store(&b.queue)
		s.backend.Store(&b.Counters)
	}
	b.pool.Store(p)
	b.queue.wakeIfWaiting() // new servers or weights may have room
	return nil
}

// Reweigh rebuilds the snapshot after runtime weight changes.
func (b *Backend) Reweigh() error {
	b.writeMu.Lock()
	defer b.writeMu.Unlock()
	return b.setServersLocked(b.pool.Load().all)
}

// SetWeight changes a server's runtime weight and rebuilds the schedule.
// Both happen under the writers' lock, so a snapshot another writer builds
// cannot carry the weight from before.
func (b *Backend) SetWeight(s *Server, w int) error {
	if w < 0 || w > conf.MaxWeight {
		return fmt.Errorf("weight %d is outside 0..%d", w, conf.MaxWeight)
	}
	b.writeMu.Lock()
	defer b.writeMu.Unlock()
	s.weight.Store(int32(w))
	return b.setServersLocked(b.pool.Load().all)
}

// Balance is the balancing algorithm.
func (b *Backend) Balance() conf.Balance { return b.algo }

// Servers returns the current servers; the slice must not be modified.
func (b *Backend) Servers() []*Server { return b.pool.Load().all }

// Server finds a server by name, or nil.
func (b *Backend) Server(name string) *Server {
	for _, s := range b.pool.Load().all {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// ServerByID finds a server by its opaque ID (a sticky cookie's value), or
// nil.
func (b *Backend) ServerByID(id string) *Server { return b.pool.Load().byID[id] }

// StickyTable is the source-address table of a sticky = "source" backend,
// else nil.
func (b *Backend) StickyTable() *StickyTable { return b.sticky }

// StickyEntries lists the source-address table with server names filled in
// (nil without one).
func (b *Backend) StickyEntries() []StickyEntry {
	if b.sticky == nil {
		return nil
	}
	p := b.pool.Load()
	es := b.sticky.Entries()
	for i := range es {
		if s := p.byID[es[i].ServerID]; s != nil {
			es[i].Server = s.Name
		}
	}
	return es
}

// Pick chooses a server for client c, avoiding skip where another exists.
// With sticky = "source", a client goes back to its recorded server while
// that one is available (and, for a backup, while no primary is); otherwise
// the algorithm picks and the choice is recorded. Backup servers are chosen
// only when no primary is available. Pick does not count the connection:
// see PickWait.
func (b *Backend) Pick(c *Client, skip *Server) *Server {
	p := b.pool.Load()
	if b.sticky == nil || c == nil || !c.Addr.IsValid() {
		return p.pick(c, skip)
	}
	if id, ok := b.sticky.Get(c.Addr); ok {
		if s := p.byID[id]; s != nil && s != skip && s.Available() {
			if !s.Backup {
				return s
			}
			if prim := p.primary.Pick(c, skip); prim != nil {
				b.sticky.Set(c.Addr, prim.ID) // primaries are back
				return prim
			}
			return s
		}
	}
	s := p.pick(c, skip)
	if s != nil {
		b.sticky.Set(c.Addr, s.ID)
	}
	return s
}

func (p *pool) pick(c *Client, skip *Server) *Server {
	s := p.pick1(c, skip)
	if s != nil && s.slowStart.start.Load() != 0 && !s.rampAdmits() {
		// A server in slow start turns this one away: pick again without
		// it, but keep it rather than go back to the server a retry avoids.
		if o := p.pick1(c, s); o != nil && o != skip {
			return o
		}
	}
	return s
}

func (p *pool) pick1(c *Client, skip *Server) *Server {
	if s := p.primary.Pick(c, skip); s != nil {
		return s
	}
	if s := p.backup.Pick(c, skip); s != nil {
		return s
	}
	if skip != nil && skip.Available() {
		return skip // the only one left; a retry on it beats a refusal
	}
	return nil
}

// available reports whether some server is Available now.
func (p *pool) available() bool {
	for _, s := range p.all {
		if s.Available() {
			return true
		}
	}
	return false
}

// usable reports whether some server could take traffic if it had a free
// slot: up, ready and weighted above zero, at its maxconn or not.
func (p *pool) usable() bool {
	for _, s := range p.all {
		if s.inService() {
			return true
		}
	}
	return false
}

// UpCount returns how many servers are up and how many there are.
func (b *Backend) UpCount() (up, total int) {
	for _, s := range b.pool.Load().all {
		total++
		if s.Up() {
			up++
		}
	}
	return up, total
}

func newBalancer(algo conf.Balance, servers []*Server) (Balancer, error) {
	switch algo {
	case "", conf.BalanceRoundRobin:
		return newRoundRobin(servers), nil
	case conf.BalanceLeastConn:
		return newLeastConn(servers), nil
	case conf.BalanceIPHash:
		return newIPHash(servers), nil
	case conf.BalanceRandom:
		return newP2C(servers), nil
	default:
		// Only a config built in code gets here; the names live in conf.
		return nil, fmt.Errorf("balance %w", new(conf.Balance).UnmarshalText([]byte(algo)))
	}
}
