package l7_test

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"sluice/internal/gopool"
	"sluice/internal/testutil"
	"sluice/l7"
)

// idleClients is how many keep-alive clients TestIdleKeepAliveMemory holds.
const idleClients = 2000

// idleBoundKiB is the most an idle keep-alive client may cost the process
// (the test's own end of each connection included, a few hundred bytes).
const idleBoundKiB = 6

// idleGoroutineSlack is how many more goroutines the process may run with
// idleClients idle clients than without.
const idleGoroutineSlack = 50

// inUse is the memory the process holds for its live objects and stacks:
// after a collection, what idle connections keep.
func inUse() (heap, stack uint64) {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse, ms.StackInuse
}

// TestIdleKeepAliveMemory opens idleClients keep-alive clients through a
// real sluice to a real server, each with one request answered, and checks
// what the process holds per idle client; then every one of them is
// served again on the same connection.
func TestIdleKeepAliveMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("opens thousands of connections")
	}
	// Every wait moves to its small goroutine at once, not after idleHandOff.
	defer l7.SetIdleHandOff(l7.SetIdleHandOff(0))
	be := testutil.Serve(t, "be", answerFixed)
	front := "default_backend = \"app\"\ntimeout_client = \"60s\"\ntimeout_http_request = \"10s\""
	_, addr := testutil.Start(t, httpConfig(front, "", map[string][]string{"app": {be.Addr}}))

	req := []byte("GET /x HTTP/1.1\r\nHost: h\r\n\r\n")
	buf := make([]byte, 512)
	deadline := time.Now().Add(60 * time.Second)
	exchange := func(c net.Conn, i int) {
		t.Helper()
		if _, err := c.Write(req); err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
		if err := readFixed(c, buf); err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
	}
	// A first client warms pools and the server connection up.
	warm := testutil.Dial(t, addr)
	warm.SetDeadline(deadline)
	exchange(warm, -1)
	warm.Close()

	heap0, stack0 := inUse()
	g0, pool0 := runtime.NumGoroutine(), gopool.Default.Idle()
	conns := make([]net.Conn, 0, idleClients)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := range idleClients {
		c, err := net.DialTimeout("tcp", addr, 10*time.Second)
		if err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
		conns = append(conns, c)
		c.SetDeadline(deadline)
		exchange(c, i)
	}
	heap1, stack1 := inUse()
	// The pool's waiting goroutines (internal/gopool: at most 128, for a
	// second) serve the next connections, not these.
	g1 := runtime.NumGoroutine() - (gopool.Default.Idle() - pool0)
	per := func(a, b uint64) float64 { return (float64(b) - float64(a)) / idleClients / 1024 }
	total := per(heap0+stack0, heap1+stack1)
	t.Logf("%d idle keep-alive clients: %.2f KiB each (heap %.2f, stacks %.2f), %.2f goroutines each",
		idleClients, total, per(heap0, heap1), per(stack0, stack1), float64(g1-g0)/idleClients)
	bound := float64(idleBoundKiB)
	if raceEnabled {
		bound += 2 // 4 KiB stacks under the race detector
	}
	if total > bound {
		t.Errorf("an idle keep-alive client costs %.2f KiB, want at most %.0f", total, bound)
	}
	// On Linux an idle client waits in sluice's epoll set, with no
	// goroutine: the few over are clients not yet done with their last
	// response, and the set's own waiter.
	if runtime.GOOS == "linux" && g1-g0 > idleGoroutineSlack {
		t.Errorf("%d idle keep-alive clients hold %d goroutines, want at most %d", idleClients, g1-g0, idleGoroutineSlack)
	}
	// Every idle client is still served, on its own connection.
	for i, c := range conns {
		exchange(c, i)
	}
}

