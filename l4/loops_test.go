package l4

import (
	"errors"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"sluice/internal/poller"
)

// withLoops starts the epoll loops (or counts one more user) until the
// test ends.
func withLoops(t testing.TB) {
	t.Helper()
	stop, err := StartLoops(2)
	if err != nil {
		t.Fatalf("StartLoops: %v", err)
	}
	t.Cleanup(stop)
}

// eitherPair relays a client and a server on loopback the way a frontend
// does: FastRelay, or Relay when it reports false. fast tells which.
func eitherPair(t *testing.T) (client, server net.Conn, fast bool, done chan error) {
	t.Helper()
	done = make(chan error, 1)
	fastc := make(chan bool, 1)
	client, server = loopbackPair(t, func(c, s net.Conn, err error) {
		if err != nil {
			fastc <- false
			done <- err
			return
		}
		if FastRelay(c, s, RelayOptions{}, nil, nil, func(err error) { done <- err }) {
			fastc <- true
			return
		}
		fastc <- false
		done <- Relay(c, s, RelayOptions{})
	})
	client.SetDeadline(time.Now().Add(10 * time.Second))
	server.SetDeadline(time.Now().Add(10 * time.Second))
	return client, server, <-fastc, done
}

// Loops run between StartLoops and the last user's stop: before and after,
// FastRelay reports false and the goroutine relay carries the bytes; stop
// ends the relays on the loops (closing both sides); a second start works.
func TestLoopsStartStop(t *testing.T) {
	if loopsNow.Load() != nil {
		t.Fatal("loops run before any StartLoops")
	}
	c, s, fast, _ := eitherPair(t)
	if fast {
		t.Fatal("FastRelay took a pair with no loop running")
	}
	echoOnce(t, c, s, "no loops")

	stop1, err := StartLoops(2)
	if err != nil {
		t.Fatal(err)
	}
	stop2, err := StartLoops(2) // a second user shares them
	if err != nil {
		t.Fatal(err)
	}
	c, s, fast, done := eitherPair(t)
	if !fast {
		t.Fatal("FastRelay refused a pair with the loops running")
	}
	echoOnce(t, c, s, "loops")
	stop1()
	stop1() // once per user, whatever the caller does
	echoOnce(t, s, c, "still running: one user left")
	stop2()
	if err := wait(t, done); err != nil { // ended like a Kill: not an error
		t.Fatalf("relay ended with %v at stop, want nil", err)
	}
	ended(t, c)
	ended(t, s)
	if loopsNow.Load() != nil {
		t.Fatal("loops still published after the last stop")
	}
	c, s, fast, _ = eitherPair(t)
	if fast {
		t.Fatal("FastRelay took a pair after the loops stopped")
	}
	echoOnce(t, c, s, "stopped")

	withLoops(t)
	c, s, fast, _ = eitherPair(t)
	if !fast {
		t.Fatal("FastRelay refused a pair after a restart")
	}
	echoOnce(t, c, s, "again")
}

// When the loops cannot start (out of descriptors, say), StartLoops
// returns the error and counts it, nothing is left running, and
// connections are relayed with goroutines.
func TestLoopsStartFailureFallsBack(t *testing.T) {
	newPoller = func() (*poller.Poller, error) { return nil, unix.EMFILE }
	t.Cleanup(func() { newPoller = poller.New })
	before := LoopErrors.Load()
	if stop, err := StartLoops(2); !errors.Is(err, unix.EMFILE) || stop != nil {
		t.Fatalf("StartLoops = %v, want EMFILE and no stop", err)
	}
	if n := LoopErrors.Load() - before; n != 1 {
		t.Errorf("LoopErrors grew by %d, want 1", n)
	}
	c, s, fast, done := eitherPair(t)
	if fast {
		t.Fatal("FastRelay took a pair though the loops did not start")
	}
	echoOnce(t, c, s, "hello")
	echoOnce(t, s, c, "back")
	c.Close()
	s.Close()
	wait(t, done)

	// A failure on the second loop closes the first.
	calls := 0
	newPoller = func() (*poller.Poller, error) {
		if calls++; calls == 2 {
			return nil, unix.ENFILE
		}
		return poller.New()
	}
	if _, err := StartLoops(2); !errors.Is(err, unix.ENFILE) {
		t.Fatalf("StartLoops = %v, want ENFILE", err)
	}
	if loopsNow.Load() != nil {
		t.Fatal("loops published after a failed start")
	}
}

// A pair epoll will not register (epoll_ctl fails) is relayed with
// goroutines; the loop goes on serving others.
func TestLoopsAddFailureFallsBack(t *testing.T) {
	withLoops(t)
	h := func() error { return unix.ENOSPC }
	testAddHook.Store(&h)
	before := LoopErrors.Load()
	c, s, fast, done := eitherPair(t)
	testAddHook.Store(nil)
	if fast {
		t.Fatal("FastRelay took a pair epoll refused")
	}
	if n := LoopErrors.Load() - before; n != 1 {
		t.Errorf("LoopErrors grew by %d, want 1", n)
	}
	echoOnce(t, c, s, "hello")
	echoOnce(t, s, c, "back")
	c.Close()
	s.Close()
	if err := wait(t, done); err != nil {
		t.Fatalf("goroutine relay: %v", err)
	}
	c, s, fast, _ = eitherPair(t)
	if !fast {
		t.Fatal("the next pair did not take the loops")
	}
	echoOnce(t, c, s, "next")
}
