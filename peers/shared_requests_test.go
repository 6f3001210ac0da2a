package peers_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"sluice/conf"
	"sluice/engine"
	"sluice/internal/testutil"
)

// requestEngine starts an engine with an http frontend on front whose
// rate_limit allows n requests per client per period (shared or not),
// with [peers] bound on bind and pushing to peer.
func requestEngine(t *testing.T, name, front, bind, peer, secret string, n int, shared bool, server string) *engine.Engine {
	t.Helper()
	src := fmt.Sprintf(`[frontend.f]
mode = "http"
bind = [%q]
default_backend = "b"
[frontend.f.rate_limit]
requests = %d
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
`, front, n, shared, server, bind, peer, secret)
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

// reqRate is the request rate of client on e's frontend (its and its
// peer's counts).
func reqRate(e *engine.Engine, client netip.Addr) float64 {
	for _, r := range e.Front.Frontends[0].Policy().Limit.Top(1000, time.Now()) {
		if r.Client == client {
			return r.Requests
		}
	}
	return 0
}

// TestSharedRequestRateAcrossTwoEngines: the HTTP requests limit through
// two peered engines, a client on one keep-alive connection to each,
// alternating. Shared, the two serve n requests in all (+1 of slack, as
// for connection_rate) and answer the rest 429; not shared, each serves n.
// The server sees only the requests answered 200.
func TestSharedRequestRateAcrossTwoEngines(t *testing.T) {
	const n = 10
	const from = "127.0.0.10"
	client := netip.MustParseAddr(from)
	var served atomic.Int64
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		io.WriteString(w, "ok")
	}))
	defer backend.Close()
	server := backend.Listener.Addr().String()
	for _, shared := range []bool{true, false} {
		t.Run(fmt.Sprintf("shared=%v", shared), func(t *testing.T) {
			served.Store(0)
			secret := secretFile(t, "correct horse battery staple")
			frontA, frontB := testutil.FreeAddr(t), testutil.FreeAddr(t)
			peerA, peerB := testutil.FreeAddr(t), testutil.FreeAddr(t)
			a := requestEngine(t, "a", frontA, peerA, peerB, secret, n, shared, server)
			b := requestEngine(t, "b", frontB, peerB, peerA, secret, n, shared, server)
			hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
				DialContext:         (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}).DialContext,
				MaxIdleConnsPerHost: 2,
			}}
			defer hc.CloseIdleConnections()
			codes := map[string]map[int]int{frontA: {}, frontB: {}}
			sent := 0
			for i := range 3 * n {
				front := frontA
				if i%2 == 1 {
					front = frontB
				}
				resp, err := hc.Get("http://" + front + "/")
				if err != nil {
					t.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				codes[front][resp.StatusCode]++
				sent++
				if shared && i%2 == 1 {
					waitFor(t, "both nodes to count every request", func() bool {
						return reqRate(a, client) > float64(sent)-0.5 && reqRate(b, client) > float64(sent)-0.5
					})
				}
			}
			okA, okB := codes[frontA][200], codes[frontB][200]
			t.Logf("a: %v, b: %v, server saw %d", codes[frontA], codes[frontB], served.Load())
			if got := okA + okB + codes[frontA][429] + codes[frontB][429]; got != sent {
				t.Errorf("answers other than 200 and 429: a %v, b %v", codes[frontA], codes[frontB])
			}
			if int(served.Load()) != okA+okB {
				t.Errorf("the server saw %d requests, the client got %d 200s", served.Load(), okA+okB)
			}
			if shared {
				if okA+okB < n || okA+okB > n+1 {
					t.Errorf("shared: the nodes served %d (a %d, b %d), want %d (+1 of slack)", okA+okB, okA, okB, n)
				}
				if a.Peers.Counters.RatesSent.Load() == 0 || b.Peers.Counters.RatesReceived.Load() == 0 {
					t.Error("no increments went through the peers")
				}
			} else if okA != n || okB != n {
				t.Errorf("not shared: a served %d, b %d, want %d each", okA, okB, n)
			}
		})
	}
}
