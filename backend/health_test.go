package backend

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"sluice/conf"
	"sluice/internal/logbuf"
)

type change struct {
	s  *Server
	up bool
}

// checked builds a backend over addrs with health h, starts its checks and
// returns it with its state changes and its log.
func checked(t *testing.T, h conf.Health, addrs ...string) (*Backend, *HealthChecks, chan change, *logbuf.Buffer) {
	t.Helper()
	bc := &conf.Backend{Name: "app", Balance: "roundrobin", Health: h}
	for i, a := range addrs {
		bc.Servers = append(bc.Servers, conf.Server{Name: "app" + string(rune('1'+i)), Address: a, Weight: 4})
	}
	b, err := New(bc)
	if err != nil {
		t.Fatal(err)
	}
	logs := &logbuf.Buffer{}
	hc := NewHealthChecks(b, bc, slog.New(slog.NewTextHandler(logs, nil)))
	changes := make(chan change, 16)
	hc.OnChange = func(s *Server, up bool) { changes <- change{s, up} }
	hc.Start()
	t.Cleanup(hc.Stop)
	return b, hc, changes, logs
}

func healthConf(kind conf.CheckKind) conf.Health {
	h := conf.Health{Check: kind, Method: "GET", Path: "/", Interval: 20 * time.Millisecond, IntervalDown: 20 * time.Millisecond,
		Timeout: time.Second, Rise: 2, Fall: 2, InitState: "up", ObserveErrors: 3}
	h.ExpectStatus, _ = conf.ParseStatusSet("200-399")
	return h
}

func waitChange(t *testing.T, ch chan change) change {
	t.Helper()
	select {
	case c := <-ch:
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("no state change within 5s")
		return change{}
	}
}

type statusServer struct {
	status atomic.Int32
	srv    *httptest.Server
}

func newStatusServer(t *testing.T) *statusServer {
	s := &statusServer{}
	s.status.Store(200)
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(int(s.status.Load())) }))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *statusServer) addr() string { return s.srv.Listener.Addr().String() }

func TestHealthDownLogAndUp(t *testing.T) {
	s1, s2 := newStatusServer(t), newStatusServer(t)
	b, _, changes, logs := checked(t, healthConf("http"), s1.addr(), s2.addr())
	srv := b.Server("app1")
	s1.status.Store(500)
	if c := waitChange(t, changes); c.s != srv || c.up {
		t.Fatalf("change %+v", c)
	}
	if srv.Up() || srv.Counters.Downs.Load() != 1 {
		t.Errorf("up %v, downs %d", srv.Up(), srv.Counters.Downs.Load())
	}
	if r, ok := srv.LastCheck(); !ok || r.OK || r.Desc != "HTTP 500" || r.Code != 500 {
		t.Errorf("last check %+v", r)
	}
	line := logs.String()
	if !strings.Contains(line, "server app/app1 is DOWN: HTTP 500 after ") || !strings.Contains(line, "1 of 2 servers left") {
		t.Errorf("log: %s", line)
	}
	if strings.Count(line, "is DOWN") != 1 {
		t.Errorf("the change was logged more than once: %s", line)
	}
	for range 10 {
		if s := b.Pick(nil, nil); s != b.Server("app2") {
			t.Fatalf("picked %v while app1 is down", s.Name)
		}
	}
	s2.status.Store(503)
	waitChange(t, changes)
	if !strings.Contains(logs.String(), "0 of 2 servers left; backend app has no server left") {
		t.Errorf("all-down log: %s", logs.String())
	}
	if s := b.Pick(nil, nil); s != nil {
		t.Errorf("picked %s with every server down", s.Name)
	}
	s1.status.Store(200)
	if c := waitChange(t, changes); c.s != srv || !c.up {
		t.Fatalf("change %+v", c)
	}
	if !strings.Contains(logs.String(), "server app/app1 is UP: HTTP 200 after ") || srv.Downtime() <= 0 {
		t.Errorf("log: %s, downtime %v", logs.String(), srv.Downtime())
	}
	if checks, failed := srv.CheckCounts(); checks < 4 || failed < 2 {
		t.Errorf("checks %d, failed %d", checks, failed)
	}
}

