// Package bgp proves three active-active sluice nodes behind a BGP router
// in network namespaces: the router (BIRD 2, examples/bgp/bird.conf) spreads
// flows over the nodes by ECMP; a node whose backend dies withdraws its
// route and new connections go to the others; an orderly stop of a node
// loses no request; a client of an iphash backend reaches the same server
// whichever node the router sends it to.
//
// Topology (every namespace and link is created here and deleted at the
// end; nothing is added to the host's own namespace):
//
//	cli 203.0.113.10, .20 to .25
//	 │ 203.0.113.0/24
//	rtr .1 / 192.0.2.1   BIRD 2, AS 65000, ECMP (fib_multipath_hash_policy=1)
//	 │ 192.0.2.0/24: bridge br0 in namespace br
//	 ├── n1 .11 ─┐ sluice, AS 65010, announces 198.51.100.10/32 (on lo);
//	 ├── n2 .12  ├ its own server on 127.0.0.1:8080 answering its name (web)
//	 ├── n3 .13 ─┘ and the shared servers, iphash (sticky)
//	 └── be .21   s1 :8081, s2 :8082, s3 :8083
//
// The client and the HTTP servers are this test binary run again in a
// helper mode (SLUICE_BGP_HELPER), so no other program is needed.
package bgp

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"sluice/internal/netlab"
)

const (
	service  = "198.51.100.10"
	rtrNodes = "192.0.2.1"
	rtrCli   = "203.0.113.1"
	cliIP    = "203.0.113.10"
	// stickyNet.20 to .25 are the iphash clients.
	stickyNet = "203.0.113."
	beIP      = "192.0.2.21"
	holdTime  = 9 * time.Second // bgp.hold_time of the nodes
	// drainBeforeStop is bgp.drain_before_stop: how long a stopping node
	// keeps serving after it withdrew its route.
	drainBeforeStop = time.Second
)

func stickyClients() []string {
	var out []string
	for i := 20; i <= 25; i++ {
		out = append(out, stickyNet+strconv.Itoa(i))
	}
	return out
}

var nodeIP = map[string]string{"n1": "192.0.2.11", "n2": "192.0.2.12", "n3": "192.0.2.13"}

func TestMain(m *testing.M) {
	switch os.Getenv("SLUICE_BGP_HELPER") {
	case "server":
		helperServer(os.Args[1], os.Args[2])
	case "client":
		helperClient(os.Args[1:])
	default:
		os.Exit(m.Run())
	}
}

// helperServer answers every request with its name.
func helperServer(name, addr string) {
	err := http.ListenAndServe(addr, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, name)
	}))
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}

// helperClient URL LOCAL COUNT INTERVAL sends COUNT requests from LOCAL,
// each on a new connection (so from a new source port), one every
// INTERVAL, and prints for each "UNIXNANO ok NODE SERVER" (NODE from the
// X-Node header sluice adds, SERVER the body) or "UNIXNANO err REASON".
func helperClient(args []string) {
	url, local := args[0], args[1]
	count, _ := strconv.Atoi(args[2])
	interval, _ := time.ParseDuration(args[3])
	tr := &http.Transport{DisableKeepAlives: true, DialContext: (&net.Dialer{
		Timeout: time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)},
	}).DialContext}
	c := &http.Client{Transport: tr, Timeout: 2 * time.Second}
	for range count {
		start := time.Now()
		resp, err := c.Get(url)
		var line string
		if err == nil {
			body, rerr := io.ReadAll(resp.Body)
			resp.Body.Close()
			switch {
			case rerr != nil:
				err = rerr
			case resp.StatusCode != 200:
				err = fmt.Errorf("status %d from %s", resp.StatusCode, resp.Header.Get("X-Node"))
			default:
				line = fmt.Sprintf("%d ok %s %s", start.UnixNano(), resp.Header.Get("X-Node"), strings.TrimSpace(string(body)))
			}
		}
		if err != nil {
			line = fmt.Sprintf("%d err %s", start.UnixNano(), strings.ReplaceAll(err.Error(), "\n", " "))
		}
		fmt.Println(line)
		time.Sleep(time.Until(start.Add(interval)))
	}
}

type lab struct {
	*netlab.Lab
	sluice string
	birdS  string // birdc's control socket
}

