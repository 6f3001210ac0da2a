package frontend_test

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"sluice/internal/fdlimit"
	"sluice/internal/testutil"
)

// lowerFDLimit sets this test binary's descriptor limit to what it has open
// plus room, for the rest of the test, and returns the limit.
func lowerFDLimit(t *testing.T, room uint64) uint64 {
	t.Helper()
	open, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd:", err)
	}
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	limit := uint64(len(open)) + room
	if limit > old.Cur {
		t.Skipf("descriptor limit %d is already below %d", old.Cur, limit)
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: limit, Max: old.Max}); err != nil {
		t.Fatal(err)
	}
	// Registered first, so it runs last: after the engine has stopped.
	t.Cleanup(func() { syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old) })
	return limit
}

// spoofer sends datagrams from any 127/8 source address through one socket:
// IP_PKTINFO's spec_dst sets the source of each datagram, and the whole
// 127/8 is local on Linux. It stands for a flood of (spoofed) sources
// without a socket per source in the test.
type spoofer struct {
	c  *net.UDPConn
	to netip.AddrPort
}

func newSpoofer(t *testing.T, to string) *spoofer {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &spoofer{c: c, to: netip.MustParseAddrPort(to)}
}

func (s *spoofer) send(t *testing.T, from netip.Addr) {
	t.Helper()
	oob := unix.PktInfo4(&unix.Inet4Pktinfo{Spec_dst: from.As4()})
	if _, _, err := s.c.WriteMsgUDPAddrPort([]byte("flood"), oob, s.to); err != nil {
		t.Fatalf("send from %s: %v", from, err)
	}
}

// Issue 15: datagrams from many source addresses used to open a flow (a
// socket) each with no limit, until the descriptors ran out and every TCP
// frontend of the worker failed accept with EMFILE. Now the flows of a udp
// frontend without max_flows hold at most their share of the descriptor
// limit (the oldest flows are evicted past it), one address holds at most
// max_flows_per_source, and a TCP frontend of the same worker accepts and
// proxies through the whole flood.
func TestUDPFloodKeepsTCPAccepting(t *testing.T) {
	limit := lowerFDLimit(t, 600)
	echo := testutil.UDPEcho(t, "")
	tcpBE := testutil.Serve(t, "be", testutil.Echo)
	tcpFront := testutil.FreeAddr(t)
	src := fmt.Sprintf(`[frontend.flood]
mode = "udp"
bind = ["{{FRONT}}"]
max_flows_per_source = 4
default_backend = "echo"
[backend.echo]
[[backend.echo.server]]
name = "e"
address = %q
[frontend.web]
bind = [%q]
default_backend = "be"
[[backend.be.server]]
name = "be"
address = %q
`, echo, tcpFront, tcpBE.Addr)
	eng, front := startUDP(t, src)
	f := eng.Front.Frontends[0]
	if f.Name != "flood" || f.UDPProxy() == nil {
		t.Fatalf("frontend 0 is %s", f.Name)
	}
	// The engine's plan: connections and flows fit in the limit together.
	budget := eng.FDs
	flows := budget.Flows["flood"]
	if got := f.UDPProxy().MaxFlows(); got != flows || len(budget.Warn) > 0 || budget.Limit != limit || fdlimit.Need(budget.MaxConn)+uint64(flows) > limit {
		t.Fatalf("max_flows %d, planned %d with maxconn %d under limit %d (%q)", got, flows, budget.MaxConn, limit, budget.Warn)
	}
	handled := func() uint64 { return f.UDP.DatagramsIn.Load() + f.UDP.Dropped.Load() }

	// One address, eight ports: four flows, four refused.
	one := netip.MustParseAddr("127.0.0.9")
	for range 8 {
		c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(one, 0)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if _, err := c.WriteToUDPAddrPort([]byte("hi"), netip.MustParseAddrPort(front)); err != nil {
			t.Fatal(err)
		}
	}
	testutil.WaitFor(t, "8 datagrams handled", 5*time.Second, func() bool { return handled() == 8 })
	if n, r := f.UDPProxy().Flows(), f.UDP.RefusedSource.Load(); n != 4 || r != 4 {
		t.Fatalf("one source, 8 ports: %d flows, %d refused; want 4 and 4 (max_flows_per_source)", n, r)
	}

	tcpRoundTrip := func(i int) {
		t.Helper()
		c := testutil.Dial(t, tcpFront)
		defer c.Close()
		line := fmt.Sprintf("during the flood %d\n", i)
		if _, err := c.Write([]byte(line)); err != nil {
			t.Fatal(err)
		}
		if got := testutil.ReadLine(t, bufio.NewReader(c)); got+"\n" != line {
			t.Fatalf("through the tcp frontend: %q, want %q", got, line)
		}
	}

	// The flood: ten times the flow budget in distinct source addresses,
	// in batches the listening socket's buffer holds, so that every
	// datagram is seen (and counted) by sluice.
	sp := newSpoofer(t, front)
	const batch = 50
	sources := 10 * flows
	sent := uint64(8)
	maxSeen := 0
	for i := 0; i < sources; i += batch {
		for j := i; j < min(i+batch, sources); j++ {
			sp.send(t, netip.AddrFrom4([4]byte{127, 1, byte(j >> 8), byte(j)}))
			sent++
		}
		testutil.WaitFor(t, "the batch to be handled", 5*time.Second, func() bool { return handled() == sent })
		maxSeen = max(maxSeen, f.UDPProxy().Flows())
		if i/batch%4 == 0 {
			tcpRoundTrip(i)
		}
	}
	tcpRoundTrip(sources)

	c := &f.UDP
	t.Logf("limit %d: maxconn %d, max_flows %d; %d sources: %d flows opened, %d evicted, refused %d full / %d socket / %d per source; most flows seen %d",
		limit, budget.MaxConn, flows, sources, f.Counters.Sessions.Load(), c.Evicted.Load(), c.RefusedFull.Load(), c.RefusedSocket.Load(), c.RefusedSource.Load(), maxSeen)
	if maxSeen > flows {
		t.Errorf("%d flows open at once, budget %d", maxSeen, flows)
	}
	if c.RefusedSocket.Load() != 0 {
		t.Errorf("%d flows found no socket: the budget does not fit the limit", c.RefusedSocket.Load())
	}
	// Every source past the budget either evicted an older flow or was
	// refused; nothing went over.
	opened := f.Counters.Sessions.Load()
	if over := c.Evicted.Load() + c.RefusedFull.Load(); over < uint64(sources+4-flows) || opened+c.RefusedFull.Load() != uint64(sources+4) {
		t.Errorf("%d sources (+4): %d flows opened, %d evicted, %d refused full; want every one past %d evicted or refused",
			sources, opened, c.Evicted.Load(), c.RefusedFull.Load(), flows)
	}
}

