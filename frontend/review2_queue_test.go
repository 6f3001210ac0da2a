package frontend_test

import (
	"bufio"
	"fmt"
	"testing"
	"time"

	"sluice/internal/testutil"
)

// Review of issue 15: every accept loop takes a connection slot (of the
// frontend's maxconn and of global.maxconn) before it calls Accept, and
// holds it while it waits. A frontend with more bind addresses than its
// maxconn (or a process with more listeners than global.maxconn, as when
// maxconn is fitted to a small descriptor limit) has listeners that never
// accept: their loops wait for a slot the idle loops of the other
// listeners hold. HAProxy checks maxconn when a connection arrives.
func TestEveryBindAcceptsUnderMaxconn(t *testing.T) {
	be := testutil.Serve(t, "be", testutil.Echo)
	second := testutil.FreeAddr(t)
	eng, first := testutil.Start(t, fmt.Sprintf(`
[frontend.f]
mode = "tcp"
bind = ["{{FRONT}}", %q]
maxconn = 1
default_backend = "b"
[backend.b]
[[backend.b.server]]
name = "s"
address = %q
`, second, be.Addr))
	for _, addr := range []string{second, second, first, first} {
		c := testutil.Dial(t, addr)
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte("ping\n")); err != nil {
			t.Fatal(err)
		}
		line, err := bufio.NewReader(c).ReadString('\n')
		c.Close()
		if err != nil || line != "ping\n" {
			t.Fatalf("one connection at a time to %s (maxconn = 1, nothing else open): %q, %v; want it served", addr, line, err)
		}
		// The relay ends when the client closes; wait for its slot to come
		// back before the next one.
		testutil.WaitFor(t, "the connection to end", 5*time.Second, func() bool {
			return eng.Front.Frontends[0].Counters.Current.Load() == 0
		})
	}
}

// Review of issue 15: a tcp client takes a slot of the server-connection
// budget before it waits in the backend's queue, so clients queued behind
// a server at its maxconn hold slots for server connections that do not
// exist: process_server_conns over-counts, and HTTP/2 streams and other
// frontends are answered 503 (server conns exhausted) while few server
// connections are open. The slot belongs to the dial, after the queue.
func TestQueuedTCPClientsHoldNoServerConns(t *testing.T) {
	srv := testutil.Serve(t, "s", testutil.Namer("s"))
	eng, front := testutil.Start(t, queueConfig(srv.Addr, "10s"))
	be := eng.Backends["b"]
	first := testutil.Dial(t, front)
	if got := testutil.ReadLine(t, bufio.NewReader(first)); got != "s" {
		t.Fatalf("first connection reached %q", got)
	}
	const queued = 5
	for range queued {
		testutil.Dial(t, front)
	}
	testutil.WaitFor(t, "the clients to queue", 5*time.Second, func() bool { return be.Counters.Queue.Load() == queued })
	if n := srv.Accepted.Load(); n != 1 {
		t.Fatalf("server accepted %d connections at maxconn 1", n)
	}
	if open := eng.Front.ServerConns().Open(); open != 1 {
		t.Errorf("server-connection budget in use: %d, with 1 server connection open and %d clients queued", open, queued)
	}
}
