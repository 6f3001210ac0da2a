package health_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	proxyproto "github.com/pires/go-proxyproto"

	"sluice/conf"
	"sluice/health"
	"sluice/internal/testutil"
)

// spec builds a check spec with the defaults conf would fill in.
func spec(kind conf.CheckKind, addr string, edit func(*health.Spec)) health.Spec {
	s := health.Spec{Addr: addr, Health: conf.Health{
		Check: kind, Method: "GET", Path: "/", Interval: 20 * time.Millisecond, IntervalDown: 20 * time.Millisecond,
		Timeout: time.Second, Rise: 2, Fall: 3, QueryName: ".", QueryType: dns.TypeA,
	}}
	s.ExpectStatus, _ = conf.ParseStatusSet("200-399")
	if edit != nil {
		edit(&s)
	}
	return s
}

// httpPeer is an HTTP server whose answer the test changes.
type httpPeer struct {
	status atomic.Int32
	body   atomic.Pointer[string]
	host   atomic.Pointer[string] // Host header of the last request
	method atomic.Pointer[string]
	srv    *httptest.Server
}

func newHTTPPeer(t *testing.T) *httpPeer {
	p := &httpPeer{}
	p.status.Store(200)
	body := "all good"
	p.body.Store(&body)
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h, m := r.Host, r.Method
		p.host.Store(&h)
		p.method.Store(&m)
		w.WriteHeader(int(p.status.Load()))
		io.WriteString(w, *p.body.Load())
	}))
	t.Cleanup(p.srv.Close)
	return p
}

func (p *httpPeer) addr() string { return p.srv.Listener.Addr().String() }

// dnsPeer is a miekg/dns server on UDP that answers with rcode.
func dnsPeer(t *testing.T, rcode *atomic.Int32) string {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	srv := &dns.Server{PacketConn: pc, NotifyStartedFunc: func() { close(started) },
		Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
			m := new(dns.Msg)
			m.SetRcode(q, int(rcode.Load()))
			if m.Rcode == dns.RcodeSuccess && q.Question[0].Qtype == dns.TypeA {
				rr, _ := dns.NewRR(q.Question[0].Name + " 60 IN A 127.0.0.1")
				m.Answer = append(m.Answer, rr)
			}
			w.WriteMsg(m)
		})}
	go srv.ActivateAndServe()
	<-started
	t.Cleanup(func() { srv.Shutdown() })
	return pc.LocalAddr().String()
}

// linePeer is a TCP server that writes *line to each connection and
// closes it (an agent).
func linePeer(t *testing.T, line *atomic.Pointer[string]) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, *line.Load())
			c.Close()
		}
	}()
	return ln.Addr().String()
}

