package peers_test

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"sluice/conf"
	"sluice/internal/testutil"
	"sluice/peers"
)

// listener starts a Syncer that only receives, on a free loopback address.
func listener(t *testing.T) (*peers.Syncer, string, *logBuf) {
	t.Helper()
	bind := testutil.FreeAddr(t)
	lb := &logBuf{}
	log := slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelInfo}))
	s, err := peers.Start(conf.Peers{Bind: bind, SecretFile: secretFile(t, "correct horse battery staple"), FlushInterval: 20 * time.Millisecond}, nil, nil, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s, bind, lb
}

// dialPeers connects to addr and returns the connection.
func dialPeers(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	t.Cleanup(func() { c.Close() })
	return c
}

// challenge reads the server's challenge ("SLCP" 0x01 and 32 bytes), which
// shows the connection was taken into the handshake.
func challenge(c net.Conn) error {
	b := make([]byte, 5+32)
	_, err := io.ReadFull(c, b)
	return err
}

// closedAtOnce reports whether c ends without a byte from the other side.
func closedAtOnce(t *testing.T, c net.Conn) {
	t.Helper()
	b, err := io.ReadAll(c)
	if err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("connection: %v, want it closed", err)
	}
	if len(b) > 0 {
		t.Fatalf("got %d bytes (%q), want the connection closed unanswered", len(b), b)
	}
}

// TestPeersCapUnauthenticated: addresses that are no peer may keep at most
// 16 connections waiting to authenticate in all; further ones are closed at
// once and counted, and slots come back as the waiting ones end.
func TestPeersCapUnauthenticated(t *testing.T) {
	peers.SetAuthTimeout(t, time.Minute) // only the cap ends connections here
	s, bind, lb := listener(t)
	var waiting []net.Conn
	for i := range 16 {
		// From 4 addresses: one address alone may hold only 4 slots.
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(10+i/4))}, Timeout: 5 * time.Second}
		c, err := d.Dial("tcp", bind)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		t.Cleanup(func() { c.Close() })
		if err := challenge(c); err != nil {
			t.Fatalf("connection %d: %v", len(waiting)+1, err)
		}
		waiting = append(waiting, c)
	}
	for i := range 3 {
		closedAtOnce(t, dialPeers(t, bind))
		if n := s.Counters.Refused.Load(); n != uint64(i+1) {
			t.Fatalf("Refused = %d, want %d", n, i+1)
		}
	}
	if n := strings.Count(lb.String(), "too many peer connections waiting to authenticate"); n != 1 {
		t.Errorf("logged the cap %d times for 3 refusals in a burst, want once", n)
	}
	for _, c := range waiting {
		c.Close()
	}
	waitFor(t, "the closed connections to leave the handshake", func() bool { return s.Waiting() == 0 })
	if err := challenge(dialPeers(t, bind)); err != nil {
		t.Fatalf("a connection after the slots freed up: %v", err)
	}
}

// TestPeersAuthDeadline: a connection that never answers the challenge is
// closed after the auth timeout and frees its slot.
func TestPeersAuthDeadline(t *testing.T) {
	peers.SetAuthTimeout(t, 200*time.Millisecond)
	s, bind, _ := listener(t)
	c := dialPeers(t, bind)
	if err := challenge(c); err != nil {
		t.Fatal(err)
	}
	closedAtOnce(t, c) // the 10 s guard of dialPeers is far beyond 200 ms
	waitFor(t, "the slot to free", func() bool { return s.Waiting() == 0 })
}

var suppressedLine = regexp.MustCompile(`peer failed authentication; connection dropped.* suppressed=[1-9]`)

// TestPeersAuthFailureLogIsRateLimited: a burst of wrong answers is all
// counted but logged at most once a second, the next line saying how many
// were held back.
func TestPeersAuthFailureLogIsRateLimited(t *testing.T) {
	s, bind, lb := listener(t)
	attempts := 0
	deadline := time.Now().Add(10 * time.Second)
	// Bounded in count and time; a second must pass for the next line.
	for attempts < 100000 && time.Now().Before(deadline) && !suppressedLine.MatchString(lb.String()) {
		c, err := net.DialTimeout("tcp", bind, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if err := challenge(c); err != nil {
			c.Close()
			t.Fatal(err)
		}
		c.Write(append([]byte("SLCP\x01"), make([]byte, 64)...)) // a nonce and a wrong MAC
		verdict := make([]byte, 1)
		if _, err := io.ReadFull(c, verdict); err != nil || verdict[0] != 1 {
			c.Close()
			t.Fatalf("verdict %v %v, want refused", verdict, err)
		}
		c.Close()
		attempts++
	}
	waitFor(t, "every failure to be counted", func() bool { return s.Counters.AuthFailures.Load() == uint64(attempts) })
	logged := strings.Count(lb.String(), "peer failed authentication")
	if !suppressedLine.MatchString(lb.String()) {
		t.Fatalf("after %d failures no line reports suppressed ones:\n%s", attempts, lb.String())
	}
	if logged >= attempts {
		t.Fatalf("%d failures gave %d log lines, want fewer", attempts, logged)
	}
	t.Logf("%d failures, %d lines", attempts, logged)
}
