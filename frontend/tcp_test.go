package frontend_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"sluice/internal/testutil"
)

func tcpConfig(extra string, servers ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "[global]\nhard_stop_after = \"5s\"\n%s\n[frontend.f]\nmode = \"tcp\"\nbind = [\"{{FRONT}}\"]\ndefault_backend = \"b\"\n\n[backend.b]\n", extra)
	for _, s := range servers {
		b.WriteString(s)
	}
	return b.String()
}

func server(name, addr string, weight int) string {
	return fmt.Sprintf("[[backend.b.server]]\nname = %q\naddress = %q\nweight = %d\n", name, addr, weight)
}

// whoAnswers opens a connection through the frontend and returns the name
// of the server that answered.
func whoAnswers(t *testing.T, front string) string {
	c := testutil.Dial(t, front)
	defer c.Close()
	return testutil.ReadLine(t, bufio.NewReader(c))
}

func TestWeightedRoundRobinIsSmoothAndExact(t *testing.T) {
	a := testutil.Serve(t, "a", testutil.Namer("a"))
	b := testutil.Serve(t, "b", testutil.Namer("b"))
	_, front := testutil.Start(t, tcpConfig("", server("a", a.Addr, 3), server("b", b.Addr, 1)))

	var seq []string
	for range 40 {
		seq = append(seq, whoAnswers(t, front))
	}
	got := strings.Join(seq, "")
	if want := strings.Repeat("aaba", 10); got != want {
		t.Fatalf("sequence %s, want %s (smooth 3:1, never bursts of b)", got, want)
	}
}

func TestHalfCloseStillGetsWholeReply(t *testing.T) {
	reply := make([]byte, 4<<20)
	rand.Read(reply)
	// The server reads the whole request until EOF, then answers: only a
	// proxy that passes the half-close on lets this finish.
	srv := testutil.Serve(t, "s", func(c net.Conn) {
		req, _ := io.ReadAll(c)
		if string(req) != "question" {
			return
		}
		c.Write(reply)
	})
	_, front := testutil.Start(t, tcpConfig("", server("s", srv.Addr, 1)))
	c := testutil.Dial(t, front)
	c.Write([]byte("question"))
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, reply) {
		t.Fatalf("got %d bytes, want the whole %d-byte reply", len(got), len(reply))
	}
}

func TestDeadServerIsRetriedOnTheNext(t *testing.T) {
	live := testutil.Serve(t, "live", testutil.Namer("live"))
	eng, front := testutil.Start(t, tcpConfig("[defaults]\nretries = 1\n",
		server("dead", testutil.ClosedAddr(t), 1), server("live", live.Addr, 1)))
	for i := range 10 {
		if got := whoAnswers(t, front); got != "live" {
			t.Fatalf("connection %d reached %q", i, got)
		}
	}
	dead := eng.Backends["b"].Server("dead")
	if n := dead.Counters.ConnErrors.Load(); n == 0 {
		t.Fatalf("dead server has no connect errors counted")
	}
	if n := dead.Counters.Retries.Load(); n != dead.Counters.ConnErrors.Load() {
		t.Fatalf("retries %d, connect errors %d: every failure should have been retried", n, dead.Counters.ConnErrors.Load())
	}
}

func TestNoRetriesMeansClosedConnection(t *testing.T) {
	eng, front := testutil.Start(t, tcpConfig("[defaults]\nretries = 0\n", server("dead", testutil.ClosedAddr(t), 1)))
	c := testutil.Dial(t, front)
	if n, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatalf("read %d bytes from a connection whose only server is dead", n)
	}
	if n := eng.Front.Frontends[0].Counters.Errors.Load(); n != 1 {
		t.Fatalf("frontend errors = %d, want 1", n)
	}
}