func closedAddr(t *testing.T, network string) string {
	if network == "udp" {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		a := pc.LocalAddr().String()
		pc.Close()
		return a
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := ln.Addr().String()
	ln.Close()
	return a
}

func portOf(t *testing.T, addr string) int {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(p)
	return n
}

func TestProbeKinds(t *testing.T) {
	web := newHTTPPeer(t)
	var rcode atomic.Int32
	dnsAddr := dnsPeer(t, &rcode)
	var agentLine atomic.Pointer[string]
	agentAddr := linePeer(t, &agentLine)
	echo := testutil.UDPEcho(t, "echo: ")
	deadTCP, deadUDP := closedAddr(t, "tcp"), closedAddr(t, "udp")
	setAgent := func(s string) func() { return func() { agentLine.Store(&s) } }

	for _, tc := range []struct {
		desc   string
		setup  func()
		spec   health.Spec
		ok     bool
		result string // substring of Desc
		code   int
	}{
		{desc: "tcp connects", spec: spec("tcp", web.addr(), nil), ok: true, result: "L4OK"},
		{desc: "tcp refused", spec: spec("tcp", deadTCP, nil), result: "connection refused"},
		{desc: "tcp check_port", spec: spec("tcp", deadTCP, func(s *health.Spec) { s.CheckPort = portOf(t, web.addr()) }), ok: true},
		{desc: "http 200", spec: spec("http", web.addr(), nil), ok: true, result: "HTTP 200", code: 200},
		{desc: "http 500", setup: func() { web.status.Store(500) }, spec: spec("http", web.addr(), nil), result: "HTTP 500", code: 500},
		{desc: "http 204 in a list", setup: func() { web.status.Store(204) },
			spec: spec("http", web.addr(), func(s *health.Spec) { s.ExpectStatus, _ = conf.ParseStatusSet("200,204") }), ok: true, code: 204},
		{desc: "http 302 out of a list", setup: func() { web.status.Store(302) },
			spec: spec("http", web.addr(), func(s *health.Spec) { s.ExpectStatus, _ = conf.ParseStatusSet("200,204") }), result: "HTTP 302"},
		{desc: "http body found", setup: func() { web.status.Store(200) },
			spec: spec("http", web.addr(), func(s *health.Spec) { s.ExpectBody = "good" }), ok: true},
		{desc: "http body missing", spec: spec("http", web.addr(), func(s *health.Spec) { s.ExpectBody = "ready" }), result: `body lacks "ready"`},
		{desc: "http refused", spec: spec("http", deadTCP, nil), result: "connection refused"},
		{desc: "dns NOERROR", spec: spec("dns", dnsAddr, func(s *health.Spec) { s.QueryName = "svc.test." }), ok: true, result: "DNS NOERROR"},
		{desc: "dns SERVFAIL", setup: func() { rcode.Store(dns.RcodeServerFailure) }, spec: spec("dns", dnsAddr, nil), result: "DNS SERVFAIL", code: dns.RcodeServerFailure},
		{desc: "agent drain", setup: setAgent("drain\n"), spec: spec("agent", agentAddr, nil), ok: true, result: "agent: drain"},
		{desc: "agent 50% no newline", setup: setAgent("50%"), spec: spec("agent", agentAddr, nil), ok: true, result: "agent: 50%"},
		{desc: "agent down", setup: setAgent("down\n"), spec: spec("agent", agentAddr, nil), result: "agent: down"},
		{desc: "agent nonsense", setup: setAgent("banana\n"), spec: spec("agent", agentAddr, nil), result: `unknown word "banana"`},
		{desc: "agent port", setup: setAgent("up 75%\n"),
			spec: spec("agent", deadTCP, func(s *health.Spec) { s.AgentPort = portOf(t, agentAddr) }), ok: true, result: "agent: up 75%"},
		{desc: "udp echo", spec: spec("udp", echo, func(s *health.Spec) { s.Send = "ping"; s.ExpectBody = "echo: ping" }), ok: true, result: "UDP reply"},
		{desc: "udp wrong reply", spec: spec("udp", echo, func(s *health.Spec) { s.Send = "ping"; s.ExpectBody = "pong" }), result: `lacks "pong"`},
		{desc: "udp nobody there", spec: spec("udp", deadUDP, func(s *health.Spec) { s.Send = "ping"; s.Timeout = 300 * time.Millisecond }), result: "connection refused"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			if tc.setup != nil {
				tc.setup()
			}
			r := health.Probe(context.Background(), &tc.spec)
			if r.OK != tc.ok || !strings.Contains(r.Desc, tc.result) || (tc.code != 0 && r.Code != tc.code) {
				t.Errorf("result = %+v, want ok=%v desc containing %q code %d", r, tc.ok, tc.result, tc.code)
			}
			if r.Duration <= 0 || r.At.IsZero() {
				t.Errorf("duration %v at %v", r.Duration, r.At)
			}
		})
	}
}

func TestHTTPCheckRequest(t *testing.T) {
	web := newHTTPPeer(t)
	s := spec("http", web.addr(), func(s *health.Spec) { s.Method = "HEAD"; s.Path = "/healthz"; s.Host = "app.example.com" })
	if r := health.Probe(context.Background(), &s); !r.OK {
		t.Fatalf("result %+v", r)
	}
	if h, m := *web.host.Load(), *web.method.Load(); h != "app.example.com" || m != "HEAD" {
		t.Errorf("server saw Host %q method %q", h, m)
	}
}

func TestHTTPCheckTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-release }))
	defer srv.Close()
	defer close(release)
	s := spec("http", srv.Listener.Addr().String(), func(s *health.Spec) { s.Timeout = 100 * time.Millisecond })
	r := health.Probe(context.Background(), &s)
	if r.OK || r.Desc != "timeout" || r.Duration < 100*time.Millisecond || r.Duration > 2*time.Second {
		t.Errorf("result %+v", r)
	}
}

