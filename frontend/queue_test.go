package frontend_test

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"sluice/internal/testutil"
)

// queueConfig is one tcp frontend over one server of maxconn 1.
func queueConfig(addr, queueTimeout string) string {
	return fmt.Sprintf(`[frontend.f]
mode = "tcp"
bind = ["{{FRONT}}"]
default_backend = "b"

[backend.b]
queue_timeout = %q

[[backend.b.server]]
name = "s"
address = %q
maxconn = 1
`, queueTimeout, addr)
}

// held reports whether c stays open and silent for d.
func held(t *testing.T, c net.Conn, d time.Duration) bool {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(d))
	defer c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var b [1]byte
	_, err := c.Read(b[:])
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestServerMaxconnQueuesUntilSlotFrees(t *testing.T) {
	srv := testutil.Serve(t, "s", testutil.Namer("s"))
	eng, front := testutil.Start(t, queueConfig(srv.Addr, "5s"))
	be := eng.Backends["b"]

	first := testutil.Dial(t, front)
	if got := testutil.ReadLine(t, bufio.NewReader(first)); got != "s" {
		t.Fatalf("first connection reached %q", got)
	}
	second := testutil.Dial(t, front)
	if !held(t, second, 300*time.Millisecond) {
		t.Fatal("the second connection was not held while the server is at maxconn")
	}
	if n := srv.Accepted.Load(); n != 1 {
		t.Fatalf("server accepted %d connections at maxconn 1", n)
	}
	if q := be.Counters.Queue.Load(); q != 1 {
		t.Fatalf("queue length %d, want 1", q)
	}
	first.Close()
	if got := testutil.ReadLine(t, bufio.NewReader(second)); got != "s" {
		t.Fatalf("queued connection reached %q", got)
	}
	if n := be.Counters.QueueTimeouts.Load(); n != 0 {
		t.Fatalf("queue timeouts %d, want 0", n)
	}
}

func TestServerMaxconnQueueTimesOut(t *testing.T) {
	srv := testutil.Serve(t, "s", testutil.Namer("s"))
	eng, front := testutil.Start(t, queueConfig(srv.Addr, "200ms"))

	first := testutil.Dial(t, front)
	testutil.ReadLine(t, bufio.NewReader(first))
	second := testutil.Dial(t, front)
	start := time.Now()
	var b [1]byte
	if n, err := second.Read(b[:]); err == nil || n > 0 {
		t.Fatalf("the queued connection got data (%d bytes, %v), want it closed", n, err)
	}
	if el := time.Since(start); el < 150*time.Millisecond {
		t.Fatalf("closed after %v, before queue_timeout", el)
	}
	if n := eng.Backends["b"].Counters.QueueTimeouts.Load(); n != 1 {
		t.Fatalf("queue timeouts %d, want 1", n)
	}
	if n := eng.Front.Frontends[0].Counters.Denied.Load(); n != 1 {
		t.Fatalf("denied %d, want 1", n)
	}
	if n := srv.Accepted.Load(); n != 1 {
		t.Fatalf("server accepted %d connections at maxconn 1", n)
	}
}
