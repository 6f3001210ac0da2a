package backend

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"

	"sluice/conf"
)

// ResolvConf is the file default resolvers are read from when a [dns]
// section lists none.
var ResolvConf = "/etc/resolv.conf"

// minTTLRefresh is the shortest wait a record's TTL can ask for: a TTL of 0
// or 1 must not turn discovery into a query loop. A configured interval
// below it still applies.
const minTTLRefresh = time.Second

// Discovery keeps the servers of a backend in step with a DNS name: an SRV
// record (target, port, weight, priority) or A/AAAA records with a fixed
// port. It re-resolves every interval, sooner when the records' TTL ends
// first, and swaps the backend's pool through SetServers when the answer
// changes. Servers that stay keep their *Server (health state, counters);
// connections to a removed server finish on it. Servers it did not find
// (the ones listed in the config) are always kept. A failed or empty answer
// keeps the last known set.
type Discovery struct {
	b         *Backend
	cfg       conf.DNS
	resolvers []string
	client    *dns.Client
	log       *slog.Logger

	mu      sync.Mutex         // serialises Refresh
	known   map[string]*Server // discovered servers by name
	weights map[string]int     // the weight DNS gave each

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
	start  sync.Once
	stop   sync.Once

	// OnChange, when set before Start, runs after each change of the pool
	// (the engine resyncs health checks with it).
	OnChange func()

	Counters DiscoveryCounters
}

// DiscoveryCounters are totals of one backend's discovery. Must not be
// copied.
type DiscoveryCounters struct {
	Resolutions atomic.Uint64 // answers with records, applied
	Failures    atomic.Uint64 // no resolver gave a usable answer: last set kept
	Empty       atomic.Uint64 // an answer without any server: last set kept
	Changes     atomic.Uint64 // pool swaps (servers added, removed or reweighted)
	Truncated   atomic.Uint64 // more servers than max_servers were found
}

// NewDiscovery prepares discovery for backend b. Resolvers default to the
// nameservers of ResolvConf.
func NewDiscovery(b *Backend, c *conf.DNS, log *slog.Logger) (*Discovery, error) {
	if log == nil {
		log = slog.Default()
	}
	d := &Discovery{
		b:         b,
		cfg:       *c,
		resolvers: c.Resolvers,
		client:    &dns.Client{Net: "udp", Timeout: c.Timeout},
		log:       log.With("backend", b.Name, "dns", c.Name),
		known:     map[string]*Server{},
		done:      make(chan struct{}),
	}
	if d.cfg.Interval <= 0 {
		d.cfg.Interval = conf.DefaultDNSInterval
	}
	if d.cfg.MaxServers <= 0 {
		d.cfg.MaxServers = conf.DefaultDNSMaxServers
	}
	if len(d.resolvers) == 0 {
		// A parsed file has its resolvers filled by conf; a config built
		// in code reads them the same way.
		rs, err := conf.SystemResolvers(ResolvConf)
		if err != nil {
			return nil, fmt.Errorf("backend %s: dns: no resolvers configured and %w", b.Name, err)
		}
		d.resolvers = rs
	}
	d.ctx, d.cancel = context.WithCancel(context.Background())
	return d, nil
}

// Start resolves at once, then keeps resolving in the background until Stop.
func (d *Discovery) Start() {
	d.start.Do(func() { go d.loop() })
}

// Stop ends the background resolution and waits for it.
func (d *Discovery) Stop() {
	d.stop.Do(func() {
		d.cancel()
		started := true
		d.start.Do(func() { started = false })
		if started {
			<-d.done
		}
	})
}

func (d *Discovery) loop() {
	defer close(d.done)
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-d.ctx.Done():
			return
		case <-t.C:
		}
		t.Reset(d.Refresh(d.ctx))
	}
}

// Refresh resolves once, applies the answer and returns how long to wait
// before the next resolution.
func (d *Discovery) Refresh(ctx context.Context) time.Duration {
	d.mu.Lock()
	defer d.mu.Unlock()
	found, ttl, err := d.resolve(ctx)
	switch {
	case ctx.Err() != nil:
		return d.cfg.Interval
	case err != nil:
		d.Counters.Failures.Add(1)
		d.log.Warn("dns discovery failed; keeping the last known servers", "err", err, "servers", len(d.known))
		return d.cfg.Interval
	case len(found) == 0:
		d.Counters.Empty.Add(1)
		d.log.Warn("dns discovery found no servers; keeping the last known servers", "servers", len(d.known))
		return d.cfg.Interval
	}
	d.Counters.Resolutions.Add(1)
	if err := d.apply(found); err != nil {
		d.log.Error("dns discovery: cannot apply servers", "err", err)
	}
	return nextRefresh(d.cfg.Interval, ttl)
}

