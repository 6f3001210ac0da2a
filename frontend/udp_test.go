package frontend_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/pires/go-proxyproto"

	"sluice/conf"
	"sluice/engine"
	"sluice/internal/testutil"
)

// dnsServer is a real miekg/dns server on 127.0.0.1 that answers every A
// question with its own address 10.0.0.ID, so a client can tell which one
// answered.
type dnsServer struct {
	id      int
	addr    string
	queries atomic.Int64
	srv     *dns.Server
}

func startDNS(t *testing.T, id int) *dnsServer {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := &dnsServer{id: id, addr: pc.LocalAddr().String()}
	started := make(chan struct{})
	d.srv = &dns.Server{PacketConn: pc, NotifyStartedFunc: func() { close(started) },
		Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
			d.queries.Add(1)
			m := new(dns.Msg)
			m.SetReply(r)
			for _, q := range r.Question {
				if q.Qtype == dns.TypeA {
					m.Answer = append(m.Answer, &dns.A{
						Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
						A:   net.IPv4(10, 0, 0, byte(d.id)),
					})
				}
			}
			w.WriteMsg(m)
		})}
	go d.srv.ActivateAndServe()
	select {
	case <-started:
	case <-time.After(5 * time.Second):
		t.Fatal("dns server did not start")
	}
	t.Cleanup(func() { d.srv.Shutdown() })
	return d
}

// freeUDP returns a loopback UDP address free at the time of the call.
func freeUDP(t *testing.T, host string) string {
	t.Helper()
	pc, err := net.ListenPacket("udp4", host+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	return pc.LocalAddr().String()
}

// startUDP runs config src in-process; "{{FRONT}}" becomes a free UDP
// loopback address, returned with the engine.
func startUDP(t *testing.T, src string) (*engine.Engine, string) {
	t.Helper()
	// Flows only end by going idle: give them no grace at the end.
	return testutil.StartAt(t, src, freeUDP(t, "127.0.0.1"), 50*time.Millisecond)
}

func udpConfig(backendExtra, frontExtra string, servers ...*dnsServer) string {
	var b strings.Builder
	fmt.Fprintf(&b, "[frontend.dns]\nmode = \"udp\"\nbind = [\"{{FRONT}}\"]\ndefault_backend = \"dns\"\n%s\n\n", frontExtra)
	fmt.Fprintf(&b, "[backend.dns]\n%s\n", backendExtra)
	for _, s := range servers {
		fmt.Fprintf(&b, "\n[[backend.dns.server]]\nname = \"s%d\"\naddress = %q\n", s.id, s.addr)
	}
	return b.String()
}

// dnsClient is one client socket: one flow.
type dnsClient struct {
	t  *testing.T
	co *dns.Conn
}

func newClient(t *testing.T, local, front string) *dnsClient {
	t.Helper()
	la, _ := net.ResolveUDPAddr("udp4", local+":0")
	ra, _ := net.ResolveUDPAddr("udp4", front)
	c, err := net.DialUDP("udp4", la, ra)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &dnsClient{t: t, co: &dns.Conn{Conn: c}}
}

// ask sends an A query for name and returns the id of the server that
// answered, checking that the answer is for the question asked.
func (c *dnsClient) ask(name string) int {
	c.t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeA)
	c.co.SetDeadline(time.Now().Add(3 * time.Second))
	if err := c.co.WriteMsg(m); err != nil {
		c.t.Fatal(err)
	}
	r, err := c.co.ReadMsg()
	if err != nil {
		c.t.Fatalf("query %s: %v", name, err)
	}
	if r.Id != m.Id || len(r.Answer) != 1 || r.Answer[0].Header().Name != dns.Fqdn(name) {
		c.t.Fatalf("query %s: wrong answer %v", name, r)
	}
	return int(r.Answer[0].(*dns.A).A.To4()[3])
}