func requirements(t *testing.T) {
	if testing.Short() {
		t.Skip("BGP namespace test skipped in -short mode")
	}
	if os.Geteuid() != 0 {
		t.Skip("BGP namespace test needs root (ip netns, veth, bird)")
	}
	for _, p := range []string{"ip", "bird", "birdc"} {
		if _, err := exec.LookPath(p); err != nil {
			t.Skipf("BGP namespace test needs %s in PATH (apt-get install iproute2 bird2)", p)
		}
	}
}

func newLab(t *testing.T) *lab {
	requirements(t)
	l := &lab{Lab: netlab.New(t, "slb", "br", "cli", "rtr", "n1", "n2", "n3", "be")}
	l.OnFail = func() {
		b, _ := os.ReadFile(filepath.Join(l.Dir, "bird-own.log"))
		l.T.Logf("---- BIRD's log ----\n%s", netlab.Tail(string(b), 40))
	}
	l.sluice = l.BuildSluice()
	// Client ↔ router: a veth of their own.
	l.IP("-n", l.NS["cli"], "link", "add", "eth0", "type", "veth", "peer", "name", "cli0", "netns", l.NS["rtr"])
	for _, a := range append([]string{cliIP}, stickyClients()...) {
		l.IP("-n", l.NS["cli"], "addr", "add", a+"/24", "dev", "eth0")
	}
	l.IP("-n", l.NS["cli"], "link", "set", "eth0", "up")
	l.IP("-n", l.NS["cli"], "route", "add", "default", "via", rtrCli)
	l.IP("-n", l.NS["rtr"], "addr", "add", rtrCli+"/24", "dev", "cli0")
	l.IP("-n", l.NS["rtr"], "link", "set", "cli0", "up")
	// The router, the nodes and the servers on one bridge.
	l.IP("-n", l.NS["br"], "link", "add", "br0", "type", "bridge")
	l.IP("-n", l.NS["br"], "link", "set", "br0", "up")
	addrs := map[string]string{"rtr": rtrNodes, "n1": nodeIP["n1"], "n2": nodeIP["n2"], "n3": nodeIP["n3"], "be": beIP}
	for _, n := range []string{"rtr", "n1", "n2", "n3", "be"} {
		port := "p-" + n
		l.IP("-n", l.NS["br"], "link", "add", port, "type", "veth", "peer", "name", "eth1", "netns", l.NS[n])
		l.IP("-n", l.NS["br"], "link", "set", port, "master", "br0")
		l.IP("-n", l.NS["br"], "link", "set", port, "up")
		l.IP("-n", l.NS[n], "addr", "add", addrs[n]+"/24", "dev", "eth1")
		l.IP("-n", l.NS[n], "link", "set", "eth1", "up")
	}
	for _, n := range []string{"n1", "n2", "n3"} {
		// The service address is the node's own (an anycast address on
		// lo): the router sends it packets for it; replies go back through
		// the router.
		l.IP("-n", l.NS[n], "addr", "add", service+"/32", "dev", "lo")
		l.IP("-n", l.NS[n], "route", "add", "default", "via", rtrNodes)
	}
	l.sysctl("rtr", "net.ipv4.ip_forward=1")
	// ECMP hashes the ports too: one client's connections spread.
	l.sysctl("rtr", "net.ipv4.fib_multipath_hash_policy=1")
	for i, s := range []string{"s1", "s2", "s3"} {
		l.Start(s, "be", os.Args[0], []string{"SLUICE_BGP_HELPER=server"}, s, fmt.Sprintf("%s:%d", beIP, 8081+i))
	}
	l.startBird()
	return l
}

func (l *lab) sysctl(ns, kv string) {
	l.T.Helper()
	if out, err := exec.Command("ip", "netns", "exec", l.NS[ns], "sysctl", "-qw", kv).CombinedOutput(); err != nil {
		l.T.Fatalf("sysctl -w %s in %s: %v\n%s", kv, ns, err, out)
	}
}

