package peers_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"sluice/conf"
	"sluice/engine"
	"sluice/internal/testutil"
)

// logBuf collects an engine's log lines for assertions.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	os.Stderr.Write(p)
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func secretFile(t *testing.T, s string) string {
	p := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(p, []byte(s+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// node starts an engine with a sticky = "source" backend over servers and
// [peers] bound on bind, pushing to peer.
func node(t *testing.T, name, front, bind, peer, secret string, servers []*testutil.Backend) (*engine.Engine, *logBuf) {
	t.Helper()
	src := fmt.Sprintf(`[frontend.f]
bind = [%q]
default_backend = "b"
[backend.b]
sticky = "source"
sticky_ttl = "10m"
[peers]
bind = %q
peers = [%q]
secret_file = %q
flush_interval = "20ms"
`, front, bind, peer, secret)
	for _, s := range servers {
		src += fmt.Sprintf("[[backend.b.server]]\nname = %q\naddress = %q\n", s.Name, s.Addr)
	}
	cfg, err := conf.Parse(name+".toml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	lb := &logBuf{}
	log := slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelInfo})).With("node", name)
	eng, err := engine.Start(cfg, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		eng.Shutdown(ctx)
	})
	return eng, lb
}

// hello connects to front from the local address from and returns the name
// of the server that answered.
func hello(t *testing.T, from, front string) string {
	t.Helper()
	d := net.Dialer{Timeout: 3 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	c, err := d.Dial("tcp", front)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	return testutil.ReadLine(t, bufio.NewReader(c))
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func servers(t *testing.T) []*testutil.Backend {
	return []*testutil.Backend{
		testutil.Serve(t, "s1", testutil.Namer("s1")),
		testutil.Serve(t, "s2", testutil.Namer("s2")),
	}
}

// TestStickySyncBetweenEngines: a client assigned a server on A is sent to
// the same server by B, which on its own would have chosen the other one.
func TestStickySyncBetweenEngines(t *testing.T) {
	ss := servers(t)
	secret := secretFile(t, "correct horse battery staple")
	frontA, frontB := testutil.FreeAddr(t), testutil.FreeAddr(t)
	peerA, peerB := testutil.FreeAddr(t), testutil.FreeAddr(t)
	a, _ := node(t, "A", frontA, peerA, peerB, secret, ss)
	b, _ := node(t, "B", frontB, peerB, peerA, secret, ss)

	// Round robin on A: 127.0.0.2 takes s1, then 127.0.0.1 takes s2.
	if got := hello(t, "127.0.0.2", frontA); got != "s1" {
		t.Fatalf("first client on A reached %s, want s1", got)
	}
	if got := hello(t, "127.0.0.1", frontA); got != "s2" {
		t.Fatalf("second client on A reached %s, want s2", got)
	}
	client := netip.MustParseAddr("127.0.0.1")
	tb := b.Backends["b"].StickyTable()
	waitFor(t, "the entry to reach B", func() bool { _, ok := tb.Get(client); return ok })
	if id, _ := tb.Get(client); id != a.Backends["b"].Server("s2").ID {
		t.Fatalf("B has server id %s for the client, want s2's", id)
	}
	// B's own round robin would start at s1: the synced entry wins.
	if got := hello(t, "127.0.0.1", frontB); got != "s2" {
		t.Fatalf("client on B reached %s, want s2 (its server on A)", got)
	}
	if n := a.Peers.Counters.Sent.Load(); n < 2 {
		t.Errorf("A sent %d entries, want at least 2", n)
	}
	if n := b.Peers.Counters.Received.Load(); n < 2 {
		t.Errorf("B received %d entries, want at least 2", n)
	}
	// And back: a new client on B shows up on A.
	hello(t, "127.0.0.3", frontB)
	c3 := netip.MustParseAddr("127.0.0.3")
	waitFor(t, "B's entry to reach A", func() bool { _, ok := a.Backends["b"].StickyTable().Get(c3); return ok })
	if n := a.Peers.Counters.AuthFailures.Load() + b.Peers.Counters.AuthFailures.Load(); n != 0 {
		t.Errorf("%d auth failures with the same secret", n)
	}
}

// TestStickySyncFullDumpOnConnect: entries made while the peer was down
// reach it when it comes up.
func TestStickySyncFullDumpOnConnect(t *testing.T) {
	ss := servers(t)
	secret := secretFile(t, "correct horse battery staple")
	frontA, frontB := testutil.FreeAddr(t), testutil.FreeAddr(t)
	peerA, peerB := testutil.FreeAddr(t), testutil.FreeAddr(t)
	_, _ = node(t, "A", frontA, peerA, peerB, secret, ss)
	hello(t, "127.0.0.2", frontA)
	hello(t, "127.0.0.1", frontA) // s2
	time.Sleep(100 * time.Millisecond)
	b, _ := node(t, "B", frontB, peerB, peerA, secret, ss)
	tb := b.Backends["b"].StickyTable()
	waitFor(t, "the dump to reach B", func() bool { return tb.Len() == 2 })
	if got := hello(t, "127.0.0.1", frontB); got != "s2" {
		t.Fatalf("client on B reached %s, want s2", got)
	}
}

// TestStickySyncWrongSecret: a peer with another secret is refused and
// logged on both ends, and nothing it sends is applied.
func TestStickySyncWrongSecret(t *testing.T) {
	ss := servers(t)
	frontA, frontB := testutil.FreeAddr(t), testutil.FreeAddr(t)
	peerA, peerB := testutil.FreeAddr(t), testutil.FreeAddr(t)
	a, logA := node(t, "A", frontA, peerA, peerB, secretFile(t, "correct horse battery staple"), ss)
	b, logB := node(t, "B", frontB, peerB, peerA, secretFile(t, "incorrect horse battery staple"), ss)
	hello(t, "127.0.0.1", frontA)
	hello(t, "127.0.0.2", frontB)
	// Each side dials the other and is refused; retries keep failing.
	waitFor(t, "repeated auth failures", func() bool {
		return a.Peers.Counters.AuthFailures.Load() >= 4 && b.Peers.Counters.AuthFailures.Load() >= 4
	})
	for _, tc := range []struct {
		desc string
		log  *logBuf
	}{{"A", logA}, {"B", logB}} {
		s := tc.log.String()
		if !strings.Contains(s, "peer failed authentication; connection dropped") {
			t.Errorf("%s did not log the refused peer:\n%s", tc.desc, s)
		}
		if !strings.Contains(s, "the peer refused our response") {
			t.Errorf("%s did not log being refused:\n%s", tc.desc, s)
		}
	}
	if n := b.Backends["b"].StickyTable().Len(); n != 1 {
		t.Errorf("B's table has %d entries, want only its own client", n)
	}
	if n := a.Backends["b"].StickyTable().Len(); n != 1 {
		t.Errorf("A's table has %d entries, want only its own client", n)
	}
	if n := a.Peers.Counters.Received.Load() + b.Peers.Counters.Received.Load() + a.Peers.Counters.Sent.Load() + b.Peers.Counters.Sent.Load(); n != 0 {
		t.Errorf("%d entries went across with different secrets", n)
	}
}
