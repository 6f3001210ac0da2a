package frontend_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"sluice/internal/testutil"
)

// TestLoopRelaysManyShortConnections: plain tcp connections are accepted
// and connected by the epoll loops (counted in LoopConnections); bytes go
// through both ways, a client's half-close reaches the server, and every
// connection is counted and ends.
func TestLoopRelaysManyShortConnections(t *testing.T) {
	srv := testutil.Serve(t, "s", testutil.Echo)
	eng, front := testutil.Start(t, tcpConfig("", server("s", srv.Addr, 1)))
	f := eng.Front.Frontends[0]
	const conns, workers = 200, 8
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < conns/workers; i++ {
				msg := make([]byte, 1+i*1000)
				rand.Read(msg)
				c, err := net.DialTimeout("tcp", front, 5*time.Second)
				if err != nil {
					errs <- err
					return
				}
				c.SetDeadline(time.Now().Add(10 * time.Second))
				go func() {
					c.Write(msg)
					c.(*net.TCPConn).CloseWrite() // the echo ends when this arrives
				}()
				got, err := io.ReadAll(c)
				c.Close()
				if err != nil || !bytes.Equal(got, msg) {
					errs <- fmt.Errorf("echo of %d bytes: got %d bytes, %v", len(msg), len(got), err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := f.Counters.LoopConnections.Load(); n != conns {
		t.Fatalf("loop connections %d, want %d: the loop path was not taken", n, conns)
	}
	if n := f.Counters.Sessions.Load(); n != conns {
		t.Fatalf("sessions %d, want %d", n, conns)
	}
	testutil.WaitFor(t, "every connection ended", 5*time.Second, func() bool { return f.Counters.Current.Load() == 0 })
	if n := eng.Backends["b"].Server("s").Active(); n != 0 {
		t.Fatalf("server still counts %d connections", n)
	}
	if n := eng.Front.ServerConns().Open(); n != 0 {
		t.Fatalf("%d server-connection slots still held", n)
	}
}

// TestLoopRetriesRefusedServer: a connect refused by one server is tried
// again on the other, inside the loop.
func TestLoopRetriesRefusedServer(t *testing.T) {
	ok := testutil.Serve(t, "ok", testutil.Namer("ok"))
	dead := testutil.ClosedAddr(t)
	cfg := tcpConfig("", server("dead", dead, 1), server("ok", ok.Addr, 1)) +
		"" // retries default
	eng, front := testutil.Start(t, cfg+"\n")
	for range 10 {
		if got := whoAnswers(t, front); got != "ok" {
			t.Fatalf("answered by %q", got)
		}
	}
	be := eng.Backends["b"]
	if n := be.Server("dead").Counters.ConnErrors.Load(); n == 0 {
		t.Fatal("no connect error counted on the refusing server")
	}
	if n := be.Server("dead").Counters.Retries.Load(); n == 0 {
		t.Fatal("no retry counted")
	}
	if n := eng.Front.Frontends[0].Counters.LoopConnections.Load(); n != 10 {
		t.Fatalf("loop connections %d, want 10", n)
	}
	if n := eng.Front.Frontends[0].Counters.Errors.Load(); n != 0 {
		t.Fatalf("errors %d, want 0", n)
	}
}

// TestLoopConnectTimeout: a server that does not answer the SYN is given
// up after timeout_connect and the next server serves; with no other
// server the client is closed and counted in Errors.
func TestLoopConnectTimeout(t *testing.T) {
	hole := blackhole(t)
	ok := testutil.Serve(t, "ok", testutil.Namer("ok"))
	cfg := fmt.Sprintf("[defaults]\ntimeout_connect = \"300ms\"\nretries = 1\n\n%s",
		tcpConfig("", server("hole", hole, 1), server("ok", ok.Addr, 1)))
	eng, front := testutil.Start(t, cfg)
	for range 2 { // round robin: one of the two meets the hole first
		if got := whoAnswers(t, front); got != "ok" {
			t.Fatalf("answered by %q", got)
		}
	}
	if n := eng.Backends["b"].Server("hole").Counters.ConnErrors.Load(); n == 0 {
		t.Fatal("no connect error counted on the silent server")
	}

	// Only the silent server: the client is closed once the connect times out.
	cfg = fmt.Sprintf("[defaults]\ntimeout_connect = \"300ms\"\nretries = 1\n\n%s", tcpConfig("", server("hole", hole, 1)))
	eng, front = testutil.Start(t, cfg)
	c := testutil.Dial(t, front)
	start := time.Now()
	if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Fatalf("read %d bytes, %v; want the connection closed", n, err)
	}
	if el := time.Since(start); el < 500*time.Millisecond {
		t.Fatalf("closed after %v: before two connect timeouts of 300ms", el)
	}
	f := eng.Front.Frontends[0]
	testutil.WaitFor(t, "the error counted", 5*time.Second, func() bool { return f.Counters.Errors.Load() == 1 })
	if n := eng.Backends["b"].Server("hole").Counters.ConnErrors.Load(); n != 2 {
		t.Fatalf("connect errors %d, want 2 (the first try and one retry)", n)
	}
}

// TestLoopFrontendMaxconnWaits: past the frontend's maxconn the loop hands
// the connection it accepted to a goroutine that waits for a slot, and
// stops accepting; the client is served once a slot frees.
func TestLoopFrontendMaxconnWaits(t *testing.T) {
	srv := testutil.Serve(t, "s", testutil.Echo)
	cfg := tcpConfig("", server("s", srv.Addr, 1))
	cfg = bytes.NewBufferString(cfg).String()
	cfg = replaceOnce(cfg, "mode = \"tcp\"\n", "mode = \"tcp\"\nmaxconn = 1\n")
	eng, front := testutil.Start(t, cfg)
	f := eng.Front.Frontends[0]
	first := testutil.Dial(t, front)
	fmt.Fprintln(first, "one")
	testutil.ReadLine(t, bufio.NewReader(first))
	second := testutil.Dial(t, front)
	fmt.Fprintln(second, "two")
	if !held(t, second, 300*time.Millisecond) {
		t.Fatal("a connection past the frontend's maxconn was served")
	}
	first.Close()
	if got := testutil.ReadLine(t, bufio.NewReader(second)); got != "two" {
		t.Fatalf("waiting connection got %q", got)
	}
	second.Close()
	testutil.WaitFor(t, "both ended", 5*time.Second, func() bool { return f.Counters.Current.Load() == 0 })
	third := testutil.Dial(t, front) // the listener resumed
	fmt.Fprintln(third, "three")
	if got := testutil.ReadLine(t, bufio.NewReader(third)); got != "three" {
		t.Fatalf("third connection got %q", got)
	}
	if n := f.Counters.LoopConnections.Load(); n < 2 {
		t.Fatalf("loop connections %d, want the first and the third", n)
	}
}

// TestLoopQueuesViaFallback: a connection that finds the server at its
// maxconn goes to the goroutine path and waits in the queue.
func TestLoopQueuesViaFallback(t *testing.T) {
	srv := testutil.Serve(t, "s", testutil.Namer("s"))
	eng, front := testutil.Start(t, queueConfig(srv.Addr, "5s"))
	f := eng.Front.Frontends[0]
	first := testutil.Dial(t, front)
	testutil.ReadLine(t, bufio.NewReader(first))
	second := testutil.Dial(t, front)
	testutil.WaitFor(t, "the second connection queued", 5*time.Second, func() bool { return eng.Backends["b"].Counters.Queue.Load() == 1 })
	first.Close()
	if got := testutil.ReadLine(t, bufio.NewReader(second)); got != "s" {
		t.Fatalf("queued connection reached %q", got)
	}
	if n := f.Counters.LoopConnections.Load(); n != 1 {
		t.Fatalf("loop connections %d, want 1 (the queued one takes the goroutine path)", n)
	}
	second.Close()
	testutil.WaitFor(t, "both ended", 5*time.Second, func() bool { return f.Counters.Current.Load() == 0 })
	if n := eng.Front.Tracked(); n != 0 {
		t.Fatalf("%d connections still tracked", n)
	}
}

// TestLoopStopWhileConnecting: a drain waits for a connection still
// connecting (it ends at timeout_connect); a hard stop cuts it.
func TestLoopStopWhileConnecting(t *testing.T) {
	hole := blackhole(t)
	for _, hard := range []bool{false, true} {
		t.Run(fmt.Sprintf("hard=%v", hard), func(t *testing.T) {
			cfg := fmt.Sprintf("[defaults]\ntimeout_connect = %q\nretries = 0\n\n%s",
				map[bool]string{false: "400ms", true: "30s"}[hard], tcpConfig("", server("hole", hole, 1)))
			eng, front := testutil.Start(t, cfg)
			f := eng.Front.Frontends[0]
			c := testutil.Dial(t, front)
			testutil.WaitFor(t, "the connection accepted", 5*time.Second, func() bool { return f.Counters.Current.Load() == 1 })
			ctx, cancel := context.WithTimeout(context.Background(), map[bool]time.Duration{false: 10 * time.Second, true: 200 * time.Millisecond}[hard])
			defer cancel()
			cut := eng.Shutdown(ctx)
			if want := map[bool]int{false: 0, true: 1}[hard]; cut != want {
				t.Fatalf("cut %d, want %d", cut, want)
			}
			if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil {
				t.Fatalf("read %d, %v: want the connection closed", n, err)
			}
			if n := f.Counters.Current.Load(); n != 0 {
				t.Fatalf("current %d after the stop", n)
			}
			if !hard && f.Counters.Errors.Load() != 1 {
				t.Fatalf("errors %d, want the timed-out connect", f.Counters.Errors.Load())
			}
			if n := eng.Backends["b"].Server("hole").Active(); n != 0 {
				t.Fatalf("server still counts %d connections", n)
			}
		})
	}
}

func replaceOnce(s, old, new string) string {
	i := bytes.Index([]byte(s), []byte(old))
	if i < 0 {
		return s
	}
	return s[:i] + new + s[i+len(old):]
}