// startBird runs BIRD in the router namespace with examples/bgp/bird.conf,
// its log going to a file instead of syslog.
func (l *lab) startBird() {
	src, err := os.ReadFile(filepath.Join("..", "..", "examples", "bgp", "bird.conf"))
	if err != nil {
		l.T.Fatal(err)
	}
	logf := filepath.Join(l.Dir, "bird-own.log")
	conf := strings.Replace(string(src), "log syslog all;", fmt.Sprintf("log %q all;", logf), 1)
	if conf == string(src) {
		l.T.Fatal("examples/bgp/bird.conf: no `log syslog all;` line to replace")
	}
	p := l.Write("bird.conf", conf)
	l.birdS = filepath.Join(l.Dir, "bird.ctl")
	l.Start("bird", "rtr", "bird", nil, "-f", "-c", p, "-s", l.birdS, "-P", filepath.Join(l.Dir, "bird.pid"))
	l.WaitFor("BIRD to answer on its socket", 10*time.Second, func() bool {
		_, err := l.birdc("show status")
		return err == nil
	})
}

func (l *lab) birdc(cmd string) (string, error) {
	out, err := exec.Command("birdc", append([]string{"-s", l.birdS}, strings.Fields(cmd)...)...).CombinedOutput()
	return string(out), err
}

// nextHops is the set of next hops BIRD's route to the service has, by
// node name (none when it has no route).
func (l *lab) nextHops() map[string]bool {
	out, _ := l.birdc("show route " + service + "/32 all")
	hops := map[string]bool{}
	for n, ip := range nodeIP {
		// A merged route lists "via IP on eth1" per path; BGP routes each
		// name their "from".
		if regexp.MustCompile(`via ` + regexp.QuoteMeta(ip) + `\b`).MatchString(out) {
			hops[n] = true
		}
	}
	return hops
}

// kernelHops is the number of next hops of the router's kernel route to
// the service, what the forwarding actually uses.
func (l *lab) kernelHops() int {
	out, _ := exec.Command("ip", "-n", l.NS["rtr"], "route", "show", service).Output()
	s := string(out)
	if strings.Contains(s, "nexthop") {
		return strings.Count(s, "nexthop")
	}
	if strings.Contains(s, " via ") {
		return 1
	}
	return 0
}

// node is one balancer.
type node struct {
	name   string
	own    *netlab.Proc // its own server, answering its name
	sluice *netlab.Proc
	conf   string
}

// startNode starts n's own server and its sluice.
func (l *lab) startNode(name string) *node {
	n := &node{name: name}
	n.own = l.Start(name+"-server", name, os.Args[0], []string{"SLUICE_BGP_HELPER=server"}, name, "127.0.0.1:8080")
	n.conf = l.Write(name+".toml", nodeConf(name, nodeIP[name], filepath.Join(l.Dir, name+".sock")))
	n.sluice = l.Start(name+"-sluice", name, l.sluice, nil, "run", "-f", n.conf)
	return n
}

// nodeConf is a node's sluice configuration: web (port 80) on its own
// server, vital; sticky (port 81) over the shared servers by iphash; both
// add X-Node to the response; [bgp] announces the service while web has a
// server up.
func nodeConf(name, ip, sock string) string {
	return fmt.Sprintf(`[global]
control_socket = %[3]q
vital_frontends = ["web"]

[frontend.web]
mode = "http"
bind = ["%[4]s:80"]
freebind = true
default_backend = "own"

[[frontend.web.rule]]
action = "set_header"
name = "X-Node"
value = %[1]q
response = true

[frontend.sticky]
mode = "http"
bind = ["%[4]s:81"]
freebind = true
default_backend = "shared"

[[frontend.sticky.rule]]
action = "set_header"
name = "X-Node"
value = %[1]q
response = true

[backend.own]
timeout_connect = "1s"
[backend.own.health]
check = "tcp"
interval = "100ms"
timeout = "100ms"
fall = 2
rise = 2
[[backend.own.server]]
name = %[1]q
address = "127.0.0.1:8080"

[backend.shared]
balance = "iphash"
timeout_connect = "1s"
[[backend.shared.server]]
name = "s1"
address = "%[5]s:8081"
[[backend.shared.server]]
name = "s2"
address = "%[5]s:8082"
[[backend.shared.server]]
name = "s3"
address = "%[5]s:8083"

[bgp]
asn = 65010
router_id = %[2]q
hold_time = "9s"
drain_before_stop = %[6]q

[[bgp.neighbor]]
address = %[7]q
asn = 65000

[[bgp.announce]]
prefix = "%[4]s/32"
next_hop = "self"
when_vital = ["web"]
`, name, ip, sock, service, beIP, drainBeforeStop.String(), rtrNodes)
}