// waitFor polls cond until it holds or the timeout passes.
func TestUDPRoundRobinPerFlow(t *testing.T) {
	s1, s2 := startDNS(t, 1), startDNS(t, 2)
	eng, front := startUDP(t, udpConfig(`balance = "roundrobin"`, "", s1, s2))
	var got []int
	for i := range 4 {
		c := newClient(t, "127.0.0.1", front)
		first := c.ask(fmt.Sprintf("q%d.example.", i))
		for j := range 3 { // later datagrams of a flow stay on its server
			if id := c.ask(fmt.Sprintf("q%d-%d.example.", i, j)); id != first {
				t.Fatalf("flow %d: query %d went to s%d, its flow is on s%d", i, j, id, first)
			}
		}
		got = append(got, first)
	}
	if got[0] == got[1] || got[0] != got[2] || got[1] != got[3] {
		t.Errorf("flows went to %v, want alternating servers", got)
	}
	f := eng.Front.Frontends[0]
	if n := f.Counters.Sessions.Load(); n != 4 {
		t.Errorf("sessions = %d, want 4 flows", n)
	}
	// A reply is counted just after it is sent: the client may be quicker.
	testutil.WaitFor(t, "16 datagrams each way", 5*time.Second, func() bool {
		return f.UDP.DatagramsIn.Load() == 16 && f.UDP.DatagramsOut.Load() == 16
	})
	if s1.queries.Load()+s2.queries.Load() != 16 {
		t.Errorf("servers answered %d+%d queries, want 16", s1.queries.Load(), s2.queries.Load())
	}
	be := eng.Backends["dns"]
	for _, s := range be.Servers() {
		if s.Counters.Sessions.Load() != 2 || s.Counters.BytesIn.Load() == 0 || s.Counters.BytesOut.Load() == 0 {
			t.Errorf("server %s: sessions %d, bytes in %d out %d", s.Name, s.Counters.Sessions.Load(), s.Counters.BytesIn.Load(), s.Counters.BytesOut.Load())
		}
	}
}

func TestUDPIPHashSticky(t *testing.T) {
	s1, s2 := startDNS(t, 1), startDNS(t, 2)
	_, front := startUDP(t, udpConfig(`balance = "iphash"`, "", s1, s2))
	seen := map[int]bool{}
	for ip := 1; ip <= 8; ip++ {
		local := fmt.Sprintf("127.0.0.%d", ip)
		first := newClient(t, local, front).ask("a.example.")
		seen[first] = true
		for k := range 3 { // new flows (new ports) from the same address
			if id := newClient(t, local, front).ask("b.example."); id != first {
				t.Fatalf("client %s: flow %d went to s%d, first to s%d", local, k+2, id, first)
			}
		}
	}
	if len(seen) != 2 {
		t.Logf("all 8 client addresses hashed to one server (%v); stickiness still holds", seen)
	}
}

func TestUDPServerDownMovesFlows(t *testing.T) {
	s1, s2 := startDNS(t, 1), startDNS(t, 2)
	eng, front := startUDP(t, udpConfig(`balance = "roundrobin"`, "", s1, s2))
	be := eng.Backends["dns"]
	var clients []*dnsClient
	on := map[int][]*dnsClient{}
	for range 4 {
		c := newClient(t, "127.0.0.1", front)
		id := c.ask("x.example.")
		on[id] = append(on[id], c)
		clients = append(clients, c)
	}
	if len(on[1]) != 2 || len(on[2]) != 2 {
		t.Fatalf("flows per server: s1 %d, s2 %d", len(on[1]), len(on[2]))
	}
	be.Server("s1").SetUp(false)
	before := s1.queries.Load()
	for _, c := range clients { // flows on s1 move on their next datagram
		if id := c.ask("y.example."); id != 2 {
			t.Fatalf("a flow went to s%d after s1 went down", id)
		}
	}
	for range 3 { // new flows too
		if id := newClient(t, "127.0.0.1", front).ask("z.example."); id != 2 {
			t.Fatalf("a new flow went to s%d after s1 went down", id)
		}
	}
	if n := s1.queries.Load(); n != before {
		t.Errorf("s1 got %d queries while down", n-before)
	}
	if n := eng.Front.Frontends[0].UDP.Moved.Load(); n != 2 {
		t.Errorf("moved = %d, want 2", n)
	}
	be.Server("s1").SetUp(true)
	seen := map[int]bool{}
	for range 4 {
		seen[newClient(t, "127.0.0.1", front).ask("w.example.")] = true
	}
	if !seen[1] {
		t.Errorf("s1 got no new flow after coming back up")
	}
}

func TestUDPFlowExpiry(t *testing.T) {
	s1 := startDNS(t, 1)
	eng, front := startUDP(t, udpConfig("", `timeout_udp = "150ms"`, s1))
	f := eng.Front.Frontends[0]
	c := newClient(t, "127.0.0.1", front)
	c.ask("a.example.")
	if n := f.UDPProxy().Flows(); n != 1 {
		t.Fatalf("flows = %d, want 1", n)
	}
	t0 := time.Now()
	testutil.WaitFor(t, "the idle flow to expire", 5*time.Second, func() bool { return f.UDPProxy().Flows() == 0 })
	if d := time.Since(t0); d < 100*time.Millisecond {
		t.Errorf("flow expired after %s, before timeout_udp", d)
	}
	if f.UDP.Expired.Load() != 1 || f.Counters.Current.Load() != 0 {
		t.Errorf("expired = %d, current = %d", f.UDP.Expired.Load(), f.Counters.Current.Load())
	}
	testutil.WaitFor(t, "the server's flow to be released", 5*time.Second, func() bool { return eng.Backends["dns"].Server("s1").Active() == 0 })
	c.ask("b.example.") // the same client opens a new flow
	if n := f.Counters.Sessions.Load(); n != 2 {
		t.Errorf("sessions = %d, want 2", n)
	}
}

