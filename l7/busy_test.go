package l7_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"sluice/internal/testutil"
	"sluice/l7"
)

// holdingBackend answers every request with its path as the body, but
// holds the ones whose path starts with /hold until release is called
// (once or more), telling held (room for n) of each as it arrives.
func holdingBackend(t *testing.T, n int) (be *testutil.Backend, held <-chan string, release func()) {
	heldC, let := make(chan string, n), make(chan struct{})
	var once sync.Once
	release = func() { once.Do(func() { close(let) }) }
	be = testutil.Serve(t, "be", func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			io.Copy(io.Discard, req.Body)
			p := req.URL.Path
			if strings.HasPrefix(p, "/hold") {
				heldC <- p
				<-let
			}
			if _, err := fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(p), p); err != nil {
				return
			}
		}
	})
	return be, heldC, release
}

// readAnswer reads one response from br: its status, whether it said
// "Connection: close", and its body.
func readAnswer(br *bufio.Reader) (status int, closing bool, body string, err error) {
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return 0, false, "", err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, resp.Close, string(b), err
}

// TestBusyBoundServesInOrder: with the bound on connections worked on at
// 4, many concurrent keep-alive clients (some pipelining two requests,
// some splitting a head over two writes) each get every answer right and
// in order, while the process runs a bounded number of goroutines: past
// the bound a client waits in the kernel, not on a goroutine of its own.
func TestBusyBoundServesInOrder(t *testing.T) {
	const limit, clients, rounds = 4, 120, 8
	defer l7.SetBusyLimit(l7.SetBusyLimit(limit))
	be := testutil.Serve(t, "be", answerPath)
	front := "default_backend = \"app\"\ntimeout_client = \"60s\""
	eng, addr := testutil.Start(t, httpConfig(front, "", map[string][]string{"app": {be.Addr}}))
	// The most goroutines the process may run once the clients are
	// connected: the test's own (one per client), and sluice's, a few per
	// slot (the serving goroutine, a server connection's at the test
	// server), with slack for the ones lent while the queue stalled and
	// for timers' callbacks that run on goroutines of their own (a loaded
	// machine: a CI run once saw 206 against a slack of 60, repeated runs
	// up to 70 over), and the test's waiter below. Without the bound,
	// sluice ran one per client and the test server one per server
	// connection: 240 more, which half of it still catches.
	most := runtime.NumGoroutine() + clients + 1 + 120
	errs := make(chan error, clients)
	var wg, dialed sync.WaitGroup
	start := make(chan struct{})
	for i := range clients {
		wg.Add(1)
		dialed.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.DialTimeout("tcp", addr, 10*time.Second)
			dialed.Done()
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(60 * time.Second))
			br := bufio.NewReader(c)
			<-start
			for r := range rounds {
				a := fmt.Sprintf("/%d/%d/a", i, r)
				b := fmt.Sprintf("/%d/%d/b", i, r)
				ra := "GET " + a + " HTTP/1.1\r\nHost: h\r\n\r\n"
				rb := "GET " + b + " HTTP/1.1\r\nHost: h\r\n\r\n"
				var writes []string
				switch (i + r) % 3 {
				case 0:
					writes = []string{ra + rb} // pipelined
				case 1:
					writes = []string{ra[:9], ra[9:] + rb} // split head
				default:
					writes = []string{ra, rb}
				}
				for _, w := range writes {
					if _, err := c.Write([]byte(w)); err != nil {
						errs <- fmt.Errorf("client %d: %v", i, err)
						return
					}
				}
				for _, want := range []string{a, b} {
					status, _, body, err := readAnswer(br)
					if err != nil || status != 200 || body != want {
						errs <- fmt.Errorf("client %d round %d: got %d %q (%v), want 200 %q", i, r, status, body, err, want)
						return
					}
				}
			}
		}()
	}
	dialed.Wait()
	// The accepts' goroutines park their connections (nothing sent yet)
	// and end.
	cur := &eng.Front.Frontends[0].Counters.Current
	testutil.WaitFor(t, "new connections to park", 20*time.Second, func() bool {
		return cur.Load() == clients && runtime.NumGoroutine() <= most
	})
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	close(start)
	maxG, maxActive, maxQueued := 0, 0, 0
	for sampling := true; sampling; {
		select {
		case <-done:
			sampling = false
		case <-time.After(2 * time.Millisecond):
		}
		maxG = max(maxG, runtime.NumGoroutine())
		// The loan may grow or shrink meanwhile: the larger of the two
		// reads around active's bounds it.
		e := l7.BusyExtra()
		a, q := l7.BusyState()
		if e = max(e, l7.BusyExtra()); a > limit+e {
			t.Errorf("%d slots held, bound %d (+%d lent)", a, limit, e)
		}
		maxActive, maxQueued = max(maxActive, a), max(maxQueued, q)
	}
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	waits := eng.Front.Frontends[0].HTTP().Counters.SlotWaits.Load()
	t.Logf("goroutines: %d at most with %d clients (bound %d); slots held at most %d, queued at most %d; %d waits for a slot",
		maxG, clients, most, maxActive, maxQueued, waits)
	if maxG > most {
		t.Errorf("%d goroutines with %d clients: want at most %d", maxG, clients, most)
	}
	if waits == 0 {
		t.Error("no client waited for a slot: the bound was never reached")
	}
}

