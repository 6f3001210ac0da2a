package peers_test

import (
	"log/slog"
	"net"
	"testing"
	"time"

	"sluice/conf"
	"sluice/internal/testutil"
	"sluice/peers"
)

// Review of issue 15: the 16 slots for connections waiting to authenticate
// are open to any address, so a host that is no peer keeps them full (a
// new connection as each one times out) and the real peer, dialing from
// the address peers.peers names, is closed unanswered for as long as the
// flood lasts (seen end to end: no sync for the whole 12 s of a flood).
// Addresses that are no configured peer should not take the slots the
// peer needs (or get their own, smaller, share).
func TestPeersFloodFromStrangerLeavesRoomForPeer(t *testing.T) {
	peers.SetAuthTimeout(t, time.Minute)
	bind := testutil.FreeAddr(t)
	peer := testutil.FreeAddr(t) // the configured peer: 127.0.0.1
	log := slog.New(slog.NewTextHandler(&logBuf{}, nil))
	s, err := peers.Start(conf.Peers{Bind: bind, Peers: []string{peer}, SecretFile: secretFile(t, "correct horse battery staple"),
		FlushInterval: 20 * time.Millisecond}, nil, nil, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)

	// Strangers from 8 addresses (one alone may only hold 4 slots).
	for i := range 8 {
		stranger := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(5+i))}, Timeout: 5 * time.Second}
		for range 4 {
			c, err := stranger.Dial("tcp", bind)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
		}
	}
	waitFor(t, "the stranger's connections to fill the slots", func() bool { return s.Waiting() == 16 })

	c := dialPeers(t, bind) // from 127.0.0.1, the peer's address
	if err := challenge(c); err != nil {
		t.Fatalf("the configured peer's connection during a stranger's flood: %v; want the challenge", err)
	}
}

// TestPeersCapPerSource: one address that is no peer holds at most 4 of the
// slots for connections waiting to authenticate; another address still gets
// in, and refusals are counted.
func TestPeersCapPerSource(t *testing.T) {
	peers.SetAuthTimeout(t, time.Minute)
	s, bind, _ := listener(t)
	from := func(last byte) net.Conn {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, last)}, Timeout: 5 * time.Second}
		c, err := d.Dial("tcp", bind)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		t.Cleanup(func() { c.Close() })
		return c
	}
	for i := range 4 {
		if err := challenge(from(5)); err != nil {
			t.Fatalf("connection %d from 127.0.0.5: %v", i+1, err)
		}
	}
	for i := range 3 {
		closedAtOnce(t, from(5))
		if n := s.Counters.Refused.Load(); n != uint64(i+1) {
			t.Fatalf("Refused = %d, want %d", n, i+1)
		}
	}
	if err := challenge(from(6)); err != nil {
		t.Fatalf("a connection from another address while 127.0.0.5 holds its share: %v", err)
	}
	if n := s.Waiting(); n != 5 {
		t.Errorf("Waiting = %d, want 5", n)
	}
}