func TestHealthInitStateDown(t *testing.T) {
	s1 := newStatusServer(t)
	h := healthConf("tcp")
	h.InitState = "down"
	b, _, changes, logs := checked(t, h, s1.addr())
	srv := b.Server("app1")
	if _, ran := srv.LastCheck(); !ran && srv.Up() {
		t.Fatal("server up before its first check with init_state down")
	}
	if c := waitChange(t, changes); !c.up {
		t.Fatalf("change %+v", c)
	}
	if srv.Counters.Downs.Load() != 0 || strings.Contains(logs.String(), "DOWN") {
		t.Errorf("starting down is not a failure: downs %d, log %s", srv.Counters.Downs.Load(), logs.String())
	}
}

// An agent that answers "drain", then "ready 50%".
func TestHealthAgent(t *testing.T) {
	var line atomic.Pointer[string]
	say := func(s string) { line.Store(&s) }
	say("drain\n")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var answered atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, *line.Load())
			c.Close()
			answered.Add(1)
		}
	}()
	b, _, _, logs := checked(t, healthConf("agent"), ln.Addr().String())
	srv := b.Server("app1")
	waitFor(t, func() bool { return srv.Admin() == AdminDrain })
	if srv.Available() || b.Pick(nil, nil) != nil {
		t.Error("a drained server is still picked")
	}
	say("ready 50%\n")
	waitFor(t, func() bool { return srv.Admin() == AdminReady && srv.Weight() == 2 })
	if !srv.Up() || b.Pick(nil, nil) != srv {
		t.Error("server not back in rotation")
	}
	if !strings.Contains(logs.String(), "app/app1 set to drain by its agent") || !strings.Contains(logs.String(), "weight set to 2 (50% of 4)") {
		t.Errorf("log: %s", logs.String())
	}
	// The same word again is not applied again: an operator's own change stays.
	b.SetWeight(srv, 3)
	n := answered.Load()
	waitFor(t, func() bool { return answered.Load() >= n+3 })
	if srv.Weight() != 3 {
		t.Errorf("agent's unchanged 50%% overrode the operator's weight: %d", srv.Weight())
	}
	say("down\n")
	waitFor(t, func() bool { return !srv.Up() })
}

// waitFor polls cond every few milliseconds, failing after 5s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestObservationTripsAndCheckBringsBack(t *testing.T) {
	s1, s2 := newStatusServer(t), newStatusServer(t)
	h := healthConf("tcp")
	h.Observe, h.ObserveErrors, h.Rise = true, 3, 2
	b, _, changes, logs := checked(t, h, s1.addr(), s2.addr())
	srv := b.Server("app1")
	srv.ObserveError()
	srv.ObserveError()
	srv.ObserveOK() // a success ends the streak
	srv.ObserveError()
	srv.ObserveError()
	if !srv.Up() {
		t.Fatal("down before observe_errors consecutive errors")
	}
	srv.ObserveError() // the third in a row: down at once
	if srv.Up() {
		t.Fatal("still up after 3 consecutive errors")
	}
	if c := waitChange(t, changes); c.up {
		t.Fatalf("change %+v", c)
	}
	if !strings.Contains(logs.String(), "server app/app1 is DOWN: 3 consecutive errors on live traffic (observe), 1 of 2 servers left") {
		t.Errorf("log: %s", logs.String())
	}
	srv.ObserveError() // more errors while down change nothing
	// The active check (tcp, passing) brings it back after rise checks.
	if c := waitChange(t, changes); !c.up || c.s != srv {
		t.Fatalf("change %+v", c)
	}
	if srv.ObservedErrors() != 0 {
		t.Errorf("streak not reset on coming back: %d", srv.ObservedErrors())
	}
}

func TestObserveOffCostsNothing(t *testing.T) {
	s := NewServer("b", "s", "127.0.0.1:1", 1, false, 0)
	for range 100 {
		s.ObserveError()
	}
	if !s.Up() || s.ObservedErrors() != 0 {
		t.Errorf("observation off changed the server: up %v errors %d", s.Up(), s.ObservedErrors())
	}
}