// blackhole returns an address whose accept queue is full, so that a new
// connect gets no answer to its SYN and hangs until its timeout.
func blackhole(t *testing.T) string {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, _ := syscall.Getsockname(fd)
	addr := fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
	// Fill the queue (backlog 0 still admits one) with connections nobody accepts.
	for range 4 {
		d := net.Dialer{Timeout: 200 * time.Millisecond}
		if c, err := d.Dial("tcp", addr); err == nil {
			t.Cleanup(func() { c.Close() })
		} else {
			return addr // the queue is full: SYNs are dropped now
		}
	}
	// Verify a connect hangs.
	d := net.Dialer{Timeout: 300 * time.Millisecond}
	if c, err := d.Dial("tcp", addr); err == nil {
		c.Close()
		t.Skip("kernel accepted past the backlog; cannot build a blackhole here")
	}
	return addr
}

func TestConnectTimeout(t *testing.T) {
	hole := blackhole(t)
	eng, front := testutil.Start(t, tcpConfig("[defaults]\nretries = 0\ntimeout_connect = \"150ms\"\n", server("hole", hole, 1)))
	c := testutil.Dial(t, front)
	_, err := c.Read(make([]byte, 1))
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("the client waited 10s: the connect timeout never fired")
	}
	if err == nil {
		t.Fatal("got data from a server that never accepted")
	}
	if n := eng.Backends["b"].Server("hole").Counters.ConnErrors.Load(); n != 1 {
		t.Fatalf("connect errors = %d, want 1", n)
	}
}

func TestIdleTimeoutClosesQuietConnections(t *testing.T) {
	srv := testutil.Serve(t, "s", testutil.Echo)
	_, front := testutil.Start(t, tcpConfig("[defaults]\ntimeout_client = \"300ms\"\ntimeout_server = \"300ms\"\n", server("s", srv.Addr, 1)))

	// An active connection outlives the timeout several times over.
	c := testutil.Dial(t, front)
	r := bufio.NewReader(c)
	for i := range 12 {
		fmt.Fprintf(c, "ping %d\n", i)
		if got := testutil.ReadLine(t, r); got != fmt.Sprintf("ping %d", i) {
			t.Fatalf("echo %q", got)
		}
		time.Sleep(100 * time.Millisecond) // traffic pattern, not synchronisation
	}

	// A quiet one is closed by sluice, long before the test's own deadline.
	q := testutil.Dial(t, front)
	_, err := q.Read(make([]byte, 1))
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("idle connection was not closed by timeout_client")
	}
	if err != io.EOF && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("idle connection ended with %v, want EOF", err)
	}
}

func TestMaxconnQueuesTheNextConnection(t *testing.T) {
	srv := testutil.Serve(t, "s", testutil.Echo)
	// A frontend-level cap of one.
	src := strings.Replace(tcpConfig("", server("s", srv.Addr, 1)), "default_backend", "maxconn = 1\ndefault_backend", 1)
	eng, front := testutil.Start(t, src)

	first := testutil.Dial(t, front)
	r1 := bufio.NewReader(first)
	fmt.Fprintln(first, "one")
	if got := testutil.ReadLine(t, r1); got != "one" {
		t.Fatal(got)
	}
	// The second connection completes its TCP handshake (kernel queue) but
	// is not accepted while the first is open.
	second := testutil.Dial(t, front)
	fmt.Fprintln(second, "two")
	second.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := second.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("connection past the cap was served (or failed: %v) while the first was open", err)
	}
	if n := eng.Front.Frontends[0].Counters.Sessions.Load(); n != 1 {
		t.Fatalf("frontend accepted %d connections at maxconn 1", n)
	}
	// Closing the first lets the second through, with its data intact.
	first.Close()
	second.SetReadDeadline(time.Now().Add(10 * time.Second))
	if got := testutil.ReadLine(t, bufio.NewReader(second)); got != "two" {
		t.Fatalf("second connection got %q", got)
	}
}