// The backend's send_proxy: a server that requires a PROXY header accepts
// the checks.
func TestChecksSendProxyHeader(t *testing.T) {
	for _, v := range []conf.ProxyVersion{conf.ProxyV1, conf.ProxyV2} {
		t.Run(v.String(), func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			pl := &proxyproto.Listener{Listener: ln, ConnPolicy: func(proxyproto.ConnPolicyOptions) (proxyproto.Policy, error) {
				return proxyproto.REQUIRE, nil
			}}
			var headers atomic.Int32
			srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(204)
			}), ConnState: func(c net.Conn, st http.ConnState) {
				if pc, ok := c.(*proxyproto.Conn); ok && st == http.StateActive && pc.ProxyHeader() != nil {
					headers.Add(1)
				}
			}}
			go srv.Serve(pl)
			defer srv.Close()
			s := spec("http", ln.Addr().String(), nil)
			s.SendProxy = v
			if r := health.Probe(context.Background(), &s); !r.OK {
				t.Fatalf("with %s header: %+v", v, r)
			}
			if headers.Load() != 1 {
				t.Errorf("server saw %d PROXY headers, want 1", headers.Load())
			}
			s.SendProxy = conf.ProxyNone
			if r := health.Probe(context.Background(), &s); r.OK {
				t.Errorf("without a header the server should refuse: %+v", r)
			}
		})
	}
}

func TestParseAgent(t *testing.T) {
	for _, tc := range []struct {
		line string
		want health.AgentReply
		bad  bool
	}{
		{line: "up\n", want: health.AgentReply{Health: "up", Weight: -1}},
		{line: "drain", want: health.AgentReply{Admin: conf.AdminDrain, HasAdmin: true, Weight: -1}},
		{line: "MAINT\r\n", want: health.AgentReply{Admin: conf.AdminMaint, HasAdmin: true, Weight: -1}},
		{line: "ready,up 75%", want: health.AgentReply{Health: "up", Admin: conf.AdminReady, HasAdmin: true, Weight: 75}},
		{line: "50%", want: health.AgentReply{Weight: 50}},
		{line: "stopped", want: health.AgentReply{Health: "down", Weight: -1}},
		{line: "", bad: true},
		{line: "150%", bad: true},
		{line: "up sideways", bad: true},
	} {
		got, err := health.ParseAgent(tc.line)
		if (err != nil) != tc.bad || (!tc.bad && got != tc.want) {
			t.Errorf("ParseAgent(%q) = %+v, %v; want %+v bad=%v", tc.line, got, err, tc.want, tc.bad)
		}
	}
}

// reports collects a checker's reports.
type reports struct {
	ch   chan health.Report
	done chan struct{}
}

func newReports() *reports {
	return &reports{ch: make(chan health.Report, 64), done: make(chan struct{})}
}

func (r *reports) Report(rep health.Report) {
	select {
	case r.ch <- rep:
	case <-r.done:
	}
}

// next waits for the next report, failing the test after 5s.
func (r *reports) next(t *testing.T) health.Report {
	t.Helper()
	select {
	case rep := <-r.ch:
		return rep
	case <-time.After(5 * time.Second):
		t.Fatal("no check report within 5s")
		return health.Report{}
	}
}

func start(t *testing.T, s health.Spec, up bool) (*health.Checker, *reports) {
	r := newReports()
	c := health.New(s, up, r)
	c.Start()
	t.Cleanup(func() { close(r.done); c.Stop() })
	return c, r
}

// The rise/fall counting against a server that fails and recovers.
func TestRiseAndFall(t *testing.T) {
	web := newHTTPPeer(t)
	_, r := start(t, spec("http", web.addr(), nil), true) // rise 2, fall 3
	if rep := r.next(t); !rep.Up || rep.Changed || rep.N != 0 {
		t.Fatalf("first report %+v", rep)
	}
	web.status.Store(503)
	// Reports already under way may still see 200: wait for the first 503.
	rep := r.next(t)
	for i := 0; rep.Result.OK && i < 10; i++ {
		rep = r.next(t)
	}
	for i, want := range []health.Report{{Up: true, N: 1, Need: 3}, {Up: true, N: 2, Need: 3}, {Up: false, Changed: true}} {
		if i > 0 {
			rep = r.next(t)
		}
		if rep.Up != want.Up || rep.Changed != want.Changed || rep.N != want.N || rep.Need != want.Need || rep.Result.Desc != "HTTP 503" {
			t.Fatalf("report %d = %+v, want %+v", i, rep, want)
		}
	}
	if rep := r.next(t); rep.Up || rep.Changed || rep.N != 0 {
		t.Fatalf("settled down: %+v", rep)
	}
	web.status.Store(200)
	rep = r.next(t)
	for i := 0; !rep.Result.OK && i < 10; i++ {
		rep = r.next(t)
	}
	if rep.Up || rep.N != 1 || rep.Need != 2 {
		t.Fatalf("rising: %+v", rep)
	}
	if rep := r.next(t); !rep.Up || !rep.Changed {
		t.Fatalf("up again: %+v", rep)
	}
}