// result is one request of a client.
type result struct {
	at           time.Time
	ok           bool
	node, server string // or the error in server
}

// client runs the helper client in the client namespace; its results
// arrive as it goes.
type client struct {
	p   *netlab.Proc
	mu  sync.Mutex
	res []result
}

func (l *lab) runClient(port int, from string, count int, interval time.Duration) *client {
	l.T.Helper()
	c := &client{}
	cmd := exec.Command("ip", "netns", "exec", l.NS["cli"], os.Args[0],
		fmt.Sprintf("http://%s:%d/", service, port), from, strconv.Itoa(count), interval.String())
	cmd.Env = append(os.Environ(), "SLUICE_BGP_HELPER=client")
	out, err := cmd.StdoutPipe()
	if err != nil {
		l.T.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		l.T.Fatal(err)
	}
	p := l.Adopt("client", cmd)
	c.p = p
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			f := strings.SplitN(sc.Text(), " ", 3)
			if len(f) < 3 {
				continue
			}
			ns, _ := strconv.ParseInt(f[0], 10, 64)
			r := result{at: time.Unix(0, ns), ok: f[1] == "ok", server: f[2]}
			if r.ok {
				if nf := strings.SplitN(f[2], " ", 2); len(nf) == 2 {
					r.node, r.server = nf[0], nf[1]
				}
			}
			c.mu.Lock()
			c.res = append(c.res, r)
			c.mu.Unlock()
		}
		cmd.Wait()
		close(p.Done)
	}()
	return c
}

func (c *client) results() []result {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]result(nil), c.res...)
}

// batch sends count requests from from, one every interval, and returns
// their results once all are in (bounded: each request has a 2 s timeout).
func (l *lab) batch(port int, from string, count int, interval time.Duration) []result {
	l.T.Helper()
	c := l.runClient(port, from, count, interval)
	if !c.p.Exited(time.Duration(count)*(interval+3*time.Second) + 5*time.Second) {
		l.T.Fatalf("client of %d requests did not finish", count)
	}
	return c.results()
}

// byNode counts successful requests per node, and failures under "".
func byNode(rs []result) map[string]int {
	m := map[string]int{}
	for _, r := range rs {
		if r.ok {
			m[r.node]++
		} else {
			m[""]++
		}
	}
	return m
}