// nextRefresh is the wait before the next resolution: the interval, or the
// records' TTL when that is shorter (never below minTTLRefresh, unless the
// interval itself is).
func nextRefresh(interval, ttl time.Duration) time.Duration {
	if ttl <= 0 {
		return interval
	}
	return min(interval, max(ttl, minTTLRefresh))
}

// found is one discovered server address.
type found struct {
	addr     netip.AddrPort
	weight   int // SRV weight, 0..65535; 1 for A/AAAA
	priority int // SRV priority; the lowest found is primary, the rest backup
}

// resolve returns what the name points to now and the smallest TTL seen.
func (d *Discovery) resolve(ctx context.Context) ([]found, time.Duration, error) {
	name := dns.Fqdn(d.cfg.Name)
	ttl := uint32(0)
	seeTTL := func(t uint32) {
		if ttl == 0 || t < ttl {
			ttl = t
		}
	}
	var out []found
	if d.cfg.Port > 0 {
		addrs, err := d.lookupAddrs(ctx, name, nil, seeTTL)
		if err != nil {
			return nil, 0, err
		}
		for _, a := range addrs {
			out = append(out, found{addr: netip.AddrPortFrom(a, uint16(d.cfg.Port)), weight: 1})
		}
		return out, time.Duration(ttl) * time.Second, nil
	}
	r, err := d.exchange(ctx, name, dns.TypeSRV)
	if err != nil {
		return nil, 0, err
	}
	for _, rr := range r.Answer {
		srv, ok := rr.(*dns.SRV)
		if !ok {
			continue
		}
		seeTTL(srv.Hdr.Ttl)
		addrs, err := d.lookupAddrs(ctx, srv.Target, r.Extra, seeTTL)
		if err != nil {
			return nil, 0, fmt.Errorf("target %s of %s: %w", srv.Target, name, err)
		}
		for _, a := range addrs {
			out = append(out, found{addr: netip.AddrPortFrom(a, srv.Port), weight: int(srv.Weight), priority: int(srv.Priority)})
		}
	}
	return out, time.Duration(ttl) * time.Second, nil
}