func TestUDPMaxFlowsEvictsOldest(t *testing.T) {
	s1 := startDNS(t, 1)
	eng, front := startUDP(t, udpConfig("", "max_flows = 2", s1))
	f := eng.Front.Frontends[0]
	a, b, c := newClient(t, "127.0.0.1", front), newClient(t, "127.0.0.1", front), newClient(t, "127.0.0.1", front)
	a.ask("a.example.")
	b.ask("b.example.")
	a.ask("a2.example.") // b is now the oldest idle
	c.ask("c.example.")
	if n := f.UDPProxy().Flows(); n != 2 {
		t.Errorf("flows = %d, want 2 (max_flows)", n)
	}
	if n := f.UDP.Evicted.Load(); n != 1 {
		t.Errorf("evicted = %d, want 1", n)
	}
	a.ask("a3.example.") // a survived: no new flow
	if n := f.Counters.Sessions.Load(); n != 3 {
		t.Errorf("sessions = %d, want 3 (a's flow was kept)", n)
	}
	b.ask("b2.example.") // b was evicted: a new flow, evicting c
	if n, e := f.Counters.Sessions.Load(), f.UDP.Evicted.Load(); n != 4 || e != 2 {
		t.Errorf("sessions = %d, evicted = %d, want 4 and 2", n, e)
	}
}

func TestUDPResponsesEndsFlow(t *testing.T) {
	s1, s2 := startDNS(t, 1), startDNS(t, 2)
	eng, front := startUDP(t, udpConfig("responses = 1", "", s1, s2))
	f := eng.Front.Frontends[0]
	c := newClient(t, "127.0.0.1", front)
	var got []int
	for i := range 4 {
		got = append(got, c.ask(fmt.Sprintf("r%d.example.", i)))
	}
	// One client port, but every query is its own flow: round-robin per query.
	if got[0] == got[1] || got[0] != got[2] || got[1] != got[3] {
		t.Errorf("queries went to %v, want alternating servers", got)
	}
	testutil.WaitFor(t, "flows to end", 5*time.Second, func() bool { return f.UDPProxy().Flows() == 0 })
	if n, done := f.Counters.Sessions.Load(), f.UDP.Completed.Load(); n != 4 || done != 4 {
		t.Errorf("sessions = %d, completed = %d, want 4 and 4", n, done)
	}
}

func TestUDPReplyFromWildcardBind(t *testing.T) {
	s1 := startDNS(t, 1)
	// The frontend binds the wildcard address; the client sends to
	// 127.0.0.2, which is not the address the kernel would pick for a
	// reply to 127.0.0.1 on its own.
	port := netip.MustParseAddrPort(freeUDP(t, "127.0.0.1")).Port()
	src := udpConfig("", "", s1)
	src = strings.Replace(src, `bind = ["{{FRONT}}"]`, fmt.Sprintf(`bind = ["0.0.0.0:%d"]`, port), 1)
	cfg, err := conf.Parse("wild.toml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	eng, err := engine.Start(cfg, nil, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		eng.Shutdown(ctx)
	})
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	for _, dst := range []string{"127.0.0.2", "127.0.0.3"} {
		m := new(dns.Msg)
		m.SetQuestion("src.example.", dns.TypeA)
		q, _ := m.Pack()
		to := netip.AddrPortFrom(netip.MustParseAddr(dst), port)
		if _, err := pc.WriteToUDPAddrPort(q, to); err != nil {
			t.Fatal(err)
		}
		pc.SetReadDeadline(time.Now().Add(3 * time.Second))
		buf := make([]byte, 512)
		n, from, err := pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("no reply to a query sent to %s: %v", to, err)
		}
		if from.Addr().Unmap() != to.Addr() || from.Port() != port {
			t.Errorf("reply to a query sent to %s came from %s", to, from)
		}
		r := new(dns.Msg)
		if err := r.Unpack(buf[:n]); err != nil || r.Id != m.Id {
			t.Errorf("bad reply: %v %v", r, err)
		}
	}
}

