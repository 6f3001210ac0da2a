package frontend_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"sluice/internal/testutil"
)

// switchable is a named TCP server that the test stops and starts again on
// the same address, as a server that goes away and comes back.
type switchable struct {
	t    *testing.T
	name string
	addr string
	mu   sync.Mutex
	ln   net.Listener
}

func newSwitchable(t *testing.T, name string) *switchable {
	s := &switchable{t: t, name: name}
	s.listen("127.0.0.1:0")
	s.addr = s.ln.Addr().String()
	t.Cleanup(s.stop)
	return s
}

func (s *switchable) listen(addr string) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		s.t.Fatal(err)
	}
	s.mu.Lock()
	s.ln = ln
	s.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				testutil.Namer(s.name)(c)
			}()
		}
	}()
}

// stop closes the listener: new connections are refused, open ones go on.
func (s *switchable) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln != nil {
		s.ln.Close()
		s.ln = nil
	}
}

func (s *switchable) start() { s.listen(s.addr) }

// waitFor polls cond every 2ms and returns how long it took, failing after
// 10s.
func waitFor(t *testing.T, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > 10*time.Second {
			t.Fatalf("%s: not within 10s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
	return time.Since(start)
}

// tcpWith is a tcp config whose backend has the keys in extra (before
// its servers) and the tables in after.
func tcpWith(extra, after string, servers ...string) string {
	return strings.Replace(tcpConfig("", servers...), "[backend.b]\n", "[backend.b]\n"+extra, 1) + after
}

const tcpHealth = `
[backend.b.health]
check = "tcp"
interval = "100ms"
timeout = "100ms"
fall = 3
rise = 2
`

// slack covers scheduling on a loaded test machine (and the race
// detector).
const slack = 250 * time.Millisecond

func TestTCPServerFailingLeavesRotationAndComesBack(t *testing.T) {
	a, b := newSwitchable(t, "a"), newSwitchable(t, "b")
	eng, front := testutil.Start(t, tcpWith("retries = 0\n", tcpHealth, server("a", a.addr, 1), server("b", b.addr, 1)))
	srv := eng.Backends["b"].Server("b")
	waitFor(t, "first checks", func() bool { _, ok := srv.LastCheck(); return ok })

	b.stop()
	took := waitFor(t, "b marked down", func() bool { return !srv.Up() })
	if limit := 3*100*time.Millisecond + 100*time.Millisecond + slack; took > limit {
		t.Errorf("b marked down after %v, want within fall×interval+timeout (%v with slack)", took, limit)
	}
	for range 10 {
		if got := whoAnswers(t, front); got != "a" {
			t.Fatalf("connection reached %s while b is down", got)
		}
	}

	b.start()
	took = waitFor(t, "b back up", func() bool { return srv.Up() })
	if limit := 2*100*time.Millisecond + slack; took > limit {
		t.Errorf("b back after %v, want within rise×interval (%v with slack)", took, limit)
	}
	seen := map[string]bool{}
	for range 4 {
		seen[whoAnswers(t, front)] = true
	}
	if !seen["a"] || !seen["b"] {
		t.Errorf("after b came back, connections reached %v", seen)
	}
}

// A server taken away on purpose (its listener closes before the checks
// notice): with retries, clients never see an error.
func TestTCPPlannedTakedownWithRetries(t *testing.T) {
	a, b := newSwitchable(t, "a"), newSwitchable(t, "b")
	eng, front := testutil.Start(t, tcpWith("retries = 2\n", tcpHealth, server("a", a.addr, 1), server("b", b.addr, 1)))
	srv := eng.Backends["b"].Server("b")
	var names []string
	for i := range 60 {
		if i == 10 {
			b.stop()
		}
		c := testutil.Dial(t, front)
		line, err := bufio.NewReader(c).ReadString('\n')
		c.Close()
		if err != nil {
			t.Fatalf("connection %d failed while b was being taken down: %v", i, err)
		}
		names = append(names, strings.TrimSpace(line))
	}
	waitFor(t, "b marked down", func() bool { return !srv.Up() })
	if srv.Counters.Retries.Load() == 0 {
		t.Error("no retry happened: the test did not hit the window before b was marked down")
	}
	if strings.Join(names[:10], "") == strings.Repeat("a", 10) {
		t.Errorf("b took no traffic before it was stopped: %v", names)
	}
}

// Every server down: a TCP connection is closed at once, nothing hangs.
func TestTCPAllServersDownClosesAtOnce(t *testing.T) {
	a, b := newSwitchable(t, "a"), newSwitchable(t, "b")
	eng, front := testutil.Start(t, tcpWith("retries = 1\n", tcpHealth, server("a", a.addr, 1), server("b", b.addr, 1)+"backup = true\n"))
	be := eng.Backends["b"]
	a.stop()
	b.stop()
	waitFor(t, "all down", func() bool { up, _ := be.UpCount(); return up == 0 })
	start := time.Now()
	c := testutil.Dial(t, front)
	n, err := c.Read(make([]byte, 1))
	if n != 0 || err == nil {
		t.Fatalf("read %d bytes, err %v; want the connection closed", n, err)
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("closing took %v", d)
	}
	if be.Counters.NoServer.Load() == 0 {
		t.Error("NoServer not counted")
	}
}

// Passive observation on TCP: connect errors mark the server down at
// once, before the active check (on check_port, still answering) would;
// the check brings it back.
func TestTCPObserveConnectErrors(t *testing.T) {
	a := newSwitchable(t, "a")
	checkPort := newSwitchable(t, "check") // what the active check reaches
	dead := testutil.ClosedAddr(t)
	_, port, _ := net.SplitHostPort(checkPort.addr)
	eng, front := testutil.Start(t, tcpWith("retries = 1\n", `
[backend.b.health]
check = "tcp"
check_port = `+port+`
interval = "300ms"
rise = 3
observe = true
observe_errors = 2
`, server("a", a.addr, 1), server("dead", dead, 1)))
	srv := eng.Backends["b"].Server("dead")
	for i := 0; srv.Up() && i < 20; i++ {
		if got := whoAnswers(t, front); got != "a" {
			t.Fatalf("reached %s", got)
		}
	}
	if srv.Up() {
		t.Fatal("the dead server is still up after 20 connections")
	}
	if srv.Counters.ConnErrors.Load() != 2 {
		t.Errorf("%d connect errors before the server went down, want observe_errors = 2", srv.Counters.ConnErrors.Load())
	}
	// Its check port answers: the active check brings it back.
	waitFor(t, "back up through the active check", srv.Up)
}

func httpConfig(backendExtra string, servers ...string) string {
	var b strings.Builder
	b.WriteString("[frontend.f]\nmode = \"http\"\nbind = [\"{{FRONT}}\"]\ndefault_backend = \"b\"\n\n[backend.b]\nretries = 0\n")
	b.WriteString(backendExtra)
	for _, s := range servers {
		b.WriteString(s)
	}
	return b.String()
}

// webServer answers /health with health and everything else with app, and
// names itself in X-Server.
type webServer struct {
	name        string
	health, app atomic.Int32
	addr        string
	hits        atomic.Int64
}

func newWebServer(t *testing.T, name string) *webServer {
	w := &webServer{name: name}
	w.health.Store(200)
	w.app.Store(200)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	w.addr = ln.Addr().String()
	srv := &http.Server{Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("X-Server", name)
		if r.URL.Path == "/health" {
			rw.WriteHeader(int(w.health.Load()))
			return
		}
		w.hits.Add(1)
		rw.WriteHeader(int(w.app.Load()))
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return w
}

var client = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

func get(t *testing.T, front string) (int, string) {
	t.Helper()
	resp, err := client.Get("http://" + front + "/app")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("X-Server")
}

const httpHealth = `
[backend.b.health]
check = "http"
path = "/health"
interval = "100ms"
timeout = "200ms"
fall = 2
rise = 2
`

func TestHTTPFailingCheckAndAllDown503(t *testing.T) {
	w1, w2 := newWebServer(t, "w1"), newWebServer(t, "w2")
	eng, front := testutil.Start(t, httpConfig(httpHealth, server("w1", w1.addr, 1), server("w2", w2.addr, 1)))
	be := eng.Backends["b"]
	w1.health.Store(503)
	waitFor(t, "w1 down", func() bool { return !be.Server("w1").Up() })
	for range 6 {
		if code, who := get(t, front); code != 200 || who != "w2" {
			t.Fatalf("got %d from %q with w1 down", code, who)
		}
	}
	w2.health.Store(500)
	waitFor(t, "all down", func() bool { up, _ := be.UpCount(); return up == 0 })
	start := time.Now()
	if code, _ := get(t, front); code != 503 {
		t.Errorf("every server down: got %d, want 503", code)
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("503 took %v", d)
	}
	w1.health.Store(200)
	waitFor(t, "w1 back", be.Server("w1").Up)
	if code, who := get(t, front); code != 200 || who != "w1" {
		t.Errorf("got %d from %q after w1 came back", code, who)
	}
}

// Passive observation on HTTP: 5xx answers to live requests take a server
// out though its health endpoint still says 200; the check brings it back.
func TestHTTPObserve5xx(t *testing.T) {
	w1, w2 := newWebServer(t, "w1"), newWebServer(t, "w2")
	w1.app.Store(500)
	eng, front := testutil.Start(t, httpConfig("", server("w1", w1.addr, 1), server("w2", w2.addr, 1))+`
[backend.b.health]
check = "http"
path = "/health"
interval = "300ms"
rise = 3
observe = true
observe_errors = 3
`)
	srv := eng.Backends["b"].Server("w1")
	fives := 0
	for i := 0; fives < 3 && i < 40; i++ {
		if code, _ := get(t, front); code == 500 {
			fives++
			if fives < 3 && !srv.Up() {
				t.Fatalf("down after %d errors, want observe_errors = 3", fives)
			}
		}
	}
	// The third 500 reaches the client just before the proxy counts it.
	waitFor(t, "w1 out after 3 errors", func() bool { return !srv.Up() })
	before := w1.hits.Load()
	for range 6 {
		if code, who := get(t, front); code != 200 || who != "w2" {
			t.Fatalf("got %d from %s while w1 is out", code, who)
		}
	}
	if w1.hits.Load() != before {
		t.Error("w1 got requests while out")
	}
	waitFor(t, "w1 back through its passing check", srv.Up)
}