// A max_flows the descriptor limit cannot hold (the engine warns) ends in
// socket() failing: that flow is refused and counted, the server is not
// blamed, and the frontend serves again as soon as flows end.
func TestUDPNoSocketRefusesFlow(t *testing.T) {
	lowerFDLimit(t, 350)
	echo := testutil.UDPEcho(t, "")
	eng, front := startUDP(t, fmt.Sprintf(`[frontend.u]
mode = "udp"
bind = ["{{FRONT}}"]
max_flows = 100000
timeout_udp = "300ms"
default_backend = "echo"
[[backend.echo.server]]
name = "e"
address = %q
`, echo))
	f := eng.Front.Frontends[0]
	if len(eng.FDs.Warn) != 1 {
		t.Errorf("warnings %q, want one about max_flows", eng.FDs.Warn)
	}
	sp := newSpoofer(t, front)
	// max_flows is clamped to the budget planned at start; descriptors
	// that went elsewhere since (a lower limit now) leave flows without a
	// socket.
	lowerFDLimit(t, 20)
	sent := uint64(0)
	for i := 0; f.UDP.RefusedSocket.Load() == 0; i++ {
		if i == 2000 {
			t.Fatalf("no flow refused for want of a socket after %d sources (%d flows)", i, f.UDPProxy().Flows())
		}
		sp.send(t, netip.AddrFrom4([4]byte{127, 2, byte(i >> 8), byte(i)}))
		sent++
		if sent%50 == 0 {
			testutil.WaitFor(t, "the batch to be handled", 5*time.Second, func() bool {
				return f.UDP.DatagramsIn.Load()+f.UDP.Dropped.Load() == sent
			})
		}
	}
	if n := eng.Backends["echo"].Server("e").Counters.ConnErrors.Load(); n != 0 {
		t.Errorf("server blamed for %d connection errors", n)
	}
	testutil.WaitFor(t, "the flood's flows to expire", 10*time.Second, func() bool { return f.UDPProxy().Flows() == 0 })
	c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(front)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("after")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	if n, err := c.Read(buf); err != nil || string(buf[:n]) != "after" {
		t.Fatalf("after the flood: %q, %v", buf[:n], err)
	}
}