// TestBusyQueuedTimeouts: with the one slot held by a request its server
// sits on (no give-up, no slots lent), a keep-alive client whose next request
// waits in the ready queue is closed at timeout_client, and a new one
// whose first request waits there gets 408 at timeout_http_request, as
// if they had waited on goroutines; the held request is answered after.
func TestBusyQueuedTimeouts(t *testing.T) {
	defer l7.SetBusyLimit(l7.SetBusyLimit(1))
	defer l7.SetBusyStall(l7.SetBusyStall(0))
	defer l7.SetIdleHandOff(l7.SetIdleHandOff(0))
	// The held request keeps its slot (no give-up while its server thinks).
	defer l7.SetBusyServerWait(l7.SetBusyServerWait(0))
	be, held, release := holdingBackend(t, 4)
	defer release()
	front := "default_backend = \"app\"\ntimeout_client = \"300ms\"\ntimeout_http_request = \"300ms\""
	eng, addr := testutil.Start(t, httpConfig(front, "", map[string][]string{"app": {be.Addr}}))
	counters := &eng.Front.Frontends[0].HTTP().Counters

	// b is served once, then parks (quiet).
	b := testutil.Dial(t, addr)
	bb := bufio.NewReader(b)
	if _, err := b.Write([]byte("GET /b1 HTTP/1.1\r\nHost: h\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	if status, _, body, err := readAnswer(bb); err != nil || status != 200 || body != "/b1" {
		t.Fatalf("b: %d %q %v", status, body, err)
	}
	// a takes the slot and keeps it: its server holds the request.
	a := testutil.Dial(t, addr)
	if _, err := a.Write([]byte("GET /hold HTTP/1.1\r\nHost: h\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-held:
	case <-time.After(10 * time.Second):
		t.Fatal("the held request did not reach the server")
	}
	// b's next request and c's first wait for the slot.
	if _, err := b.Write([]byte("GET /b2 HTTP/1.1\r\nHost: h\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	c := testutil.Dial(t, addr)
	if _, err := c.Write([]byte("GET /c HTTP/1.1\r\nHost: h\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "b and c to queue", 10*time.Second, func() bool { return counters.SlotWaits.Load() >= 2 })

	// b: closed with nothing sent (timeout_client between requests).
	// (A reset, as its request was left unread in the kernel.)
	if n, err := bb.Read(make([]byte, 512)); n != 0 || err != io.EOF && !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("queued keep-alive client: read %d bytes, %v; want the close (timeout_client)", n, err)
	}
	// c: 408 (timeout_http_request since its accept).
	if status, _, _, err := readAnswer(bufio.NewReader(c)); err != nil || status != 408 {
		t.Errorf("queued new client: %d, %v; want 408", status, err)
	}
	release()
	if status, _, body, err := readAnswer(bufio.NewReader(a)); err != nil || status != 200 || body != "/hold" {
		t.Errorf("held request: %d %q %v", status, body, err)
	}
	testutil.WaitFor(t, "the queue to empty", 10*time.Second, func() bool { _, q := l7.BusyState(); return q == 0 })
}

// TestBusyDrainQueued: a drain while clients wait for a slot loses no
// request: the queued ones are answered, with "Connection: close", once
// the slot frees; an idle one is closed with nothing sent, as without
// the bound.
func TestBusyDrainQueued(t *testing.T) {
	defer l7.SetBusyLimit(l7.SetBusyLimit(1))
	defer l7.SetBusyStall(l7.SetBusyStall(0))
	defer l7.SetIdleHandOff(l7.SetIdleHandOff(0))
	// The held request keeps its slot (no give-up while its server thinks).
	defer l7.SetBusyServerWait(l7.SetBusyServerWait(0))
	be, held, release := holdingBackend(t, 4)
	defer release()
	front := "default_backend = \"app\"\ntimeout_client = \"30s\""
	eng, addr := testutil.Start(t, httpConfig(front, "", map[string][]string{"app": {be.Addr}}))
	p := eng.Front.Frontends[0].HTTP()

	const queued = 5
	served := func(c net.Conn, br *bufio.Reader, path string) {
		t.Helper()
		if _, err := c.Write([]byte("GET " + path + " HTTP/1.1\r\nHost: h\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
		if status, _, body, err := readAnswer(br); err != nil || status != 200 || body != path {
			t.Fatalf("%s: %d %q %v", path, status, body, err)
		}
	}
	var conns []net.Conn
	var readers []*bufio.Reader
	for i := range queued + 1 { // the last one stays idle
		c := testutil.Dial(t, addr)
		br := bufio.NewReader(c)
		served(c, br, fmt.Sprintf("/first/%d", i))
		conns, readers = append(conns, c), append(readers, br)
	}
	a := testutil.Dial(t, addr)
	if _, err := a.Write([]byte("GET /hold HTTP/1.1\r\nHost: h\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-held:
	case <-time.After(10 * time.Second):
		t.Fatal("the held request did not reach the server")
	}
	for i := range queued {
		if _, err := conns[i].Write([]byte(fmt.Sprintf("GET /next/%d HTTP/1.1\r\nHost: h\r\n\r\n", i))); err != nil {
			t.Fatal(err)
		}
	}
	testutil.WaitFor(t, "the clients to queue", 10*time.Second, func() bool { _, q := l7.BusyState(); return q == queued })
	p.Drain()
	release()
	if status, closing, body, err := readAnswer(bufio.NewReader(a)); err != nil || status != 200 || body != "/hold" || !closing {
		t.Errorf("held request: %d %q close=%v %v; want 200 with Connection: close", status, body, closing, err)
	}
	for i := range queued {
		want := fmt.Sprintf("/next/%d", i)
		status, closing, body, err := readAnswer(readers[i])
		if err != nil || status != 200 || body != want || !closing {
			t.Errorf("queued client %d: %d %q close=%v %v; want 200 %q with Connection: close", i, status, body, closing, err, want)
		}
		if n, err := readers[i].Read(make([]byte, 64)); n != 0 || err != io.EOF {
			t.Errorf("queued client %d after its answer: %d bytes, %v; want the close", i, n, err)
		}
	}
	if n, err := readers[queued].Read(make([]byte, 64)); n != 0 || err != io.EOF {
		t.Errorf("idle client at the drain: %d bytes, %v; want the close", n, err)
	}
}

// TestBusySlowServerLends: requests a slow server sits on hold every slot
// (their give-up off, as when slow clients hold them),
// and a client whose request waits for one is still served: once the
// queue goes busyStall without a slot freed, slots are lent past the
// bound.
func TestBusySlowServerLends(t *testing.T) {
	defer l7.SetBusyLimit(l7.SetBusyLimit(2))
	// The held requests keep their slots (no give-up while their server
	// thinks): a loan is what serves the third client then.
	defer l7.SetBusyServerWait(l7.SetBusyServerWait(0))
	be, held, release := holdingBackend(t, 4)
	defer release()
	front := "default_backend = \"app\"\ntimeout_client = \"30s\""
	_, addr := testutil.Start(t, httpConfig(front, "", map[string][]string{"app": {be.Addr}}))
	for i := range 2 {
		c := testutil.Dial(t, addr)
		if _, err := fmt.Fprintf(c, "GET /hold/%d HTTP/1.1\r\nHost: h\r\n\r\n", i); err != nil {
			t.Fatal(err)
		}
		select {
		case <-held:
		case <-time.After(10 * time.Second):
			t.Fatal("a held request did not reach the server")
		}
	}
	c := testutil.Dial(t, addr)
	if _, err := c.Write([]byte("GET /quick HTTP/1.1\r\nHost: h\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	if status, _, body, err := readAnswer(bufio.NewReader(c)); err != nil || status != 200 || body != "/quick" {
		t.Errorf("behind two held requests: %d %q %v", status, body, err)
	}
}

// TestBusySlowServerFreesSlots: with the bound at 4, no slots lent, and
// twice as many requests held by their server as there are slots (long
// polls), other clients' requests, new and keep-alive, are all answered
// while the held ones wait: a slot holder whose server does not answer
// soon gives its slot up and waits on unslotted. The held ones are
// answered once released, and their connections serve on.
func TestBusySlowServerFreesSlots(t *testing.T) {
	const limit, slow, quick, rounds = 4, 8, 6, 5
	defer l7.SetBusyLimit(l7.SetBusyLimit(limit))
	defer l7.SetBusyStall(l7.SetBusyStall(0))
	defer l7.SetBusyServerWait(l7.SetBusyServerWait(5 * time.Millisecond))
	be, held, release := holdingBackend(t, slow)
	defer release()
	front := "default_backend = \"app\"\ntimeout_client = \"60s\""
	_, addr := testutil.Start(t, httpConfig(front, "", map[string][]string{"app": {be.Addr}}))

	var slowConns []net.Conn
	for i := range slow {
		c := testutil.Dial(t, addr)
		if _, err := fmt.Fprintf(c, "GET /hold/%d HTTP/1.1\r\nHost: h\r\n\r\n", i); err != nil {
			t.Fatal(err)
		}
		slowConns = append(slowConns, c)
	}
	for range slow {
		select {
		case <-held:
		case <-time.After(20 * time.Second):
			t.Fatal("the held requests did not all reach the server: their slots were never given up")
		}
	}
	// Every held request is at the server; none is answered until the
	// quick clients are done. A quick request that needed a held one's
	// slot would wait for ever: the clients give up after 20 s.
	quickClients(t, addr, quick, rounds)
	release()
	for i, c := range slowConns {
		br := bufio.NewReader(c)
		c.SetDeadline(time.Now().Add(20 * time.Second))
		want := fmt.Sprintf("/hold/%d", i)
		if status, _, body, err := readAnswer(br); err != nil || status != 200 || body != want {
			t.Errorf("held request %d: %d %q %v", i, status, body, err)
			continue
		}
		// The connection goes on: its next request queues for a slot
		// as any other's.
		next := fmt.Sprintf("/after/%d", i)
		if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: h\r\n\r\n", next); err != nil {
			t.Fatal(err)
		}
		if status, _, body, err := readAnswer(br); err != nil || status != 200 || body != next {
			t.Errorf("after held request %d: %d %q %v", i, status, body, err)
		}
	}
	testutil.WaitFor(t, "the slots to come back", 10*time.Second, func() bool {
		a, q := l7.BusyState()
		return q == 0 && a <= limit
	})
}

// TestBusyLoanEndsAsSlotsReturn: a loan that ends while a borrower still
// holds its slot keeps the slots held: a client that queues after it is
// started by the next slot given up, not left waiting until the slots
// held fall below the bound (the connections cycling through the rest
// each queued behind one another so, with long polls holding slots).
func TestBusyLoanEndsAsSlotsReturn(t *testing.T) {
	defer l7.SetBusyLimit(l7.SetBusyLimit(2))
	defer l7.SetBusyStall(l7.SetBusyStall(0)) // lent by hand (BusyLend)
	defer l7.SetBusyServerWait(l7.SetBusyServerWait(0))
	defer l7.SetIdleHandOff(l7.SetIdleHandOff(0))
	// The server holds each /hold/NAME until its own release.
	var mu sync.Mutex
	releases := map[string]chan struct{}{}
	gate := func(p string) chan struct{} {
		mu.Lock()
		defer mu.Unlock()
		if releases[p] == nil {
			releases[p] = make(chan struct{})
		}
		return releases[p]
	}
	held := make(chan string, 4)
	be := testutil.Serve(t, "be", func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			p := req.URL.Path
			if strings.HasPrefix(p, "/hold") {
				held <- p
				<-gate(p)
			}
			if _, err := fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(p), p); err != nil {
				return
			}
		}
	})
	defer func() {
		for _, p := range []string{"/hold/a", "/hold/b", "/hold/c"} {
			select {
			case <-gate(p):
			default:
				close(gate(p))
			}
		}
	}()
	front := "default_backend = \"app\"\ntimeout_client = \"30s\""
	_, addr := testutil.Start(t, httpConfig(front, "", map[string][]string{"app": {be.Addr}}))
	send := func(c net.Conn, path string) {
		t.Helper()
		if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: h\r\n\r\n", path); err != nil {
			t.Fatal(err)
		}
	}
	answer := func(br *bufio.Reader, want string) {
		t.Helper()
		if status, _, body, err := readAnswer(br); err != nil || status != 200 || body != want {
			t.Fatalf("%s: %d %q %v", want, status, body, err)
		}
	}
	reached := func(want string) {
		t.Helper()
		select {
		case p := <-held:
			if p != want {
				t.Fatalf("the server got %s, want %s", p, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s did not reach the server", want)
		}
	}
	k := testutil.Dial(t, addr) // served once, then parked
	kb := bufio.NewReader(k)
	send(k, "/k1")
	answer(kb, "/k1")
	conns := map[string]net.Conn{}
	for _, name := range []string{"a", "b"} { // the bound's two slots
		conns[name] = testutil.Dial(t, addr)
		send(conns[name], "/hold/"+name)
		reached("/hold/" + name)
	}
	conns["c"] = testutil.Dial(t, addr) // queues, then borrows
	send(conns["c"], "/hold/c")
	testutil.WaitFor(t, "c to queue", 10*time.Second, func() bool { _, q := l7.BusyState(); return q == 1 })
	l7.BusyLend()
	reached("/hold/c")
	l7.BusyWatch() // the queue is empty: the loan ends, c still holding its slot
	send(k, "/k2")
	testutil.WaitFor(t, "k to queue", 10*time.Second, func() bool { _, q := l7.BusyState(); return q == 1 })
	// a's answer frees a slot: k must get it, though b and c stay held.
	close(gate("/hold/a"))
	answer(bufio.NewReader(conns["a"]), "/hold/a")
	answer(kb, "/k2")
	close(gate("/hold/b"))
	close(gate("/hold/c"))
	answer(bufio.NewReader(conns["b"]), "/hold/b")
	answer(bufio.NewReader(conns["c"]), "/hold/c")
}

// TestBusySlowReadersHoldNoSlot: clients downloading a large body slowly
// (phones on a poor link; here they do not read at all until the end)
// must not take the bound from the others. With the bound at 4 and no
// lending, 6 stalled downloads held every slot: the quick clients waited
// for them. A write the client has not taken within busyServerWait while
// slots are in demand now gives its slot up and goes on without it.
func TestBusySlowReadersHoldNoSlot(t *testing.T) {
	const limit, slow, quick, rounds = 4, 6, 6, 5
	const big = 32 << 20 // far more than the socket buffers hold
	defer l7.SetBusyLimit(l7.SetBusyLimit(limit))
	defer l7.SetBusyStall(l7.SetBusyStall(0))
	defer l7.SetBusyServerWait(l7.SetBusyServerWait(5 * time.Millisecond))
	sent := make(chan struct{}, slow)
	be := testutil.Serve(t, "be", func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			p := req.URL.Path
			if p == "/big" {
				fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", big)
				chunk := bytes.Repeat([]byte("x"), 64<<10)
				for n := 0; n < big; n += len(chunk) {
					if _, err := c.Write(chunk); err != nil {
						return
					}
				}
				sent <- struct{}{}
				continue
			}
			if _, err := fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(p), p); err != nil {
				return
			}
		}
	})
	front := "default_backend = \"app\"\ntimeout_client = \"60s\""
	_, addr := testutil.Start(t, httpConfig(front, "", map[string][]string{"app": {be.Addr}}))

	var slowConns []net.Conn
	for range slow {
		c := testutil.Dial(t, addr)
		if _, err := fmt.Fprintf(c, "GET /big HTTP/1.1\r\nHost: h\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		slowConns = append(slowConns, c)
	}
	// Every slot would be held by a stalled download now; the quick
	// clients give up after 20 s.
	quickClients(t, addr, quick, rounds)
	// The downloads were never cut: each arrives whole.
	for i, c := range slowConns {
		c.SetDeadline(time.Now().Add(30 * time.Second))
		br := bufio.NewReaderSize(c, 64<<10)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("download %d: %v", i, err)
		}
		n, err := io.Copy(io.Discard, resp.Body)
		if err != nil || n != big {
			t.Errorf("download %d: %d bytes, %v; want %d", i, n, err, big)
		}
	}
}

// quickClients runs n keep-alive clients of addr at once, each asking for
// rounds paths of its own in turn and checking every answer is its own;
// each gives up after 20 s (a client that needed a slot held elsewhere
// would wait for ever).
func quickClients(t *testing.T, addr string, n, rounds int) {
	t.Helper()
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.DialTimeout("tcp", addr, 10*time.Second)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(20 * time.Second))
			br := bufio.NewReader(c)
			for r := range rounds {
				want := fmt.Sprintf("/quick/%d/%d", i, r)
				if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: h\r\n\r\n", want); err != nil {
					errs <- err
					return
				}
				if status, _, body, err := readAnswer(br); err != nil || status != 200 || body != want {
					errs <- fmt.Errorf("quick client %d round %d: %d %q (%v), want 200 %q", i, r, status, body, err, want)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