func TestUDPLargeDatagrams(t *testing.T) {
	echo, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { echo.Close() })
	go func() {
		buf := make([]byte, 1<<16)
		for {
			n, from, err := echo.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			echo.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	src := fmt.Sprintf("[frontend.e]\nmode = \"udp\"\nbind = [\"{{FRONT}}\"]\ndefault_backend = \"e\"\n\n[backend.e]\n[[backend.e.server]]\naddress = %q\n", echo.LocalAddr())
	_, front := startUDP(t, src)
	ra, _ := net.ResolveUDPAddr("udp4", front)
	c, err := net.DialUDP("udp4", nil, ra)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadBuffer(1 << 20)
	for _, size := range []int{1, 1400, 9000, 65507} {
		msg := bytes.Repeat([]byte{byte(size)}, size)
		c.SetDeadline(time.Now().Add(3 * time.Second))
		if _, err := c.Write(msg); err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		buf := make([]byte, 1<<16)
		n, err := c.Read(buf)
		if err != nil || !bytes.Equal(buf[:n], msg) {
			t.Fatalf("size %d: got %d bytes, err %v", size, n, err)
		}
	}
}

// srvZone answers SRV questions with one record per target server (all on
// 127.0.0.1, told apart by port) and A questions with 127.0.0.1.
func srvZone(t *testing.T, targets ...*dnsServer) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	srv := &dns.Server{PacketConn: pc, NotifyStartedFunc: func() { close(started) },
		Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
			m := new(dns.Msg)
			m.SetReply(r)
			q := r.Question[0]
			switch q.Qtype {
			case dns.TypeSRV:
				for _, d := range targets {
					port := netip.MustParseAddrPort(d.addr).Port()
					m.Answer = append(m.Answer, &dns.SRV{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeSRV, Class: dns.ClassINET, Ttl: 30},
						Priority: 1, Weight: 1, Port: port, Target: fmt.Sprintf("s%d.test.", d.id)})
				}
			case dns.TypeA:
				m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 30}, A: net.IPv4(127, 0, 0, 1)})
			}
			w.WriteMsg(m)
		})}
	go srv.ActivateAndServe()
	select {
	case <-started:
	case <-time.After(5 * time.Second):
		t.Fatal("dns server did not start")
	}
	t.Cleanup(func() { srv.Shutdown() })
	return pc.LocalAddr().String()
}

func TestUDPBackendFromDNSDiscovery(t *testing.T) {
	s1, s2 := startDNS(t, 1), startDNS(t, 2)
	zone := srvZone(t, s1, s2)
	src := fmt.Sprintf("[frontend.dns]\nmode = \"udp\"\nbind = [\"{{FRONT}}\"]\ndefault_backend = \"dns\"\n\n"+
		"[backend.dns]\nresponses = 1\n\n[backend.dns.dns]\nname = \"_dns._udp.test.\"\nresolvers = [%q]\ninterval = \"1m\"\n", zone)
	eng, front := startUDP(t, src)
	be := eng.Backends["dns"]
	testutil.WaitFor(t, "discovery to fill the pool", 5*time.Second, func() bool { return len(be.Servers()) == 2 })
	c := newClient(t, "127.0.0.1", front)
	seen := map[int]bool{}
	for i := range 4 {
		seen[c.ask(fmt.Sprintf("d%d.example.", i))] = true
	}
	if !seen[1] || !seen[2] {
		t.Errorf("queries reached %v, want both discovered servers", seen)
	}
}

func TestUDPSendProxyV2(t *testing.T) {
	// The server reads the PROXY v2 header in front of each datagram and
	// answers with the addresses it carried and the payload after it.
	srv, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	go func() {
		buf := make([]byte, 1<<16)
		for {
			n, from, err := srv.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			reply := "no header"
			h, err := proxyproto.Read(bufio.NewReader(bytes.NewReader(buf[:n])))
			if err == nil {
				src, dst, _ := h.UDPAddrs()
				reply = fmt.Sprintf("%#x %s %s %s", h.TransportProtocol, src, dst, buf[n-5:n])
			}
			srv.WriteToUDPAddrPort([]byte(reply), from)
		}
	}()
	src := fmt.Sprintf("[frontend.p]\nmode = \"udp\"\nbind = [\"{{FRONT}}\"]\ndefault_backend = \"p\"\n\n"+
		"[backend.p]\nsend_proxy = \"v2\"\n[[backend.p.server]]\naddress = %q\n", srv.LocalAddr())
	_, front := startUDP(t, src)
	ra, _ := net.ResolveUDPAddr("udp4", front)
	c, err := net.DialUDP("udp4", nil, ra)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	for _, payload := range []string{"hello", "again"} { // every datagram carries it
		if _, err := c.Write([]byte(payload)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 512)
		n, err := c.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf("%#x %s %s %s", proxyproto.UDPv4, c.LocalAddr(), front, payload)
		if got := string(buf[:n]); got != want {
			t.Errorf("server saw %q, want %q", got, want)
		}
	}
}