// answerFixed answers every request on c with a small fixed response.
func answerFixed(c net.Conn) {
	resp := []byte("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
	buf := make([]byte, 4096)
	var pending []byte
	for {
		n, err := c.Read(buf)
		pending = append(pending, buf[:n]...)
		for {
			i := bytes.Index(pending, []byte("\r\n\r\n"))
			if i < 0 {
				break
			}
			pending = pending[i+4:]
			if _, err := c.Write(resp); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// readFixed reads one answerFixed response, relayed, from c into buf.
func readFixed(c net.Conn, buf []byte) error {
	got := 0
	for {
		n, err := c.Read(buf[got:])
		got += n
		if i := bytes.Index(buf[:got], []byte("\r\n\r\n")); i >= 0 && got >= i+4+5 {
			if !bytes.HasPrefix(buf, []byte("HTTP/1.1 200 ")) || string(buf[i+4:got]) != "hello" {
				return fmt.Errorf("response %q", buf[:got])
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("after %q: %w", buf[:got], err)
		}
		if got == len(buf) {
			return io.ErrShortBuffer
		}
	}
}

// TestIdleHandOffKeepsTimeouts: a keep-alive client whose wait moved to a
// fresh goroutine is still served when it speaks, and still closed when
// it stays quiet for timeout_client (not sooner: the hand-on carries the
// deadline over).
func TestIdleHandOffKeepsTimeouts(t *testing.T) {
	defer l7.SetIdleHandOff(l7.SetIdleHandOff(0))
	be := testutil.Serve(t, "be", answerFixed)
	front := "default_backend = \"app\"\ntimeout_client = \"400ms\""
	_, addr := testutil.Start(t, httpConfig(front, "", map[string][]string{"app": {be.Addr}}))
	c := testutil.Dial(t, addr)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 512)
	for i := range 3 {
		if _, err := c.Write([]byte("GET /x HTTP/1.1\r\nHost: h\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
		if err := readFixed(c, buf); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	start := time.Now()
	n, err := c.Read(buf)
	if err != io.EOF || n != 0 {
		t.Fatalf("quiet client: read %q, %v; want the close", buf[:n], err)
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Errorf("closed after %v of quiet, before timeout_client (400ms)", d)
	}
}

// TestParkedClientsInOrder: keep-alive clients whose waits move to the
// epoll set at once (idleHandOff 0) are served every request, in order:
// one split over two writes (the rest arriving after the wait started
// over the first bytes), and two pipelined in one write (the second
// buffered, never left to wait for a readiness that already passed).
func TestParkedClientsInOrder(t *testing.T) {
	defer l7.SetIdleHandOff(l7.SetIdleHandOff(0))
	be := testutil.Serve(t, "be", answerPath)
	front := "default_backend = \"app\"\ntimeout_client = \"60s\""
	_, addr := testutil.Start(t, httpConfig(front, "", map[string][]string{"app": {be.Addr}}))
	const clients, rounds = 40, 10
	conns := make([]net.Conn, clients)
	for i := range conns {
		conns[i] = testutil.Dial(t, addr)
		conns[i].SetDeadline(time.Now().Add(30 * time.Second))
	}
	buf := make([]byte, 4096)
	for r := range rounds {
		for i, c := range conns {
			a := fmt.Sprintf("GET /%d/%d/a HTTP/1.1\r\nHost: h\r\n\r\n", i, r)
			b := fmt.Sprintf("GET /%d/%d/b HTTP/1.1\r\nHost: h\r\n\r\n", i, r)
			if r%2 == 0 {
				// Pipelined: both in one write.
				if _, err := c.Write([]byte(a + b)); err != nil {
					t.Fatal(err)
				}
				readPaths(t, c, buf, a, b)
				continue
			}
			// Split: the head's first bytes, then the rest.
			if _, err := c.Write([]byte(a[:7])); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Write([]byte(a[7:])); err != nil {
				t.Fatal(err)
			}
			readPaths(t, c, buf, a)
			if _, err := c.Write([]byte(b)); err != nil {
				t.Fatal(err)
			}
			readPaths(t, c, buf, b)
		}
	}
}

// answerPath answers every request on c with its target as the body.
func answerPath(c net.Conn) {
	buf := make([]byte, 4096)
	var pending []byte
	for {
		n, err := c.Read(buf)
		pending = append(pending, buf[:n]...)
		for {
			i := bytes.Index(pending, []byte("\r\n\r\n"))
			if i < 0 {
				break
			}
			f := bytes.Fields(pending[:i])
			pending = pending[i+4:]
			body := f[1]
			if _, err := fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// readPaths reads one answerPath response per request in reqs, in order.
func readPaths(t *testing.T, c net.Conn, buf []byte, reqs ...string) {
	t.Helper()
	want := ""
	for _, r := range reqs {
		p := strings.Fields(r)[1]
		want += fmt.Sprintf("\r\n\r\n%s", p)
	}
	got := ""
	for strings.Count(got, "\r\n\r\n") < len(reqs) || !strings.HasSuffix(got, strings.Fields(reqs[len(reqs)-1])[1]) {
		n, err := c.Read(buf)
		got += string(buf[:n])
		if err != nil {
			t.Fatalf("after %q: %v", got, err)
		}
	}
	var bodies string
	for _, part := range strings.Split(got, "HTTP/1.1 200 OK")[1:] {
		bodies += part[strings.Index(part, "\r\n\r\n"):]
	}
	if bodies != want {
		t.Fatalf("responses %q, want bodies in order %q", got, want)
	}
}

// busyClients is how many requests TestBusyKeepAliveMemory holds at the
// server at once, and busyBoundKiB the most each may cost the process:
// the head-building buffer with the request (4 KiB), the connections'
// structures and the test's own server end (a goroutine and a 4 KiB
// buffer each). Neither the server connection waiting for its answer nor
// the client whose request went out whole holds a read buffer (8 KiB
// more each before; measured 21.6 KiB with the client's, 13.8 without).
const (
	busyClients  = 1000
	busyBoundKiB = 17
)

// TestBusyKeepAliveMemory sends busyClients requests through a real
// sluice to a server that holds every one of them unanswered, and checks
// the heap each costs while it waits; then all are answered.
func TestBusyKeepAliveMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("opens thousands of connections")
	}
	release := make(chan struct{})
	arrived := make(chan struct{}, busyClients)
	be := testutil.Serve(t, "be", func(c net.Conn) {
		buf := make([]byte, 4096)
		for {
			if _, err := c.Read(buf); err != nil {
				return
			}
			arrived <- struct{}{}
			<-release
			if _, err := c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")); err != nil {
				return
			}
		}
	})
	front := "default_backend = \"app\"\ntimeout_client = \"60s\""
	_, addr := testutil.Start(t, httpConfig(front, "", map[string][]string{"app": {be.Addr}}))
	heap0, stack0 := inUse()
	deadline := time.Now().Add(60 * time.Second)
	conns := make([]net.Conn, 0, busyClients)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := range busyClients {
		c, err := net.DialTimeout("tcp", addr, 10*time.Second)
		if err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
		conns = append(conns, c)
		c.SetDeadline(deadline)
		if _, err := c.Write([]byte("GET /x HTTP/1.1\r\nHost: h\r\n\r\n")); err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
	}
	for range busyClients {
		select {
		case <-arrived:
		case <-time.After(time.Until(deadline)):
			t.Fatal("requests did not all reach the server")
		}
	}
	heap1, stack1 := inUse()
	close(release)
	per := func(a, b uint64) float64 { return (float64(b) - float64(a)) / busyClients / 1024 }
	t.Logf("%d requests at the server: heap %.2f KiB, stacks %.2f KiB per client", busyClients, per(heap0, heap1), per(stack0, stack1))
	if h := per(heap0, heap1); !raceEnabled && h > busyBoundKiB {
		t.Errorf("a request at the server costs %.2f KiB of heap, want at most %d", h, busyBoundKiB)
	}
	buf := make([]byte, 512)
	for i, c := range conns {
		if err := readFixed(c, buf); err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
	}
}
