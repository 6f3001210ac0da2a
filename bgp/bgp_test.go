package bgp

import (
	"io"
	"log/slog"
	"net/netip"
	"sync"
	"testing"
	"time"

	"sluice/conf"
	"sluice/internal/bgppeer"
)

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type fakeHealth struct {
	mu sync.Mutex
	h  Health
}

func (f *fakeHealth) get() Health  { f.mu.Lock(); defer f.mu.Unlock(); return f.h }
func (f *fakeHealth) set(h Health) { f.mu.Lock(); f.h = h; f.mu.Unlock() }

func config(port int, prefixes ...conf.BGPAnnounce) conf.BGP {
	return conf.BGP{
		ASN: 65010, RouterID: netip.MustParseAddr("192.0.2.11"), ListenPort: -1, HoldTime: 9 * time.Second,
		Neighbors: []conf.BGPNeighbor{{Address: netip.MustParseAddr("127.0.0.1"), ASN: 65000, Port: port}},
		Announce:  prefixes,
	}
}

// TestSpeakerAnnouncesByHealth: against a real gobgp router on loopback,
// the speaker announces while healthy (with communities and next hop
// self), withdraws on an unserved verdict or a when_vital frontend
// without a server, and a reload that adds a prefix keeps the session.
func TestSpeakerAnnouncesByHealth(t *testing.T) {
	peer, err := bgppeer.Start(65000, 65010)
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	h := &fakeHealth{h: Health{Known: true}}
	changes := make(chan struct{}, 100)
	s := New(slog.New(slog.NewTextHandler(io.Discard, nil)), h.get, func() {
		select {
		case changes <- struct{}{}:
		default:
		}
	})
	defer s.Close()
	web := conf.BGPAnnounce{Prefix: netip.MustParsePrefix("198.51.100.10/32"), Communities: []uint32{65000<<16 | 100}}
	api := conf.BGPAnnounce{Prefix: netip.MustParsePrefix("198.51.100.11/32"), WhenVital: []string{"api"}}
	if err := s.Apply(config(peer.Port, web)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "session up and prefix learnt", func() bool { return peer.Has("198.51.100.10/32") })
	r := peer.Routes()[0]
	if r.NextHop != "127.0.0.1" || len(r.Communities) != 1 || r.Communities[0] != "65000:100" {
		t.Errorf("route %+v; want next hop 127.0.0.1 (self) and community 65000:100", r)
	}
	st := s.Status()
	if len(st.Neighbors) != 1 || !st.Neighbors[0].Up || !st.Prefixes[0].Announced {
		t.Errorf("status %+v; want the session up and the prefix announced", st)
	}

	h.set(Health{Known: true, Unserved: "node in maintenance"})
	s.Refresh() // returns once gobgp has the withdrawal
	waitFor(t, 10*time.Second, "withdrawal", func() bool { return !peer.Has("198.51.100.10/32") })
	if st := s.Status(); st.Prefixes[0].Announced || st.Prefixes[0].Why != "node in maintenance" || st.Changes != 2 {
		t.Errorf("status %+v; want withdrawn for maintenance after 2 changes", st)
	}

	// A reload adding a prefix keeps the session.
	h.set(Health{Known: true, NoServer: []string{"api"}})
	since := s.Status().Neighbors[0].Since
	if err := s.Apply(config(peer.Port, web, api)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "web back", func() bool { return peer.Has("198.51.100.10/32") })
	if peer.Has("198.51.100.11/32") {
		t.Errorf("198.51.100.11/32 announced while its when_vital frontend has no server")
	}
	if st := s.Status(); !st.Neighbors[0].Since.Equal(since) || !st.Neighbors[0].Up {
		t.Errorf("the reload touched the session: %+v (since %v before)", st.Neighbors[0], since)
	}
	h.set(Health{Known: true})
	s.Refresh()
	waitFor(t, 10*time.Second, "api announced", func() bool { return peer.Has("198.51.100.11/32") })
	// Unknown health keeps what is announced.
	h.set(Health{})
	s.Refresh()
	if !s.Status().Prefixes[1].Announced {
		t.Errorf("an unknown verdict withdrew a prefix")
	}
	s.Close()
	waitFor(t, 10*time.Second, "routes gone with the session", func() bool { return len(peer.Routes()) == 0 })
}
