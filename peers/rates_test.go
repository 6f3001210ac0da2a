package peers_test

import (
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"sluice/conf"
	"sluice/internal/testutil"
	"sluice/peers"
	"sluice/policy"
)

// ratePeriod is long enough that a test never sees its window slide (the
// previous period is empty, so a count is exact).
const ratePeriod = 24 * time.Hour

// rateNode is one node: its syncer and the policy of its frontend "web".
type rateNode struct {
	s    *peers.Syncer
	pol  *policy.Frontend            // "web"
	pols map[string]*policy.Frontend // every frontend, by name
}

// ratePair starts two syncers pushing to each other, each with a frontend
// "web" limited to n requests per period (shared or not); extra names
// frontends with a shared limit on node a only.
func ratePair(t *testing.T, n int, shared bool, extra ...string) (a, b rateNode) {
	t.Helper()
	bindA, bindB := testutil.FreeAddr(t), testutil.FreeAddr(t)
	secret := secretFile(t, "correct horse battery staple")
	start := func(name, bind, peer string, fronts ...string) rateNode {
		limits := map[string]*policy.Limiter{}
		pols := map[string]*policy.Frontend{}
		for _, f := range append([]string{"web"}, fronts...) {
			p := policy.New(&conf.Frontend{Name: f, Mode: conf.ModeHTTP,
				RateLimit: &conf.RateLimit{Requests: n, Period: ratePeriod, Shared: shared}})
			limits[f], pols[f] = p.Limit, p
		}
		log := slog.New(slog.NewTextHandler(&logBuf{}, &slog.HandlerOptions{Level: slog.LevelInfo})).With("node", name)
		s, err := peers.Start(conf.Peers{Bind: bind, Peers: []string{peer}, SecretFile: secret, FlushInterval: 20 * time.Millisecond},
			nil, nil, limits, log)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Close)
		return rateNode{s, pols["web"], pols}
	}
	return start("a", bindA, bindB, extra...), start("b", bindB, bindA)
}

// requests is the request rate of client on n's limiter (this node's and
// its peer's counts).
func requests(n rateNode, client netip.Addr) float64 {
	for _, r := range n.pol.Limit.Top(1000, time.Now()) {
		if r.Client == client {
			return r.Requests
		}
	}
	return 0
}

// TestRateIncrementsReachPeer: requests counted on node a show in node b's
// limiter for the same frontend (and the counters say so); increments for a
// frontend b has no shared limit for are skipped and counted.
func TestRateIncrementsReachPeer(t *testing.T) {
	a, b := ratePair(t, 100, true, "only-on-a")
	client := netip.MustParseAddr("127.0.0.7")
	now := time.Now()
	for range 5 {
		if v := a.pol.CheckRequest(&policy.Request{Client: client}, now); v.Outcome != policy.Pass {
			t.Fatalf("request refused on a: %+v", v)
		}
	}
	// A count on a frontend node b does not have.
	a.pols["only-on-a"].CheckRequest(&policy.Request{Client: client}, now)
	waitFor(t, "b to skip the increment of a frontend it does not have", func() bool { return b.s.Counters.RatesIgnored.Load() == 1 })
	waitFor(t, "b to see a's 5 requests", func() bool { return requests(b, client) == 5 })
	if got := requests(a, client); got != 5 {
		t.Errorf("a counts %v, want its own 5 (nothing echoed back)", got)
	}
	if s, r := a.s.Counters.RatesSent.Load(), b.s.Counters.RatesReceived.Load(); s == 0 || r == 0 {
		t.Errorf("rates sent by a %d, received by b %d; want both > 0", s, r)
	}
	if d := a.s.Counters.RatesDropped.Load(); d != 0 {
		t.Errorf("rates dropped %d with both nodes up", d)
	}

	// Then b counts too, and a sees the sum.
	for range 3 {
		b.pol.CheckRequest(&policy.Request{Client: client}, now)
	}
	waitFor(t, "a to see b's 3 requests", func() bool { return requests(a, client) == 8 })
	if got := requests(b, client); got != 8 {
		t.Errorf("b counts %v, want 8", got)
	}
}

// TestSharedLimitHoldsAcrossTwoNodes: a client alternating between two
// nodes is held to one limit of n requests when the limit is shared, and
// gets n on each node when it is not. The client waits, every second
// request, until both nodes have each other's counts (what one flush
// interval gives in production): the nodes then may admit at most one
// request more than n between them, the one each admits before hearing of
// the other's (the slack of a shared limit is what the peers admit within
// one flush interval).
func TestSharedLimitHoldsAcrossTwoNodes(t *testing.T) {
	const n = 20
	client := netip.MustParseAddr("127.0.0.9")
	for _, shared := range []bool{true, false} {
		a, b := ratePair(t, n, shared)
		ok := map[*peers.Syncer]int{}
		sent := 0
		for i := range 3 * n {
			node := a
			if i%2 == 1 {
				node = b
			}
			sent++
			if node.pol.CheckRequest(&policy.Request{Client: client}, time.Now()).Outcome == policy.Pass {
				ok[node.s]++
			}
			if shared && i%2 == 1 {
				waitFor(t, "both nodes to count every request", func() bool {
					return requests(a, client) == float64(sent) && requests(b, client) == float64(sent)
				})
			}
		}
		total := ok[a.s] + ok[b.s]
		t.Logf("shared %v: a admitted %d, b %d of %d", shared, ok[a.s], ok[b.s], sent)
		if shared && (total < n || total > n+1) {
			t.Errorf("shared: the nodes admitted %d (a %d, b %d), want %d (+1 of slack)", total, ok[a.s], ok[b.s], n)
		}
		if !shared && (ok[a.s] != n || ok[b.s] != n) {
			t.Errorf("not shared: a admitted %d, b %d, want %d each", ok[a.s], ok[b.s], n)
		}
		if !shared && a.s.Counters.RatesSent.Load() != 0 {
			t.Errorf("not shared: %d increments sent", a.s.Counters.RatesSent.Load())
		}
	}
}
