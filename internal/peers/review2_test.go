package peers_test

import (
	"log/slog"
	"net"
	"testing"
	"time"

	"sluice/conf"
	"sluice/internal/peers"
	"sluice/internal/testutil"
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
		FlushInterval: 20 * time.Millisecond}, nil, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)

	stranger := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.5")}, Timeout: 5 * time.Second}
	for range 32 {
		c, err := stranger.Dial("tcp", bind)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
	}
	waitFor(t, "the stranger's connections to fill the slots", func() bool { return s.Waiting() == 16 })

	c := dialPeers(t, bind) // from 127.0.0.1, the peer's address
	if err := challenge(c); err != nil {
		t.Fatalf("the configured peer's connection during a stranger's flood: %v; want the challenge", err)
	}
}