// lookupAddrs returns the A and AAAA addresses of name: from extra (an SRV
// answer's additional section) when it has them, else by asking.
func (d *Discovery) lookupAddrs(ctx context.Context, name string, extra []dns.RR, seeTTL func(uint32)) ([]netip.Addr, error) {
	var out []netip.Addr
	// owned: only records of name itself (an additional section may carry
	// other targets' addresses); an answer may also hold a CNAME chain.
	collect := func(rrs []dns.RR, owned bool) {
		for _, rr := range rrs {
			var ip net.IP
			switch v := rr.(type) {
			case *dns.A:
				ip = v.A
			case *dns.AAAA:
				ip = v.AAAA
			default:
				continue
			}
			if owned && dns.CanonicalName(rr.Header().Name) != dns.CanonicalName(name) {
				continue
			}
			if a, ok := netip.AddrFromSlice(ip); ok {
				out = append(out, a.Unmap())
				seeTTL(rr.Header().Ttl)
			}
		}
	}
	if collect(extra, true); len(out) > 0 {
		return out, nil
	}
	var errs []error
	answered := false
	for _, t := range []uint16{dns.TypeA, dns.TypeAAAA} {
		r, err := d.exchange(ctx, name, t)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		answered = true
		collect(r.Answer, false)
	}
	if !answered {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

// exchange asks each resolver in turn until one answers NOERROR or
// NXDOMAIN (an answer, possibly empty). A truncated answer is asked again
// over TCP.
func (d *Discovery) exchange(ctx context.Context, name string, qtype uint16) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.SetEdns0(4096, false)
	var errs []error
	for _, res := range d.resolvers {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		r, _, err := d.client.ExchangeContext(ctx, m, res)
		if err == nil && r.Truncated {
			tcp := &dns.Client{Net: "tcp", Timeout: d.cfg.Timeout}
			r, _, err = tcp.ExchangeContext(ctx, m, res)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", res, err))
			continue
		}
		if r.Rcode != dns.RcodeSuccess && r.Rcode != dns.RcodeNameError {
			errs = append(errs, fmt.Errorf("%s: %s %s: %s", res, name, dns.TypeToString[qtype], dns.RcodeToString[r.Rcode]))
			continue
		}
		return r, nil
	}
	return nil, errors.Join(errs...)
}

// apply turns what was found into servers and swaps the pool when it
// changed. Must hold d.mu.
func (d *Discovery) apply(fs []found) error {
	// Deduplicate (an address listed twice keeps its best priority), then
	// order: primaries first, heavier first, then by address, so that
	// max_servers keeps the most useful ones and names are stable.
	byAddr := map[netip.AddrPort]found{}
	for _, f := range fs {
		if o, ok := byAddr[f.addr]; !ok || f.priority < o.priority || (f.priority == o.priority && f.weight > o.weight) {
			byAddr[f.addr] = f
		}
	}
	fs = fs[:0]
	for _, f := range byAddr {
		fs = append(fs, f)
	}
	slices.SortFunc(fs, func(a, b found) int {
		return cmp.Or(cmp.Compare(a.priority, b.priority), cmp.Compare(b.weight, a.weight), a.addr.Compare(b.addr))
	})
	if len(fs) > d.cfg.MaxServers {
		d.Counters.Truncated.Add(1)
		d.log.Warn("dns discovery found more servers than max_servers; keeping the first", "found", len(fs), "max_servers", d.cfg.MaxServers)
		fs = fs[:d.cfg.MaxServers]
	}
	// SRV weights run to 65535, server weights to conf.MaxWeight: scale
	// down keeping the ratios, and give weight 0 (RFC 2782: "very small
	// chance") the smallest weight that still takes traffic.
	maxW := 0
	for _, f := range fs {
		maxW = max(maxW, f.weight)
	}
	weight := func(w int) int {
		if maxW > conf.MaxWeight {
			w = w * conf.MaxWeight / maxW
		}
		return max(w, 1)
	}
	primary := fs[0].priority

	next := make(map[string]*Server, len(fs))
	weights := make(map[string]int, len(fs))
	var found []*Server
	var reweighed []*Server // weights to store under the pool's lock
	changed := false
	for _, f := range fs {
		name := f.addr.String()
		backup := f.priority != primary
		w := weight(f.weight)
		s := d.known[name]
		if s == nil || s.Backup != backup {
			// New, or moved between primary and backup: Backup is fixed
			// for a server's life, so it gets a new one.
			s = NewServer(d.b.Name, name, name, w, backup, 0)
			changed = true
		} else if d.weights[name] != w {
			// A new weight from DNS is a runtime weight (ConfWeight stays
			// what the server started with); one set by an operator stays
			// until DNS changes its own.
			reweighed = append(reweighed, s)
			changed = true
		}
		next[name] = s
		weights[name] = w
		found = append(found, s)
	}
	if len(next) != len(d.known) {
		changed = true
	}
	for name := range d.known {
		if _, ok := next[name]; !ok {
			changed = true
		}
	}
	if !changed {
		return nil
	}
	// A read-modify-write of the pool: whatever other writers left there
	// (the listed servers and their runtime weights) stays; only what DNS
	// found before is replaced.
	err := d.b.UpdateServers(func(cur []*Server) []*Server {
		servers := make([]*Server, 0, len(cur)+len(found))
		for _, s := range cur {
			if d.known[s.Name] != s {
				servers = append(servers, s)
			}
		}
		for _, s := range reweighed {
			s.weight.Store(int32(weights[s.Name]))
		}
		return append(servers, found...)
	})
	if err != nil {
		return err
	}
	if d.OnChange != nil {
		d.OnChange()
	}
	added, removed := 0, 0
	for name := range next {
		if _, ok := d.known[name]; !ok {
			added++
		}
	}
	for name := range d.known {
		if _, ok := next[name]; !ok {
			removed++
		}
	}
	d.known, d.weights = next, weights
	d.Counters.Changes.Add(1)
	d.log.Info("dns discovery changed the servers", "added", added, "removed", removed, "servers", len(next))
	return nil
}

// Name is the DNS name being resolved.
func (d *Discovery) Name() string { return d.cfg.Name }

// Resolvers are the resolvers asked, in order.
func (d *Discovery) Resolvers() []string { return d.resolvers }
