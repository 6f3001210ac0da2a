package backend

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"

	"sluice/conf"
)

// pcg returns a deterministic random source for p2c.
func pcg(seed uint64) func() uint64 { return rand.New(rand.NewPCG(seed, seed^0x5eed)).Uint64 }

func sum(ws []int) int {
	t := 0
	for _, w := range ws {
		t += w
	}
	return t
}

// clients returns n distinct client addresses, deterministic, v4 and v6.
func clients(n int) []Client {
	r := rand.New(rand.NewPCG(7, 11))
	seen := map[netip.Addr]bool{}
	out := make([]Client, 0, n)
	for len(out) < n {
		var a netip.Addr
		if len(out)%4 == 3 {
			var b [16]byte
			for i := range b {
				b[i] = byte(r.Uint32())
			}
			b[0] = 0x20
			a = netip.AddrFrom16(b)
		} else {
			a = netip.AddrFrom4([4]byte{byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32())})
		}
		if !seen[a] {
			seen[a] = true
			out = append(out, Client{Addr: a})
		}
	}
	return out
}

func TestLeastConnBalancesLongLivedConnections(t *testing.T) {
	for _, tc := range []struct {
		desc    string
		weights []int
		conns   int
	}{
		{"equal weights", []int{1, 1, 1, 1}, 1001},
		{"weights 1:2:3:4", []int{1, 2, 3, 4}, 1000},
		{"weights 5:1 with few connections", []int{5, 1}, 7},
		{"256 servers", make256(), 10000},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			ss := servers(tc.weights...)
			lc := newLeastConn(ss)
			for range tc.conns {
				lc.Pick(nil, nil).Acquire() // never released
			}
			total := sum(tc.weights)
			for i, s := range ss {
				// Each server holds its weight's share, to within one connection.
				want := float64(tc.conns) * float64(tc.weights[i]) / float64(total)
				if d := float64(s.Active()) - want; d > 1 || d < -1 {
					t.Errorf("server %d (weight %d): %d active, want %.1f±1", i, tc.weights[i], s.Active(), want)
				}
			}
		})
	}
}

func make256() []int {
	w := make([]int, 256)
	for i := range w {
		w[i] = 1 + i%4
	}
	return w
}

func TestLeastConnTiesRotate(t *testing.T) {
	ss := servers(1, 1, 1)
	lc := newLeastConn(ss)
	got := map[*Server]int{}
	for range 300 {
		s := lc.Pick(nil, nil)
		s.Acquire()
		got[s]++
		s.Release() // short connections: every pick is a tie
	}
	for _, s := range ss {
		if got[s] != 100 {
			t.Errorf("server %s got %d of 300 picks among equals, want 100", s.Name, got[s])
		}
	}
}

func TestLeastConnAvoidsLoadedAndUnavailable(t *testing.T) {
	ss := servers(1, 1, 1)
	ss[0].Acquire()
	ss[0].Acquire()
	ss[1].SetUp(false)
	lc := newLeastConn(ss)
	if s := lc.Pick(nil, nil); s != ss[2] {
		t.Fatalf("picked %s, want c (a is loaded, b is down)", s.Name)
	}
	if s := lc.Pick(nil, ss[2]); s != ss[0] {
		t.Fatalf("picked %v skipping c, want a", s)
	}
	ss[0].SetAdmin(AdminDrain)
	if s := lc.Pick(nil, ss[2]); s != nil {
		t.Fatalf("picked %s, want none", s.Name)
	}
}

func TestRandomFollowsWeights(t *testing.T) {
	const picks = 100_000
	const tolerance = 0.02 // absolute difference of shares
	for _, tc := range []struct {
		desc    string
		weights []int
	}{
		{"equal", []int{1, 1, 1, 1, 1}},
		{"1:2:3:4", []int{1, 2, 3, 4}},
		{"skewed with a zero", []int{10, 0, 1, 5}},
		{"two", []int{3, 1}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			ss := servers(tc.weights...)
			r := newP2C(ss)
			r.rnd = pcg(1)
			got := map[*Server]int{}
			for range picks {
				got[r.Pick(nil, nil)]++ // idle servers: the weighted draw decides
			}
			total := sum(tc.weights)
			for i, s := range ss {
				share, want := float64(got[s])/picks, float64(tc.weights[i])/float64(total)
				if share < want-tolerance || share > want+tolerance {
					t.Errorf("server %d (weight %d): share %.4f, want %.4f±%.2f", i, tc.weights[i], share, want, tolerance)
				}
			}
		})
	}
}