func TestInitDownAndForceDown(t *testing.T) {
	web := newHTTPPeer(t)
	c, r := start(t, spec("tcp", web.addr(), func(s *health.Spec) { s.Rise = 1 }), false)
	if rep := r.next(t); !rep.Up || !rep.Changed {
		t.Fatalf("init down, rise 1: %+v", rep)
	}
	c.ForceDown()
	// The report after ForceDown counts from down; a check already under
	// way when it was called may be the one.
	if rep := r.next(t); !rep.Up || !rep.Changed {
		t.Fatalf("after ForceDown, one passing check (rise 1) brings it back: %+v", rep)
	}
}

// A slow server and an interval much shorter than a check: checks of one
// server run one after another, never two at a time. The server is raw
// TCP: when it accepts a check connection it looks at the previous one,
// which must already be closed by the checker (a read on it fails at once
// instead of timing out). Every other check outlives its timeout.
func TestChecksNeverOverlap(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var overlaps, accepted atomic.Int32
	go func() {
		var prev net.Conn
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if prev != nil {
				prev.SetReadDeadline(time.Now().Add(5 * time.Millisecond)) // an expired one would not even try
				if _, err := prev.Read(make([]byte, 1)); isTimeout(err) {
					overlaps.Add(1) // the previous check is still open
				}
				prev.Close()
			}
			prev = c
			n := accepted.Add(1)
			go func() {
				// Read the request head, then answer slowly, or never.
				br := bufio.NewReader(c)
				for {
					l, err := br.ReadString('\n')
					if err != nil || l == "\r\n" {
						break
					}
				}
				if n%2 == 0 {
					return // no answer: the check times out
				}
				time.Sleep(30 * time.Millisecond) // a slow answer within the timeout
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
			}()
		}
	}()
	s := spec("http", ln.Addr().String(), func(s *health.Spec) {
		s.Interval, s.IntervalDown, s.Timeout, s.Fall, s.Rise = 10*time.Millisecond, 10*time.Millisecond, 60*time.Millisecond, 100, 100
	})
	_, r := start(t, s, true)
	var timeouts, passes int
	for range 10 {
		rep := r.next(t)
		if rep.Result.OK {
			passes++
		} else {
			timeouts++
		}
		if rep.Result.Duration > s.Timeout+50*time.Millisecond {
			t.Errorf("a check took %v, over its timeout %v", rep.Result.Duration, s.Timeout)
		}
	}
	if overlaps.Load() != 0 {
		t.Errorf("%d checks started while the previous one of the same server was open", overlaps.Load())
	}
	if timeouts == 0 || passes == 0 {
		t.Errorf("%d timeouts, %d passes: the test did not exercise both", timeouts, passes)
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

func TestStopDuringCheck(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	r := newReports()
	c := health.New(spec("http", srv.Listener.Addr().String(), func(s *health.Spec) { s.Timeout = 10 * time.Second; s.Interval = 10 * time.Millisecond }), true, r)
	c.Start()
	stopped := make(chan struct{})
	time.AfterFunc(100*time.Millisecond, func() { c.Stop(); close(stopped) })
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("Stop waited for the whole check timeout")
	}
	select {
	case rep := <-r.ch:
		t.Errorf("a check cut by Stop was reported: %+v", rep)
	default:
	}
}

