package peers_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"sluice/conf"
	"sluice/engine"
	"sluice/internal/testutil"
)

// rateEngine starts an engine with a tcp frontend on front whose
// rate_limit allows n new connections per client per period (shared or
// not), with [peers] bound on bind and pushing to peer.
func rateEngine(t *testing.T, name, front, bind, peer, secret string, n int, shared bool, srv *testutil.Backend) *engine.Engine {
	t.Helper()
	src := fmt.Sprintf(`[frontend.f]
bind = [%q]
default_backend = "b"
[frontend.f.rate_limit]
connection_rate = %d
period = "1h"
shared = %v
[backend.b]
[[backend.b.server]]
name = "s1"
address = %q
[peers]
bind = %q
peers = [%q]
secret_file = %q
flush_interval = "20ms"
`, front, n, shared, srv.Addr, bind, peer, secret)
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

// admitted connects to front from the local address from and reports
// whether the server answered (false: closed at once by the rate limit).
func admitted(t *testing.T, from, front string) bool {
	t.Helper()
	d := net.Dialer{Timeout: 3 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	c, err := d.Dial("tcp", front)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil && err != io.EOF && !isReset(err) {
		t.Fatalf("reading from %s: %v", front, err)
	}
	return line == "s1\n"
}

// isReset: a connection the frontend closed with data unread may end in a
// reset rather than EOF.
func isReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "read"
}

// connRate is the connection rate of client on e's frontend (its and its
// peer's counts).
func connRate(e *engine.Engine, client netip.Addr) float64 {
	for _, r := range e.Front.Frontends[0].Policy().Limit.Top(1000, time.Now()) {
		if r.Client == client {
			return r.ConnectionRate
		}
	}
	return 0
}

// TestSharedConnectionRateAcrossTwoEngines: two sluice engines peered, a
// client alternating between their frontends. With a shared
// connection_rate of n, the two admit n connections in all (+1 of slack:
// the client waits after every second connection until each node has the
// other's count, as one flush_interval does; within it each node may admit
// one the other has not heard of yet) and close the rest at once; not
// shared, each admits n.
func TestSharedConnectionRateAcrossTwoEngines(t *testing.T) {
	const n = 10
	const from = "127.0.0.9"
	client := netip.MustParseAddr(from)
	srv := testutil.Serve(t, "s1", testutil.Namer("s1"))
	for _, shared := range []bool{true, false} {
		t.Run(fmt.Sprintf("shared=%v", shared), func(t *testing.T) {
			secret := secretFile(t, "correct horse battery staple")
			frontA, frontB := testutil.FreeAddr(t), testutil.FreeAddr(t)
			peerA, peerB := testutil.FreeAddr(t), testutil.FreeAddr(t)
			a := rateEngine(t, "a", frontA, peerA, peerB, secret, n, shared, srv)
			b := rateEngine(t, "b", frontB, peerB, peerA, secret, n, shared, srv)
			var okA, okB, sent int
			for i := range 3 * n {
				sent++
				if i%2 == 0 {
					if admitted(t, from, frontA) {
						okA++
					}
				} else if admitted(t, from, frontB) {
					okB++
				}
				if shared && i%2 == 1 {
					waitFor(t, "both nodes to count every connection", func() bool {
						// Within half a count: an hour boundary in the
						// test weighs the last hour's counts a hair under 1.
						return connRate(a, client) > float64(sent)-0.5 && connRate(b, client) > float64(sent)-0.5
					})
				}
			}
			t.Logf("a admitted %d, b %d of %d", okA, okB, sent)
			if shared {
				if okA+okB < n || okA+okB > n+1 {
					t.Errorf("shared: the nodes admitted %d (a %d, b %d), want %d (+1 of slack)", okA+okB, okA, okB, n)
				}
				if a.Peers.Counters.RatesSent.Load() == 0 || b.Peers.Counters.RatesReceived.Load() == 0 {
					t.Error("no increments went through the peers")
				}
			} else if okA != n || okB != n {
				t.Errorf("not shared: a admitted %d, b %d, want %d each", okA, okB, n)
			}
		})
	}
}
