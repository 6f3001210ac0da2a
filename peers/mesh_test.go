package peers_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"sluice/conf"
	"sluice/engine"
	"sluice/internal/testutil"
	"sluice/peers"
)

// meshNode starts an engine whose [peers] binds bind and lists every
// address of others: one node of a full mesh. Its backend b is sticky
// (ttl) over servers, and its tcp frontend f has a shared
// connection_rate of rate per hour (none when 0).
func meshNode(t *testing.T, name, front, bind string, others []string, secret, ttl string, rate int, servers []*testutil.Backend) *engine.Engine {
	t.Helper()
	src := fmt.Sprintf(`[frontend.f]
bind = [%q]
default_backend = "b"
`, front)
	if rate > 0 {
		src += fmt.Sprintf("[frontend.f.rate_limit]\nconnection_rate = %d\nperiod = \"1h\"\nshared = true\n", rate)
	}
	src += fmt.Sprintf(`[backend.b]
sticky = "source"
sticky_ttl = %q
[peers]
bind = %q
peers = ["%s"]
secret_file = %q
flush_interval = "20ms"
`, ttl, bind, strings.Join(others, `", "`), secret)
	for _, s := range servers {
		src += fmt.Sprintf("[[backend.b.server]]\nname = %q\naddress = %q\n", s.Name, s.Addr)
	}
	cfg, err := conf.Parse(name+".toml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(&logBuf{}, &slog.HandlerOptions{Level: slog.LevelInfo})).With("node", name)
	eng, err := engine.Start(cfg, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		eng.Shutdown(ctx)
	})
	return eng
}

// mesh starts n nodes, each listing all the others, and waits until every
// node has connected to every other one.
func mesh(t *testing.T, n int, ttl string, rate int, servers []*testutil.Backend) (fronts []string, engs []*engine.Engine) {
	t.Helper()
	secret := secretFile(t, "correct horse battery staple")
	binds := make([]string, n)
	for i := range n {
		fronts = append(fronts, testutil.FreeAddr(t))
		binds[i] = testutil.FreeAddr(t)
	}
	for i := range n {
		var others []string
		for j := range n {
			if j != i {
				others = append(others, binds[j])
			}
		}
		engs = append(engs, meshNode(t, fmt.Sprintf("n%d", i+1), fronts[i], binds[i], others, secret, ttl, rate, servers))
	}
	waitFor(t, "every node connected to every other", func() bool {
		for _, e := range engs {
			if e.Peers.Counters.Connects.Load() < uint64(n-1) {
				return false
			}
		}
		return true
	})
	return fronts, engs
}

// TestStickyMeshOfThree: three nodes, each listing the two others. An
// entry made on any node reaches both others, straight from it (each
// receiver counts it once; nobody else sends it), and a node passes on
// nothing it received, not even on its periodic refresh of the entries
// in use: only the node that used an entry pushes it again, so N nodes
// carry each entry N-1 times, never around in a circle.
func TestStickyMeshOfThree(t *testing.T) {
	ss := servers(t)
	// A TTL of 4 s makes the refresh run every second.
	fronts, engs := mesh(t, 3, "4s", 0, ss)
	for i, e := range engs {
		if s := e.Peers.Counters.Sent.Load(); s != 0 {
			t.Fatalf("n%d sent %d entries before any client came", i+1, s)
		}
	}
	for origin := range engs {
		from := fmt.Sprintf("127.0.0.%d", 20+origin)
		client := netip.MustParseAddr(from)
		// Each node's last sweep is over before the entry is made, so its
		// next sweep sees a received entry used after it.
		before := make([]uint64, len(engs))
		for i, e := range engs {
			before[i] = peers.Sweeps(e.Peers)
		}
		sent := make([]uint64, len(engs))
		recv := make([]uint64, len(engs))
		for i, e := range engs {
			sent[i], recv[i] = e.Peers.Counters.Sent.Load(), e.Peers.Counters.Received.Load()
		}
		server := hello(t, from, fronts[origin])
		for i, e := range engs {
			if i == origin {
				continue
			}
			// Not Get: a lookup is a use, which this node would push.
			var id string
			waitFor(t, fmt.Sprintf("n%d's entry to reach n%d", origin+1, i+1), func() bool { id = entryFor(e, client); return id != "" })
			if id != engs[origin].Backends["b"].Server(server).ID {
				t.Errorf("n%d has server %s for n%d's client, want %s's id", i+1, id, origin+1, server)
			}
		}
		// Two refresh sweeps on every node after the entry.
		waitFor(t, "two refresh sweeps on every node", func() bool {
			for i, e := range engs {
				if peers.Sweeps(e.Peers) < before[i]+2 {
					return false
				}
			}
			return true
		})
		for i, e := range engs {
			ds, dr := e.Peers.Counters.Sent.Load()-sent[i], e.Peers.Counters.Received.Load()-recv[i]
			if i == origin {
				// Once on its own, once more on a refresh at most (the
				// sweep after the pick), to each of the two others.
				if ds < 2 || ds > 4 {
					t.Errorf("n%d (where the client came) sent %d entries, want 2 to 4", i+1, ds)
				}
				if dr != 0 {
					t.Errorf("n%d received %d entries back: its entry went round", i+1, dr)
				}
				continue
			}
			if ds != 0 {
				t.Errorf("n%d passed on %d entries it received from n%d (it should send only what it used)", i+1, ds, origin+1)
			}
			if dr < 1 || dr > 2 {
				t.Errorf("n%d received %d entries, want 1 or 2 (the pick, maybe a refresh), all from n%d", i+1, dr, origin+1)
			}
		}
	}
}

// entryFor is the server id e's table holds for client, without touching
// the entry.
func entryFor(e *engine.Engine, client netip.Addr) string {
	for _, en := range e.Backends["b"].StickyTable().Entries() {
		if en.Client == client {
			return en.ServerID
		}
	}
	return ""
}

// TestSharedRateMeshOfThree: a shared connection_rate of n across three
// nodes in a mesh, a client going round them: the three admit n in all
// (+1 of slack per other node, as two nodes allow one), since each adds
// what both others counted, received from each directly.
func TestSharedRateMeshOfThree(t *testing.T) {
	const n = 9
	const from = "127.0.0.30"
	client := netip.MustParseAddr(from)
	srv := testutil.Serve(t, "s1", testutil.Namer("s1"))
	fronts, engs := mesh(t, 3, "10m", n, []*testutil.Backend{srv})
	ok := make([]int, 3)
	for i := range 3 * n {
		if admitted(t, from, fronts[i%3]) {
			ok[i%3]++
		}
		sent := float64(i + 1)
		waitFor(t, "every node to count every connection", func() bool {
			for _, e := range engs {
				if connRate(e, client) < sent-0.5 {
					return false
				}
			}
			return true
		})
	}
	total := ok[0] + ok[1] + ok[2]
	t.Logf("admitted %v of %d", ok, 3*n)
	if total < n || total > n+2 {
		t.Errorf("the mesh admitted %d (%v), want %d (+2 of slack)", total, ok, n)
	}
	for i, e := range engs {
		// Its own count plus what each of the other two sent: a relay
		// would show as more received than the others took.
		if got := connRate(e, client); got > float64(3*n)+0.5 {
			t.Errorf("n%d counts %.1f connections of the client, want %d: increments counted twice", i+1, got, 3*n)
		}
	}
}