func TestBGPECMP(t *testing.T) {
	l := newLab(t)
	nodes := map[string]*node{}
	for _, n := range []string{"n1", "n2", "n3"} {
		nodes[n] = l.startNode(n)
	}
	up := l.WaitFor("BIRD to have the service through the three nodes", 30*time.Second, func() bool {
		return len(l.nextHops()) == 3 && l.kernelHops() == 3
	})
	t.Logf("route through all three nodes %v after the nodes started", up.Round(time.Millisecond))

	t.Run("traffic spreads over the three nodes", func(t *testing.T) {
		rs := l.batch(80, cliIP, 90, 0)
		m := byNode(rs)
		t.Logf("90 connections from one client address: %v", m)
		if m[""] != 0 {
			t.Errorf("%d requests failed", m[""])
		}
		for _, n := range []string{"n1", "n2", "n3"} {
			if m[n] < 90/3/3 {
				t.Errorf("%s served %d of 90 requests, want at least %d (a third, within a factor of 3)", n, m[n], 90/3/3)
			}
		}
	})

	t.Run("iphash: a client keeps its server whichever node it reaches", func(t *testing.T) {
		all := map[string]bool{}
		for _, from := range stickyClients() {
			rs := l.batch(81, from, 30, 0)
			m := byNode(rs)
			servers := map[string]int{}
			for _, r := range rs {
				if r.ok {
					servers[r.server]++
				}
			}
			t.Logf("client %s: nodes %v, servers %v", from, m, servers)
			if m[""] != 0 {
				t.Errorf("client %s: %d requests failed", from, m[""])
			}
			if len(servers) != 1 {
				t.Errorf("client %s reached servers %v, want one", from, servers)
			}
			for s := range servers {
				all[s] = true
			}
			if len(m) < 2 {
				t.Errorf("client %s reached only nodes %v: it should have gone through several", from, m)
			}
		}
		// Not one server for everybody: the hash does spread clients.
		if len(all) < 2 {
			t.Errorf("the %d clients all reached %v: iphash should spread them", len(stickyClients()), all)
		}
	})

	t.Run("a node whose backend dies withdraws its route", func(t *testing.T) {
		// A client across the kill: 300 requests, one every 10 ms.
		c := l.runClient(80, cliIP, 300, 10*time.Millisecond)
		l.WaitFor("the client to get going through n2", 10*time.Second, func() bool { return byNode(c.results())["n2"] >= 5 })
		killed := time.Now()
		nodes["n2"].own.Kill()
		bird := l.WaitFor("BIRD to drop n2", holdTime, func() bool {
			h := l.nextHops()
			return len(h) == 2 && !h["n2"]
		})
		kernel := l.WaitFor("the router's kernel route to have 2 next hops", holdTime, func() bool { return l.kernelHops() == 2 })
		t.Logf("n2's backend killed: BIRD has 2 next hops after %v, the kernel route %v",
			bird.Round(time.Millisecond), (bird + kernel).Round(time.Millisecond))
		out, _ := l.birdc("show route " + service + "/32")
		t.Logf("birdc show route:\n%s", out)
		if !c.p.Exited(30 * time.Second) {
			t.Fatal("the client did not finish")
		}
		// Requests routed to n2 fail (503: no server) until the router
		// stops sending it new connections.
		var failed int
		var last time.Time
		for _, r := range c.results() {
			if r.at.After(killed) && (!r.ok || r.node == "n2") {
				failed++
				last = r.at
			}
		}
		lost := time.Duration(0)
		if failed > 0 {
			lost = last.Sub(killed)
		}
		t.Logf("n2's backend killed: a client sending every 10 ms had %d requests fail, the last %v after the kill", failed, lost.Round(time.Millisecond))
		if lost > holdTime {
			t.Errorf("requests still failed %v after the kill, want within the hold time %v", lost, holdTime)
		}
		rs := l.batch(80, cliIP, 60, 0)
		m := byNode(rs)
		t.Logf("60 connections after the withdrawal (%v after the kill): %v", time.Since(killed).Round(time.Millisecond), m)
		if m["n2"] != 0 || m[""] != 0 || m["n1"] == 0 || m["n3"] == 0 {
			t.Errorf("after the withdrawal: %v, want n1 and n3 only, none failed", m)
		}
		// Its server back, n2 announces again.
		nodes["n2"].own = l.Start("n2-server-2", "n2", os.Args[0], []string{"SLUICE_BGP_HELPER=server"}, "n2", "127.0.0.1:8080")
		back := l.WaitFor("n2's route to come back", holdTime, func() bool { return len(l.nextHops()) == 3 && l.kernelHops() == 3 })
		t.Logf("n2's server restarted: route through n2 again after %v", back.Round(time.Millisecond))
	})

	t.Run("an orderly stop of a node loses no request", func(t *testing.T) {
		// A bounded client: 400 requests, one every 10 ms, across the stop.
		c := l.runClient(80, cliIP, 400, 10*time.Millisecond)
		l.WaitFor("the client to get going through n3", 10*time.Second, func() bool { return byNode(c.results())["n3"] >= 5 })
		stopped := time.Now()
		nodes["n3"].sluice.Cmd.Process.Signal(syscall.SIGTERM)
		w := l.WaitFor("BIRD to drop n3", holdTime, func() bool { h := l.nextHops(); return !h["n3"] && len(h) == 2 })
		if !c.p.Exited(60 * time.Second) {
			t.Fatal("the client did not finish")
		}
		if !nodes["n3"].sluice.Exited(30 * time.Second) {
			t.Error("n3's sluice did not exit after SIGTERM")
		}
		exited := time.Since(stopped)
		rs := c.results()
		var before, after []result
		for _, r := range rs {
			if r.at.Before(stopped.Add(w)) {
				before = append(before, r)
			} else {
				after = append(after, r)
			}
		}
		t.Logf("n3 stopped (SIGTERM): BIRD dropped it after %v, sluice exited after %v; %d requests: %v before the withdrawal, %v after",
			w.Round(time.Millisecond), exited.Round(time.Millisecond), len(rs), byNode(before), byNode(after))
		for _, r := range rs {
			if !r.ok {
				t.Errorf("request at +%v failed: %s", r.at.Sub(stopped).Round(time.Millisecond), r.server)
			}
		}
		if len(rs) != 400 {
			t.Errorf("%d results of 400 requests", len(rs))
		}
	})
}
