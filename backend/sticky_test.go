package backend

import (
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"sluice/conf"
)

// fakeClock is a clock a test moves by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func newClock() *fakeClock { return &fakeClock{now: time.Unix(1_700_000_000, 0)} }

// stickyBackend is a round-robin backend with source stickiness, so that
// without the table consecutive picks would change server.
func stickyBackend(t *testing.T, size int, ttl time.Duration, ss ...*Server) (*Backend, *fakeClock) {
	t.Helper()
	b := &Backend{Name: "b", algo: "roundrobin", Sticky: "source", sticky: NewStickyTable(size, ttl)}
	clock := newClock()
	b.sticky.Now = clock.Now
	if err := b.SetServers(ss); err != nil {
		t.Fatal(err)
	}
	return b, clock
}

func addr(s string) *Client { return &Client{Addr: netip.MustParseAddr(s)} }

func TestSourceStickinessHoldsAndExpires(t *testing.T) {
	ss := servers(1, 1, 1)
	b, clock := stickyBackend(t, 100, time.Minute, ss...)
	alice, bob := addr("192.0.2.1"), addr("2001:db8::2")
	first := b.Pick(alice, nil)
	for range 100 {
		if s := b.Pick(alice, nil); s != first {
			t.Fatalf("alice went to %s, stuck to %s", s.Name, first.Name)
		}
		b.Pick(bob, nil)
		clock.Add(50 * time.Second) // each use renews the minute
	}
	clock.Add(time.Minute)
	if _, ok := b.StickyTable().Get(alice.Addr); ok {
		t.Fatal("alice's entry outlived its ttl")
	}
	// Round-robin now gives alice each server in turn: the entry is gone.
	seen := map[*Server]bool{}
	for range 3 {
		seen[b.Pick(alice, nil)] = true
		clock.Add(2 * time.Minute)
	}
	if len(seen) != 3 {
		t.Fatalf("after expiry alice saw %d servers over 3 expiring picks, want 3", len(seen))
	}
}

func TestSourceStickinessFailsOverAndRecords(t *testing.T) {
	ss := servers(1, 1, 1)
	b, _ := stickyBackend(t, 100, time.Hour, ss...)
	c := addr("198.51.100.9")
	first := b.Pick(c, nil)
	first.SetUp(false)
	second := b.Pick(c, nil)
	if second == nil || second == first {
		t.Fatalf("with %s down the client got %v", first.Name, second)
	}
	first.SetUp(true)
	for range 10 {
		if s := b.Pick(c, nil); s != second {
			t.Fatalf("client went to %s, its entry says %s", s.Name, second.Name)
		}
	}
	// A retry that skips the recorded server goes elsewhere and records it.
	third := b.Pick(c, second)
	if third == second {
		t.Fatal("skip ignored")
	}
	if s := b.Pick(c, nil); s != third {
		t.Fatalf("after the retry the client went to %s, want %s", s.Name, third.Name)
	}
}

func TestSourceStickinessLeavesBackupWhenPrimaryReturns(t *testing.T) {
	prim := servers(1)
	bk := NewServer("b", "backup", "127.0.0.1:9", 1, true, 0)
	b, _ := stickyBackend(t, 100, time.Hour, prim[0], bk)
	c := addr("203.0.113.5")
	prim[0].SetUp(false)
	if s := b.Pick(c, nil); s != bk {
		t.Fatalf("got %v, want the backup", s)
	}
	prim[0].SetUp(true)
	if s := b.Pick(c, nil); s != prim[0] {
		t.Fatalf("got %v, want the primary back", s)
	}
}

func TestStickyTableEvictsLeastRecentlyUsed(t *testing.T) {
	tab := NewStickyTable(3, time.Hour)
	clock := newClock()
	tab.Now = clock.Now
	a, b, c, d := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("10.0.0.3"), netip.MustParseAddr("10.0.0.4")
	for _, x := range []netip.Addr{a, b, c} {
		tab.Set(x, "s1")
		clock.Add(time.Second)
	}
	tab.Get(a) // a is now the newest; b the oldest
	clock.Add(time.Second)
	tab.Set(d, "s2")
	if _, ok := tab.Get(b); ok {
		t.Fatal("b, the least recently used, was not evicted")
	}
	var got []string
	for _, e := range tab.Entries() {
		got = append(got, e.Client.String()+"="+e.ServerID)
	}
	if want := "[10.0.0.4=s2 10.0.0.1=s1 10.0.0.3=s1]"; fmt.Sprint(got) != want {
		t.Fatalf("entries %v, want %s", got, want)
	}
	if n := tab.Len(); n != 3 {
		t.Fatalf("len %d, want 3", n)
	}
}