// share picks n times and returns the fraction that landed on s.
func share(b *Backend, s *Server, n int) float64 {
	hits := 0
	for range n {
		if b.Pick(nil, nil) == s {
			hits++
		}
	}
	return float64(hits) / float64(n)
}

func TestSlowStartRamp(t *testing.T) {
	bc := &conf.Backend{Name: "app", Servers: []conf.Server{{Name: "a", Address: "127.0.0.1:1", Weight: 1}, {Name: "b", Address: "127.0.0.1:2", Weight: 1}}}
	for _, algo := range []conf.Balance{conf.BalanceRoundRobin, conf.BalanceLeastConn, conf.BalanceRandom} {
		t.Run(algo.String(), func(t *testing.T) {
			bc.Balance = algo
			b, err := New(bc)
			if err != nil {
				t.Fatal(err)
			}
			a := b.Server("a")
			const length = time.Hour
			// With factor f, a carries weight f against b's 1: a share of
			// f/(1+f) (roundrobin, leastconn); random lands near f/2.
			for _, f := range []float64{0, 0.25, 0.5, 0.75, 1} {
				a.StartSlowStart(length)
				a.slowStart.start.Store(time.Now().Add(-time.Duration(f * float64(length))).UnixNano())
				lo, hi := f/2-0.03, max(f, minRamp)/(1+max(f, minRamp))+0.03
				if got := share(b, a, 20000); got < lo || got > hi {
					t.Errorf("%.2f into the ramp: share %.3f, want %.2f..%.2f (factor %.2f)", f, got, lo, hi, a.SlowStartFactor())
				}
			}
			if a.SlowStartFactor() != 1 || a.slowStart.start.Load() != 0 {
				t.Errorf("ramp not over: factor %v", a.SlowStartFactor())
			}
			// A lone server in slow start takes all the traffic.
			b.Server("b").SetUp(false)
			a.StartSlowStart(length)
			if got := share(b, a, 100); got != 1 {
				t.Errorf("a lone ramping server got %.2f of picks", got)
			}
		})
	}
}

// Slow start begins when the check brings a server back, not at startup.
func TestSlowStartAfterComingBack(t *testing.T) {
	s1, s2 := newStatusServer(t), newStatusServer(t)
	h := healthConf("http")
	h.SlowStart = time.Hour
	b, _, changes, _ := checked(t, h, s1.addr(), s2.addr())
	srv := b.Server("app1")
	if f := srv.SlowStartFactor(); f != 1 {
		t.Fatalf("ramping at startup: %v", f)
	}
	s1.status.Store(500)
	waitChange(t, changes)
	s1.status.Store(200)
	waitChange(t, changes)
	if f := srv.SlowStartFactor(); f >= 0.1 {
		t.Errorf("factor just after coming back %v", f)
	}
	if got := share(b, srv, 10000); got > 0.05 {
		t.Errorf("a server just back got %.3f of picks", got)
	}
	if w := srv.EffectiveWeight(); w >= 1 {
		t.Errorf("effective weight %v", w)
	}
}

// TestNoCheckKindStartsNoCheckers: a Health built in code (Check left
// empty) runs no checks, as check = "none" does. The engine counted it as
// none while HealthChecks started a checker that always said "no check";
// CheckKind.Active is now the one test.
func TestNoCheckKindStartsNoCheckers(t *testing.T) {
	for _, kind := range []conf.CheckKind{"", conf.CheckNone} {
		bc := &conf.Backend{Name: "app", Servers: []conf.Server{{Name: "a", Address: "127.0.0.1:1", Weight: 1}}}
		bc.Health.Check = kind
		b, err := New(bc)
		if err != nil {
			t.Fatal(err)
		}
		h := NewHealthChecks(b, bc, nil)
		h.Start()
		h.mu.Lock()
		n := len(h.servers)
		h.mu.Unlock()
		h.Stop()
		if n != 0 {
			t.Errorf("check %q started %d checkers, want none", kind, n)
		}
	}
}
