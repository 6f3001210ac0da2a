package frontend_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"sluice/internal/testutil"
)

// acceptQueue is how many connections wait in the kernel's accept queue of
// the listener on addr (rx_queue of its LISTEN row in /proc/net/tcp).
func acceptQueue(t *testing.T, addr string) int {
	t.Helper()
	_, port, _ := net.SplitHostPort(addr)
	p, _ := strconv.Atoi(port)
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Skip("no /proc/net/tcp:", err)
	}
	want := fmt.Sprintf("0100007F:%04X", p)
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 5 || f[1] != want || f[3] != "0A" {
			continue
		}
		q := strings.SplitN(f[4], ":", 2)
		n, _ := strconv.ParseInt(q[1], 16, 64)
		return int(n)
	}
	t.Fatalf("no listener on %s in /proc/net/tcp", addr)
	return 0
}

// TestDrainServesConnectionHeldAtMaxconn (attack 20): at its maxconn the
// frontend has accepted one connection more, which it holds until a slot
// frees. A graceful stop (a reload) used to close it at once: a reset
// client on every reload at the cap, where HAProxy's paused listener
// leaves it in the kernel's queue for the next process. The held
// connection is now served with the slot a draining one frees.
func TestDrainServesConnectionHeldAtMaxconn(t *testing.T) {
	srv := testutil.Serve(t, "s", testutil.Echo)
	cfg := replaceOnce(tcpConfig("", server("s", srv.Addr, 1)), "mode = \"tcp\"\n", "mode = \"tcp\"\nmaxconn = 1\n")
	eng, front := testutil.Start(t, cfg)
	first := testutil.Dial(t, front)
	fmt.Fprintln(first, "one")
	testutil.ReadLine(t, bufio.NewReader(first))
	second := testutil.Dial(t, front)
	fmt.Fprintln(second, "two")
	testutil.WaitFor(t, "the second connection accepted (held at the cap)", 5*time.Second, func() bool { return acceptQueue(t, front) == 0 })

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan int, 1)
	go func() { done <- eng.Shutdown(ctx) }()
	// The stop has begun once the listener is closed.
	testutil.WaitFor(t, "the listener closed", 5*time.Second, func() bool {
		c, err := net.DialTimeout("tcp", front, time.Second)
		if err != nil {
			return true
		}
		c.Close()
		return false
	})
	first.Close()
	if got := testutil.ReadLine(t, bufio.NewReader(second)); got != "two" {
		t.Fatalf("the connection held at the cap got %q during the drain", got)
	}
	second.Close()
	if cut := <-done; cut != 0 {
		t.Fatalf("cut %d, want 0", cut)
	}
}

// TestQueuedTCPClientThatHalfClosesIsServed (attack 20, finding 3): a tcp
// client that sends its request and half-closes (shutdown(SHUT_WR), as
// `nc -N` does) while it waits in a server's queue is dropped: the watch
// of the queued connection takes the FIN for a close (commit b46155c),
// and the client gets a reset with nothing counted (no denied, no error,
// no queue timeout). HAProxy keeps it (abortonclose is off by default and
// is an HTTP option): in a side-by-side run of 400 such clients against
// two servers of maxconn 2, sluice reset 207, HAProxy none.
func TestQueuedTCPClientThatHalfClosesIsServed(t *testing.T) {
	srv := testutil.Serve(t, "s", testutil.Namer("s"))
	eng, front := testutil.Start(t, queueConfig(srv.Addr, "5s"))
	first := testutil.Dial(t, front)
	testutil.ReadLine(t, bufio.NewReader(first))
	second := testutil.Dial(t, front)
	fmt.Fprintln(second, "request")
	second.CloseWrite()
	testutil.WaitFor(t, "the second connection queued", 5*time.Second, func() bool { return eng.Backends["b"].Counters.Queued.Load() == 1 })
	first.Close()
	if got := testutil.ReadLine(t, bufio.NewReader(second)); got != "s" {
		t.Fatalf("a queued client that half-closed got %q, want the server's answer", got)
	}
}