func TestGracefulStopDrainsLiveConnection(t *testing.T) {
	srv := testutil.Serve(t, "s", testutil.Echo)
	eng, front := testutil.Start(t, tcpConfig("", server("s", srv.Addr, 1)))
	c := testutil.Dial(t, front)
	r := bufio.NewReader(c)
	fmt.Fprintln(c, "before")
	if got := testutil.ReadLine(t, r); got != "before" {
		t.Fatal(got)
	}

	done := make(chan int, 1)
	go func() { done <- eng.Shutdown(context.Background()) }()

	// New connections are refused once the listener is closed.
	deadline := time.Now().Add(5 * time.Second)
	for {
		nc, err := net.DialTimeout("tcp", front, time.Second)
		if err != nil {
			break
		}
		nc.Close()
		if time.Now().After(deadline) {
			t.Fatal("listener still accepting after shutdown began")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The live connection keeps working through the drain.
	fmt.Fprintln(c, "during")
	if got := testutil.ReadLine(t, r); got != "during" {
		t.Fatalf("live connection broken by shutdown: %q", got)
	}
	select {
	case <-done:
		t.Fatal("shutdown finished while a connection was open")
	default:
	}
	c.Close()
	if cut := <-done; cut != 0 {
		t.Fatalf("shutdown cut %d connections, want 0", cut)
	}
}

func TestHardStopCutsWhatIsLeft(t *testing.T) {
	srv := testutil.Serve(t, "s", testutil.Echo)
	eng, front := testutil.Start(t, tcpConfig("", server("s", srv.Addr, 1)))
	c := testutil.Dial(t, front)
	fmt.Fprintln(c, "x")
	testutil.ReadLine(t, bufio.NewReader(c))
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if cut := eng.Shutdown(ctx); cut != 1 {
		t.Fatalf("cut %d, want 1", cut)
	}
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("connection still open after hard stop")
	}
}

func TestGlobalMaxconnCapsAllFrontends(t *testing.T) {
	srv := testutil.Serve(t, "s", testutil.Echo)
	eng, front := testutil.Start(t, tcpConfig("maxconn = 1\n", server("s", srv.Addr, 1)))
	first := testutil.Dial(t, front)
	fmt.Fprintln(first, "one")
	testutil.ReadLine(t, bufio.NewReader(first))
	second := testutil.Dial(t, front)
	fmt.Fprintln(second, "two")
	second.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := second.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("connection past global maxconn was served (or failed: %v)", err)
	}
	if n := eng.Front.Current(); n != 1 {
		t.Fatalf("current = %d at global maxconn 1", n)
	}
	first.Close()
	second.SetReadDeadline(time.Now().Add(10 * time.Second))
	if got := testutil.ReadLine(t, bufio.NewReader(second)); got != "two" {
		t.Fatalf("second connection got %q", got)
	}
}

// Ended connections leave nothing behind, whichever relay served them: the
// epoll relay (plain TCP) or the goroutine one (a PROXY header with data
// behind it in the same segment).
func TestEndedConnectionsAreForgotten(t *testing.T) {
	srv := testutil.Serve(t, "s", testutil.Echo)
	for _, proxied := range []bool{false, true} {
		front := ""
		if proxied {
			front = "accept_proxy = true\n"
		}
		eng, addr := testutil.Start(t, proxyTCPConfig(front, "", server("s", srv.Addr, 1)))
		for i := 0; i < 20; i++ {
			c := testutil.Dial(t, addr)
			msg := "hello\n"
			if proxied {
				msg = "PROXY TCP4 192.0.2.1 192.0.2.2 1000 80\r\n" + msg
			}
			fmt.Fprint(c, msg)
			if got := testutil.ReadLine(t, bufio.NewReader(c)); got != "hello" {
				t.Fatalf("proxied %v: echo %q", proxied, got)
			}
			c.Close()
		}
		testutil.WaitFor(t, "connections to end", 5*time.Second, func() bool { return eng.Front.Current() == 0 })
		if n := eng.Front.Tracked(); n != 0 {
			t.Fatalf("proxied %v: %d ended connections still tracked", proxied, n)
		}
	}
}