func TestRandomBalancesLongLivedConnections(t *testing.T) {
	for _, tc := range []struct {
		desc    string
		weights []int
		conns   int
		spread  float64 // largest allowed gap between active/weight of two servers
	}{
		{"16 equal servers", make([]int, 16), 16_000, 4},
		{"weights 1:2:3:4", []int{1, 2, 3, 4}, 10_000, 4},
		{"256 servers", make256(), 50_000, 6},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			for i := range tc.weights {
				if tc.weights[i] == 0 {
					tc.weights[i] = 1
				}
			}
			ss := servers(tc.weights...)
			r := newP2C(ss)
			r.rnd = pcg(2)
			for range tc.conns {
				r.Pick(nil, nil).Acquire()
			}
			lo, hi := 1e18, 0.0
			for _, s := range ss {
				l := float64(s.Active()) / float64(s.Weight())
				lo, hi = min(lo, l), max(hi, l)
			}
			t.Logf("active per unit of weight: %.2f..%.2f", lo, hi)
			if hi-lo > tc.spread {
				t.Errorf("active per unit of weight ranges %.2f..%.2f, want a gap ≤ %.0f", lo, hi, tc.spread)
			}
		})
	}
}

func TestRandomFindsTheFewAvailable(t *testing.T) {
	ss := servers(make256()...)
	for _, s := range ss[1:] {
		s.SetUp(false)
	}
	r := newP2C(ss)
	r.rnd = pcg(3)
	for range 100 {
		if s := r.Pick(nil, nil); s != ss[0] {
			t.Fatalf("picked %v, want the only server up", s)
		}
	}
	if s := r.Pick(nil, ss[0]); s != nil {
		t.Fatalf("picked %s, want none", s.Name)
	}
}

func TestIPHashSpreadsByWeight(t *testing.T) {
	cs := clients(100_000)
	for _, tc := range []struct {
		desc    string
		weights []int
	}{
		{"5 equal", []int{1, 1, 1, 1, 1}},
		{"1:2:3:4:5", []int{1, 2, 3, 4, 5}},
		{"heavy and light", []int{100, 1, 10}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			ss := servers(tc.weights...)
			h := newIPHash(ss)
			got := map[*Server]int{}
			for i := range cs {
				got[h.Pick(&cs[i], nil)]++
			}
			total := sum(tc.weights)
			for i, s := range ss {
				share, want := float64(got[s])/float64(len(cs)), float64(tc.weights[i])/float64(total)
				if share < want-0.02 || share > want+0.02 {
					t.Errorf("server %d (weight %d): share %.4f, want %.4f±0.02", i, tc.weights[i], share, want)
				}
			}
		})
	}
}

func TestIPHashMovesOnlyTheLeaversClients(t *testing.T) {
	cs := clients(10_000)
	for _, tc := range []struct {
		desc    string
		weights []int
		leaver  int
	}{
		{"5 equal servers", []int{1, 1, 1, 1, 1}, 2},
		{"5 weighted servers, the heaviest leaves", []int{1, 2, 3, 4, 5}, 4},
		{"5 weighted servers, the lightest leaves", []int{1, 2, 3, 4, 5}, 0},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			ss := servers(tc.weights...)
			h := newIPHash(ss)
			pickAll := func() []*Server {
				out := make([]*Server, len(cs))
				for i := range cs {
					out[i] = h.Pick(&cs[i], nil)
				}
				return out
			}
			before := pickAll()
			leaver := ss[tc.leaver]
			leaver.SetUp(false)
			during := pickAll()
			moved := 0
			for i := range cs {
				if during[i] == before[i] {
					continue
				}
				moved++
				if before[i] != leaver {
					t.Fatalf("client %s moved from %s, which stayed up", cs[i].Addr, before[i].Name)
				}
			}
			share := float64(tc.weights[tc.leaver]) / float64(sum(tc.weights))
			t.Logf("%d of %d clients moved (weight share %.3f)", moved, len(cs), share)
			if limit := int((share + 0.02) * float64(len(cs))); moved > limit {
				t.Errorf("%d of %d clients moved, want at most %d (its weight share + 2%%)", moved, len(cs), limit)
			}
			if moved == 0 {
				t.Errorf("no client moved although %s went down", leaver.Name)
			}
			leaver.SetUp(true)
			after := pickAll()
			for i := range cs {
				if after[i] != before[i] {
					t.Fatalf("client %s is on %s after %s came back, was on %s", cs[i].Addr, after[i].Name, leaver.Name, before[i].Name)
				}
			}
		})
	}
}