// BenchmarkCheck1000Servers runs tcp checks of 1,000 servers every second
// for a few seconds and reports the CPU the process used, as a percentage
// of one core. The servers are listeners that never accept: the kernel
// completes the handshake, so what is measured is the checker (and the
// kernel's loopback work on its behalf), not a peer's accept loop.
//
//	go test -run XXX -bench Check1000 -benchtime 1x ./health
func BenchmarkCheck1000Servers(b *testing.B) {
	const servers = 1000
	window := 5 * time.Second
	lns := make([]net.Listener, servers)
	for i := range lns {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		defer ln.Close()
		lns[i] = ln
	}
	var checks, fails atomic.Int64
	target := countTarget{&checks, &fails}
	for range b.N {
		checks.Store(0)
		fails.Store(0)
		cs := make([]*health.Checker, servers)
		for i, ln := range lns {
			s := spec("tcp", ln.Addr().String(), func(s *health.Spec) {
				s.Interval, s.IntervalDown, s.Timeout = time.Second, time.Second, time.Second
			})
			cs[i] = health.New(s, true, target)
		}
		// Let the first round start (spread over one interval), then
		// measure whole rounds.
		for _, c := range cs {
			c.Start()
		}
		time.Sleep(time.Second)
		u0, t0 := cpuTime(), time.Now()
		n0 := checks.Load()
		time.Sleep(window)
		u1, t1 := cpuTime(), time.Now()
		n1 := checks.Load()
		for _, c := range cs {
			c.Stop()
		}
		pct := 100 * float64(u1-u0) / float64(t1.Sub(t0))
		rate := float64(n1-n0) / t1.Sub(t0).Seconds()
		b.ReportMetric(pct, "%cpu")
		b.ReportMetric(rate, "checks/s")
		b.ReportMetric(float64(fails.Load()), "failed")
		b.Logf("%d servers, %.0f checks/s: %.2f%% of one core (%d failed)", servers, rate, pct, fails.Load())
	}
}

type countTarget struct{ checks, fails *atomic.Int64 }

func (c countTarget) Report(r health.Report) {
	c.checks.Add(1)
	if !r.Result.OK {
		c.fails.Add(1)
	}
}

// cpuTime is the CPU (user and system) the process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// The shared tcp loop: a server whose listen queue is full never answers a
// SYN, so its checks time out; a refused one fails at once; Stop ends the
// reports.
func TestTCPLoopTimeoutRefusedAndStop(t *testing.T) {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, _ := syscall.Getsockname(fd)
	full := fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
	// Fill the queue: connections that are never accepted.
	for i := 0; i < 8; i++ {
		c, err := net.DialTimeout("tcp", full, 100*time.Millisecond)
		if err != nil {
			break // the queue is full
		}
		defer c.Close()
	}
	_, r := start(t, spec("tcp", full, func(s *health.Spec) { s.Timeout = 50 * time.Millisecond; s.Interval = 30 * time.Millisecond }), true)
	rep := r.next(t)
	if rep.Result.OK || rep.Result.Desc != "timeout" || rep.Result.Duration < 50*time.Millisecond || rep.Result.Duration > time.Second {
		t.Errorf("check of a server that never answers: %+v", rep.Result)
	}

	c2, r2 := start(t, spec("tcp", closedAddr(t, "tcp"), nil), true)
	if rep := r2.next(t); rep.Result.OK || rep.Result.Desc != "connection refused" {
		t.Errorf("refused: %+v", rep.Result)
	}
	c2.Stop()
	for len(r2.ch) > 0 {
		<-r2.ch
	}
	// No report after Stop returned: one more interval and a half.
	select {
	case rep := <-r2.ch:
		t.Errorf("report after Stop: %+v", rep)
	case <-time.After(30 * time.Millisecond):
	}
}

// Many servers on the shared loop, each checked at its own pace, each
// seen by its own target.
func TestTCPLoopManyServers(t *testing.T) {
	web := newHTTPPeer(t)
	dead := closedAddr(t, "tcp")
	var rs []*reports
	for i := range 40 {
		addr := web.addr()
		if i%2 == 1 {
			addr = dead
		}
		_, r := start(t, spec("tcp", addr, func(s *health.Spec) { s.Interval = 20 * time.Millisecond }), true)
		rs = append(rs, r)
	}
	for i, r := range rs {
		for range 3 {
			if rep := r.next(t); rep.Result.OK != (i%2 == 0) {
				t.Fatalf("server %d: %+v", i, rep.Result)
			}
		}
	}
}