func TestStickyTableSetEntryKeepsAge(t *testing.T) {
	tab := NewStickyTable(10, time.Minute)
	clock := newClock()
	tab.Now = clock.Now
	a, b := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	tab.SetEntry(StickyEntry{Client: a, ServerID: "x", LastUsed: clock.Now().Add(-30 * time.Second)})
	tab.SetEntry(StickyEntry{Client: b, ServerID: "y", LastUsed: clock.Now().Add(-2 * time.Minute)})
	if _, ok := tab.Get(b); ok {
		t.Fatal("an expired peer entry was taken")
	}
	clock.Add(31 * time.Second)
	if _, ok := tab.Get(a); ok {
		t.Fatal("a peer entry did not keep its age")
	}
}

func TestStickyTableBoundUnderConcurrency(t *testing.T) {
	const size = 100_000
	tab := NewStickyTable(size, time.Hour)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 40_000 {
				a := netip.AddrFrom4([4]byte{10, byte(g), byte(i >> 8), byte(i)})
				tab.Set(a, "s")
				tab.Get(a)
			}
		}()
	}
	wg.Wait()
	if n := tab.Len(); n > size || n < size*99/100 {
		t.Fatalf("%d entries after 320000 distinct clients, want ≤ %d and nearly full", n, size)
	}
	if n := len(tab.Entries()); n != tab.Len() {
		t.Fatalf("Entries lists %d, Len says %d", n, tab.Len())
	}
}

func TestStickyEntriesNameTheServer(t *testing.T) {
	ss := servers(1, 1)
	b, _ := stickyBackend(t, 10, time.Hour, ss...)
	s := b.Pick(addr("192.0.2.1"), nil)
	es := b.StickyEntries()
	if len(es) != 1 || es[0].Server != s.Name || es[0].ServerID != s.ID || es[0].Client != netip.MustParseAddr("192.0.2.1") {
		t.Fatalf("entries %+v, want one for %s", es, s.Name)
	}
	if got := b.ServerByID(s.ID); got != s {
		t.Fatalf("ServerByID(%s) = %v", s.ID, got)
	}
	if got := b.ServerByID("nope"); got != nil {
		t.Fatalf("ServerByID of an unknown id = %s", got.Name)
	}
}

// Sticky modes are checked against the backend's mode when the config
// loads, and New builds the table from sticky = "source".
func TestStickyModeFitsBackendMode(t *testing.T) {
	for _, tc := range []struct {
		desc, mode, sticky, extra string
		wantErr                   bool
	}{
		{"source in tcp", "tcp", "source", "", false},
		{"source in http", "http", "source", "", false},
		{"cookie in http", "http", "cookie", "", false},
		{"cookie in tcp is an error", "tcp", "cookie", "", true},
		{"sticky_size below 1 is an error", "tcp", "source", "sticky_size = 0\n", true},
		{"bad queue_timeout is an error", "tcp", "", "queue_timeout = \"soon\"\n", true},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			src := fmt.Sprintf("[frontend.f]\nmode = %q\nbind = [\"127.0.0.1:0\"]\ndefault_backend = \"b\"\n\n[backend.b]\nsticky = %q\nsticky_ttl = \"1m\"\n%s\n[[backend.b.server]]\naddress = \"127.0.0.1:1\"\n", tc.mode, tc.sticky, tc.extra)
			cfg, err := conf.Parse("t.toml", []byte(src))
			if tc.wantErr {
				if err == nil {
					t.Fatal("config accepted")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			b, err := New(cfg.Backend("b"))
			if err != nil {
				t.Fatal(err)
			}
			if got := b.StickyTable() != nil; got != (tc.sticky == "source") {
				t.Fatalf("sticky table present = %v for sticky %q", got, tc.sticky)
			}
			if b.QueueTimeout != conf.DefaultQueueTimeout {
				t.Fatalf("queue timeout %v, want the default %v", b.QueueTimeout, conf.DefaultQueueTimeout)
			}
			if tb := b.StickyTable(); tb != nil && tb.TTL != time.Minute {
				t.Fatalf("ttl %v, want 1m", tb.TTL)
			}
		})
	}
}

func BenchmarkStickySourcePick(b *testing.B) {
	ss := servers(1, 2, 3, 4)
	be := &Backend{Name: "b", algo: "roundrobin", sticky: NewStickyTable(conf.DefaultStickySize, time.Hour)}
	if err := be.SetServers(ss); err != nil {
		b.Fatal(err)
	}
	cs := clients(1024)
	for i := range cs {
		be.Pick(&cs[i], nil)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			be.Pick(&cs[i&1023], nil)
			i++
		}
	})
}

