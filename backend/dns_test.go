package backend

import (
	"log/slog"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"sluice/conf"
)

// zone is a real miekg/dns server on 127.0.0.1 whose records a test
// changes while discovery runs.
type zone struct {
	addr   string
	mu     sync.Mutex
	rrs    []dns.RR
	silent atomic.Bool // drop every query, as a dead resolver would
	asked  atomic.Int64
}

func startZone(t *testing.T) *zone {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	z := &zone{addr: pc.LocalAddr().String()}
	started := make(chan struct{})
	srv := &dns.Server{PacketConn: pc, NotifyStartedFunc: func() { close(started) },
		Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
			z.asked.Add(1)
			if z.silent.Load() {
				return
			}
			m := new(dns.Msg)
			m.SetReply(r)
			q := r.Question[0]
			z.mu.Lock()
			for _, rr := range z.rrs {
				h := rr.Header()
				switch {
				case dns.CanonicalName(h.Name) == dns.CanonicalName(q.Name) && h.Rrtype == q.Qtype:
					m.Answer = append(m.Answer, dns.Copy(rr))
				case q.Qtype == dns.TypeSRV && h.Rrtype == dns.TypeA && h.Name == "a.srv.test.":
					// Glue for one target only: the others need their own query.
					m.Extra = append(m.Extra, dns.Copy(rr))
				}
			}
			z.mu.Unlock()
			w.WriteMsg(m)
		})}
	go srv.ActivateAndServe()
	select {
	case <-started:
	case <-time.After(5 * time.Second):
		t.Fatal("dns server did not start")
	}
	t.Cleanup(func() { srv.Shutdown() })
	return z
}

func (z *zone) set(t *testing.T, records ...string) {
	t.Helper()
	var rrs []dns.RR
	for _, s := range records {
		rr, err := dns.NewRR(s)
		if err != nil {
			t.Fatal(err)
		}
		rrs = append(rrs, rr)
	}
	z.mu.Lock()
	z.rrs = rrs
	z.mu.Unlock()
}

func newDiscovery(t *testing.T, b *Backend, c conf.DNS) *Discovery {
	t.Helper()
	if c.Timeout == 0 {
		c.Timeout = time.Second
	}
	if c.MaxServers == 0 {
		c.MaxServers = conf.DefaultDNSMaxServers
	}
	d, err := NewDiscovery(b, &c, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})))
	if err != nil {
		t.Fatal(err)
	}
	d.Start()
	t.Cleanup(d.Stop)
	return d
}