func TestIPHashSkipGoesToRunnerUp(t *testing.T) {
	ss := servers(1, 1, 1)
	h := newIPHash(ss)
	c := &Client{Addr: netip.MustParseAddr("192.0.2.7")}
	first := h.Pick(c, nil)
	second := h.Pick(c, first)
	if second == nil || second == first {
		t.Fatalf("skip %s gave %v", first.Name, second)
	}
	first.SetUp(false)
	if s := h.Pick(c, nil); s != second {
		t.Fatalf("with %s down the client went to %s, want its runner-up %s", first.Name, s.Name, second.Name)
	}
}

// Every algorithm, through a Backend: backups take over only when every
// primary is down, and give the traffic back when one returns.
func TestBackupsOnlyWhenAllPrimariesDown(t *testing.T) {
	for _, algo := range conf.BalanceNames {
		t.Run(algo.String(), func(t *testing.T) {
			prim := servers(1, 2, 1)
			bk1 := NewServer("b", "backup1", "127.0.0.1:9", 1, true, 0)
			bk2 := NewServer("b", "backup2", "127.0.0.1:10", 1, true, 0)
			b := &Backend{Name: "b", algo: algo}
			if err := b.SetServers(append(prim, bk1, bk2)); err != nil {
				t.Fatal(err)
			}
			cs := clients(200)
			pickAll := func() map[*Server]int {
				got := map[*Server]int{}
				for i := range cs {
					s := b.Pick(&cs[i], nil)
					got[s]++
				}
				return got
			}
			for i, s := range prim {
				got := pickAll()
				if got[bk1]+got[bk2] > 0 {
					t.Fatalf("backups picked with %d of %d primaries down", i, len(prim))
				}
				if got[nil] > 0 {
					t.Fatalf("no server picked with %d of %d primaries down", i, len(prim))
				}
				s.SetUp(false)
			}
			got := pickAll()
			if got[bk1]+got[bk2] != len(cs) {
				t.Fatalf("with every primary down, backups got %d of %d picks", got[bk1]+got[bk2], len(cs))
			}
			bk1.SetAdmin(AdminMaint)
			bk2.SetUp(false)
			if s := b.Pick(&cs[0], nil); s != nil {
				t.Fatalf("picked %s with nothing up", s.Name)
			}
			prim[1].SetUp(true)
			if got := pickAll(); got[prim[1]] != len(cs) {
				t.Fatalf("a returning primary got %d of %d picks", got[prim[1]], len(cs))
			}
		})
	}
}

// Weight 0 takes no new traffic under every algorithm, also after a runtime
// change.
func TestWeightZeroTakesNothing(t *testing.T) {
	for _, algo := range conf.BalanceNames {
		t.Run(algo.String(), func(t *testing.T) {
			ss := servers(1, 1, 1)
			b := &Backend{Name: "b", algo: algo}
			if err := b.SetServers(ss); err != nil {
				t.Fatal(err)
			}
			if err := b.SetWeight(ss[1], 0); err != nil {
				t.Fatal(err)
			}
			cs := clients(300)
			for i := range cs {
				if s := b.Pick(&cs[i], nil); s == ss[1] || s == nil {
					t.Fatalf("picked %v, want a or c", s)
				}
			}
		})
	}
}

// BenchmarkPick measures each algorithm's pick over pools of 2, 16 and 256
// servers of weights 1..4, from all cores at once.
func BenchmarkPick(b *testing.B) {
	cs := clients(1024)
	for _, algo := range conf.BalanceNames {
		for _, n := range []int{2, 16, 256} {
			b.Run(fmt.Sprintf("%s/servers=%d", algo, n), func(b *testing.B) {
				w := make([]int, n)
				for i := range w {
					w[i] = 1 + i%4
				}
				bal, err := newBalancer(algo, servers(w...))
				if err != nil {
					b.Fatal(err)
				}
				b.ReportAllocs()
				b.RunParallel(func(pb *testing.PB) {
					i := 0
					for pb.Next() {
						if bal.Pick(&cs[i&1023], nil) == nil {
							panic("no server")
						}
						i++
					}
				})
			})
		}
	}
}