func TestStickyNotifyAndUsedSince(t *testing.T) {
	now := time.Unix(1000, 0)
	tb := NewStickyTable(16, time.Minute)
	tb.Now = func() time.Time { return now }
	var got []StickyEntry
	tb.SetNotify(func(e StickyEntry) { got = append(got, e) })
	a := netip.MustParseAddr("10.0.0.1")
	b := netip.MustParseAddr("10.0.0.2")
	tb.Set(a, "s1")
	if len(got) != 1 || got[0].Client != a || got[0].ServerID != "s1" || !got[0].LastUsed.Equal(now) {
		t.Fatalf("notified %+v", got)
	}
	// A peer's entry is applied without notifying (no echo back to it).
	tb.SetEntry(StickyEntry{Client: b, ServerID: "s2", LastUsed: now.Add(-10 * time.Second)})
	if len(got) != 1 {
		t.Fatalf("SetEntry notified: %+v", got)
	}
	if id, ok := tb.Get(b); !ok || id != "s2" {
		t.Fatalf("peer entry: %q %v", id, ok)
	}
	since := now
	now = now.Add(time.Second)
	tb.Get(a) // refreshes a only
	if es := tb.UsedSince(since); len(es) != 1 || es[0].Client != a || !es[0].LastUsed.Equal(now) {
		t.Fatalf("UsedSince after one refresh = %+v", es)
	}
	if es := tb.UsedSince(time.Time{}); len(es) != 2 {
		t.Fatalf("UsedSince(zero) = %+v", es)
	}
	tb.SetNotify(nil)
	tb.Set(a, "s3")
	if len(got) != 1 {
		t.Fatal("notified after SetNotify(nil)")
	}
}

// TestStickyUsedHereSince: entries whose last use is a peer's are left out;
// a local lookup or Set of one makes it this node's again.
func TestStickyUsedHereSince(t *testing.T) {
	now := time.Unix(1000, 0)
	tb := NewStickyTable(16, time.Minute)
	tb.Now = func() time.Time { return now }
	a := netip.MustParseAddr("10.0.0.1")
	b := netip.MustParseAddr("10.0.0.2")
	c := netip.MustParseAddr("10.0.0.3")
	since := now.Add(-time.Second)
	tb.Set(a, "s1")
	tb.SetEntry(StickyEntry{Client: b, ServerID: "s2", LastUsed: now})
	tb.SetEntry(StickyEntry{Client: c, ServerID: "s1", LastUsed: now})
	if es := tb.UsedHereSince(since); len(es) != 1 || es[0].Client != a {
		t.Fatalf("UsedHereSince = %+v, want only a", es)
	}
	if es := tb.UsedSince(since); len(es) != 3 {
		t.Fatalf("UsedSince = %+v, want all three", es)
	}
	// A newer peer use of a makes it the peer's; a local use of b, c ours.
	now = now.Add(time.Second)
	tb.SetEntry(StickyEntry{Client: a, ServerID: "s1", LastUsed: now})
	tb.Get(b)
	tb.Set(c, "s2")
	es := tb.UsedHereSince(since)
	if len(es) != 2 || es[0].Client == a || es[1].Client == a {
		t.Fatalf("UsedHereSince = %+v, want b and c", es)
	}
}

// TestStickyPickNotifyNoAlloc: a pick that records a new choice with a
// notifier installed (a non-blocking channel send, as peers does) allocates
// nothing beyond the table's own growth.
func TestStickyPickNotifyNoAlloc(t *testing.T) {
	be := &Backend{Name: "b", algo: "roundrobin", sticky: NewStickyTable(4096, time.Hour)}
	if err := be.SetServers(servers(1, 2)); err != nil {
		t.Fatal(err)
	}
	ch := make(chan StickyEntry, 1)
	be.sticky.SetNotify(func(e StickyEntry) {
		select {
		case ch <- e:
		default:
		}
	})
	cs := clients(1024)
	for i := range cs {
		be.Pick(&cs[i], nil) // fill the table once
	}
	i := 0
	allocs := testing.AllocsPerRun(1000, func() {
		be.sticky.Delete(cs[i&1023].Addr) // force a new choice, so Set runs
		be.Pick(&cs[i&1023], nil)
		i++
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per pick with a notifier", allocs)
	}
}

// TestStickySetEntryNewerWins: a peer's entry older than the local one for
// the same client (a full resend after a reconnect) does not replace it; a
// newer one does.
func TestStickySetEntryNewerWins(t *testing.T) {
	now := time.Unix(1000, 0)
	tb := NewStickyTable(16, time.Minute)
	tb.Now = func() time.Time { return now }
	a := netip.MustParseAddr("10.0.0.1")
	tb.Set(a, "local")
	tb.SetEntry(StickyEntry{Client: a, ServerID: "stale", LastUsed: now.Add(-time.Second)})
	if id, _ := tb.Get(a); id != "local" {
		t.Fatalf("an older peer entry replaced the local one: %q", id)
	}
	now = now.Add(time.Second)
	tb.SetEntry(StickyEntry{Client: a, ServerID: "newer", LastUsed: now})
	if id, _ := tb.Get(a); id != "newer" {
		t.Fatalf("a newer peer entry was ignored: %q", id)
	}
}