func dnsBackend(t *testing.T, balance conf.Balance) *Backend {
	t.Helper()
	b, err := New(&conf.Backend{Name: "app", Balance: balance})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func serverNames(b *Backend) []string {
	var out []string
	for _, s := range b.Servers() {
		out = append(out, s.Name)
	}
	slices.Sort(out)
	return out
}

// waitPool waits until the pool holds exactly want and returns how long
// that took.
func waitPool(t *testing.T, b *Backend, timeout time.Duration, want ...string) time.Duration {
	t.Helper()
	slices.Sort(want)
	t0 := time.Now()
	for !slices.Equal(serverNames(b), want) {
		if time.Since(t0) > timeout {
			t.Fatalf("pool is %v after %s, want %v", serverNames(b), timeout, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(t0)
}

func TestDNSDiscoveryFollowsRecords(t *testing.T) {
	z := startZone(t)
	z.set(t, "app.test. 60 IN A 10.0.0.1", "app.test. 60 IN A 10.0.0.2")
	b := dnsBackend(t, "roundrobin")
	const interval = 200 * time.Millisecond
	d := newDiscovery(t, b, conf.DNS{Name: "app.test", Port: 8080, Resolvers: []string{z.addr}, Interval: interval})
	waitPool(t, b, 5*time.Second, "10.0.0.1:8080", "10.0.0.2:8080")
	kept := b.Server("10.0.0.1:8080")
	kept.SetUp(false) // its health state must survive the swap
	kept.Counters.Sessions.Add(7)

	z.set(t, "app.test. 60 IN A 10.0.0.1", "app.test. 60 IN A 10.0.0.3")
	took := waitPool(t, b, 2*interval+time.Second, "10.0.0.1:8080", "10.0.0.3:8080")
	t.Logf("pool followed the records after %s (interval %s)", took, interval)
	if s := b.Server("10.0.0.1:8080"); s != kept || s.Up() || s.Counters.Sessions.Load() != 7 {
		t.Errorf("10.0.0.1 lost its state across the swap: same=%v up=%v", s == kept, s.Up())
	}
	if s := b.Pick(&Client{}, nil); s == nil || s.Name != "10.0.0.3:8080" {
		t.Errorf("pick = %v, want the only server up", s)
	}

	// An empty answer keeps the last set.
	empty := d.Counters.Empty.Load()
	z.set(t)
	waitCounter(t, &d.Counters.Empty, empty+2, 5*time.Second)
	if got := serverNames(b); !slices.Equal(got, []string{"10.0.0.1:8080", "10.0.0.3:8080"}) {
		t.Errorf("pool after an empty answer = %v", got)
	}
}

func waitCounter(t *testing.T, c *atomic.Uint64, want uint64, timeout time.Duration) {
	t.Helper()
	t0 := time.Now()
	for c.Load() < want {
		if time.Since(t0) > timeout {
			t.Fatalf("counter is %d after %s, want %d", c.Load(), timeout, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestDNSDiscoverySilentResolverKeepsPool(t *testing.T) {
	z := startZone(t)
	z.set(t, "app.test. 60 IN A 10.0.0.1", "app.test. 60 IN AAAA fd00::1")
	b := dnsBackend(t, "roundrobin")
	d := newDiscovery(t, b, conf.DNS{Name: "app.test.", Port: 53, Resolvers: []string{z.addr},
		Interval: 50 * time.Millisecond, Timeout: 100 * time.Millisecond})
	waitPool(t, b, 5*time.Second, "10.0.0.1:53", "[fd00::1]:53")
	before := b.Servers()
	z.silent.Store(true)
	fails := d.Counters.Failures.Load()
	waitCounter(t, &d.Counters.Failures, fails+2, 5*time.Second)
	if after := b.Servers(); len(after) != 2 || after[0] != before[0] || after[1] != before[1] {
		t.Errorf("pool changed while the resolver was silent: %v", serverNames(b))
	}
	// It answers again: changes are picked up.
	z.set(t, "app.test. 60 IN A 10.0.0.9")
	z.silent.Store(false)
	waitPool(t, b, 5*time.Second, "10.0.0.9:53")
}

func TestDNSDiscoverySRVPriorityAndWeight(t *testing.T) {
	z := startZone(t)
	z.set(t,
		"_app._udp.srv.test. 30 IN SRV 10 3 1001 a.srv.test.",
		"_app._udp.srv.test. 30 IN SRV 10 1 1002 b.srv.test.",
		"_app._udp.srv.test. 30 IN SRV 20 5 1003 c.srv.test.",
		"a.srv.test. 30 IN A 127.0.0.11", // given as glue
		"b.srv.test. 30 IN A 127.0.0.12", // asked for
		"c.srv.test. 30 IN A 127.0.0.13",
	)
	b := dnsBackend(t, "roundrobin")
	newDiscovery(t, b, conf.DNS{Name: "_app._udp.srv.test.", Resolvers: []string{"127.0.0.1:1", z.addr}, // the first resolver is dead
		Interval: time.Minute, Timeout: 200 * time.Millisecond})
	waitPool(t, b, 5*time.Second, "127.0.0.11:1001", "127.0.0.12:1002", "127.0.0.13:1003")
	a, bb, c := b.Server("127.0.0.11:1001"), b.Server("127.0.0.12:1002"), b.Server("127.0.0.13:1003")
	if a.Backup || bb.Backup || !c.Backup {
		t.Errorf("backup flags a=%v b=%v c=%v, want only c (priority 20) as backup", a.Backup, bb.Backup, c.Backup)
	}
	if a.Weight() != 3 || bb.Weight() != 1 {
		t.Errorf("weights a=%d b=%d, want 3 and 1", a.Weight(), bb.Weight())
	}
	picks := map[string]int{}
	for range 400 {
		picks[b.Pick(&Client{}, nil).Name]++
	}
	if picks[a.Name] != 300 || picks[bb.Name] != 100 || picks[c.Name] != 0 {
		t.Errorf("picks %v, want 3:1 over the primaries and none for the backup", picks)
	}
	a.SetUp(false)
	bb.SetUp(false)
	if s := b.Pick(&Client{}, nil); s != c {
		t.Errorf("with the primaries down pick = %v, want the backup", s)
	}
}

func TestDNSDiscoveryMaxServers(t *testing.T) {
	z := startZone(t)
	z.set(t, "m.test. 60 IN A 10.0.0.3", "m.test. 60 IN A 10.0.0.1", "m.test. 60 IN A 10.0.0.2")
	b := dnsBackend(t, "roundrobin")
	d := newDiscovery(t, b, conf.DNS{Name: "m.test.", Port: 80, Resolvers: []string{z.addr}, Interval: time.Minute, MaxServers: 2})
	waitPool(t, b, 5*time.Second, "10.0.0.1:80", "10.0.0.2:80")
	if d.Counters.Truncated.Load() != 1 {
		t.Errorf("truncated = %d, want 1", d.Counters.Truncated.Load())
	}
}

func TestDNSDiscoveryKeepsStaticServers(t *testing.T) {
	z := startZone(t)
	z.set(t, "s.test. 60 IN A 10.0.0.1")
	b, err := New(&conf.Backend{Name: "app", Servers: []conf.Server{{Name: "fixed", Address: "10.9.9.9:80", Weight: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	newDiscovery(t, b, conf.DNS{Name: "s.test.", Port: 80, Resolvers: []string{z.addr}, Interval: time.Minute})
	waitPool(t, b, 5*time.Second, "10.0.0.1:80", "fixed")
}

func TestNextRefresh(t *testing.T) {
	for _, tc := range []struct {
		desc          string
		interval, ttl time.Duration
		want          time.Duration
	}{
		{"no ttl", 10 * time.Second, 0, 10 * time.Second},
		{"ttl longer than interval", 10 * time.Second, time.Minute, 10 * time.Second},
		{"ttl shorter: sooner", 10 * time.Second, 3 * time.Second, 3 * time.Second},
		{"ttl of 0 or 1 is floored", 10 * time.Second, time.Millisecond, minTTLRefresh},
		{"short interval wins over the floor", 100 * time.Millisecond, time.Second, 100 * time.Millisecond},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			if got := nextRefresh(tc.interval, tc.ttl); got != tc.want {
				t.Errorf("nextRefresh(%s, %s) = %s, want %s", tc.interval, tc.ttl, got, tc.want)
			}
		})
	}
}

func TestDNSDiscoveryDefaultResolvers(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "resolv")
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("nameserver 192.0.2.53\nnameserver 2001:db8::53\n")
	f.Close()
	old := ResolvConf
	ResolvConf = f.Name()
	defer func() { ResolvConf = old }()
	d, err := NewDiscovery(dnsBackend(t, "roundrobin"), &conf.DNS{Name: "x.", Port: 80, Interval: time.Second, Timeout: time.Second}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := d.Resolvers(); !slices.Equal(got, []string{"192.0.2.53:53", "[2001:db8::53]:53"}) {
		t.Errorf("resolvers = %v", got)
	}
	d.Stop() // never started: must not block
}
