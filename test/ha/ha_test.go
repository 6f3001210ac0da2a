// Package ha proves a keepalived pair of sluice boxes in network
// namespaces: the VIP moves when the active node's sluice is killed or
// stopped, put into maintenance, loses its backend, or its keepalived dies;
// no request fails on a stop or maintenance (but one in flight at the
// instant the address moves, which every VRRP pair without connection sync
// can lose), traffic resumes within 1 s of a kill, and a sticky client
// keeps its server.
//
// keepalived here does not use track_process, as the examples do: the
// kernel's process events (the proc connector) are only sent in the
// initial network namespace (keepalived logs "Failed to set/clear process
// event listen - errno 111" in another). A killed master is seen through
// the track file, which its orphaned worker sets at once.
//
// Topology (every namespace and link is created here and deleted at the
// end; nothing is added to the host's own namespace):
//
//	      slcXXXX-br: bridge br0
//	  ┌──────────┬───────┴──┬──────────┐
//	cli .10,.9   lb1 .11    lb2 .12    be .21 (s1 :8081, s2 :8082)
//	             sluice +   sluice +
//	             keepalived keepalived      VIP .100 on the master
//
// The client, and the two HTTP servers, are this test binary run again in
// a helper mode (SLUICE_HA_HELPER), so no other program is needed.
package ha

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"sluice/internal/netlab"
)

const (
	subnet   = "10.99.0."
	vip      = subnet + "100"
	cliIP    = subnet + "10"
	otherCli = subnet + "9"
	lb1IP    = subnet + "11"
	lb2IP    = subnet + "12"
	beIP     = subnet + "21"
	resume   = 5 * time.Second // the longest traffic may stop on failover
	// stopGrace is global.stop_grace: how long a stopping sluice keeps
	// accepting after its track file said fault.
	stopGrace = 2 * time.Second
)

func TestMain(m *testing.M) {
	switch os.Getenv("SLUICE_HA_HELPER") {
	case "server":
		helperServer(os.Args[1], os.Args[2])
	case "client":
		helperClient(os.Args[1], os.Args[2])
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

// helperClient sends a request from local every 50 ms (a new connection
// each) and prints "UNIXNANO ok SERVER" or "UNIXNANO err REASON"; with
// SLUICE_HA_ONCE it sends one and exits with its status.
func helperClient(url, local string) {
	tr := &http.Transport{DisableKeepAlives: true, DialContext: (&net.Dialer{
		Timeout: 300 * time.Millisecond, LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)},
	}).DialContext}
	c := &http.Client{Transport: tr, Timeout: 400 * time.Millisecond}
	once := os.Getenv("SLUICE_HA_ONCE") != ""
	for {
		start := time.Now()
		resp, err := c.Get(url)
		line := ""
		if err == nil {
			body, rerr := io.ReadAll(resp.Body)
			resp.Body.Close()
			switch {
			case rerr != nil:
				err = rerr
			case resp.StatusCode != 200:
				err = fmt.Errorf("status %d", resp.StatusCode)
			default:
				line = fmt.Sprintf("%d ok %s", start.UnixNano(), strings.TrimSpace(string(body)))
			}
		}
		if err != nil {
			line = fmt.Sprintf("%d err %s", start.UnixNano(), strings.ReplaceAll(err.Error(), "\n", " "))
		}
		fmt.Println(line)
		if once {
			if err != nil {
				os.Exit(1)
			}
			os.Exit(0)
		}
		time.Sleep(time.Until(start.Add(50 * time.Millisecond)))
	}
}

// lab is the namespaces of one test run.
type lab struct {
	*netlab.Lab
	sluice string // the built binary
}

func requirements(t *testing.T) {
	if testing.Short() {
		t.Skip("HA namespace test skipped in -short mode")
	}
	if os.Geteuid() != 0 {
		t.Skip("HA namespace test needs root (ip netns, veth, keepalived)")
	}
	for _, p := range []string{"ip", "keepalived"} {
		if _, err := exec.LookPath(p); err != nil {
			t.Skipf("HA namespace test needs %s in PATH (apt-get install iproute2 keepalived)", p)
		}
	}
}

func newLab(t *testing.T) *lab {
	requirements(t)
	l := &lab{Lab: netlab.New(t, "slc", "br", "cli", "lb1", "lb2", "be")}
	l.LogLines = 60
	l.sluice = l.BuildSluice()
	l.IP("-n", l.NS["br"], "link", "add", "br0", "type", "bridge")
	l.IP("-n", l.NS["br"], "link", "set", "br0", "up")
	addrs := map[string][]string{"cli": {cliIP, otherCli}, "lb1": {lb1IP}, "lb2": {lb2IP}, "be": {beIP}}
	for _, n := range []string{"cli", "lb1", "lb2", "be"} {
		port := "p-" + n
		l.IP("-n", l.NS["br"], "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", l.NS[n])
		l.IP("-n", l.NS["br"], "link", "set", port, "master", "br0")
		l.IP("-n", l.NS["br"], "link", "set", port, "up")
		for _, a := range addrs[n] {
			l.IP("-n", l.NS[n], "addr", "add", a+"/24", "dev", "eth0")
		}
		l.IP("-n", l.NS[n], "link", "set", "eth0", "up")
	}
	l.Start("s1", "be", os.Args[0], []string{"SLUICE_HA_HELPER=server"}, "s1", beIP+":8081")
	l.Start("s2", "be", os.Args[0], []string{"SLUICE_HA_HELPER=server"}, "s2", beIP+":8082")
	return l
}

// node is one balancer: its sluice and keepalived.
type node struct {
	name, ip, peer string
	prio           int
	sluice, kad    *netlab.Proc
	vrrpPID        string
	track, ctl     string // its global.track_file and control socket
	conf           string // its sluice configuration
}

// startNode writes n's configurations and starts its sluice and keepalived.
func (l *lab) startNode(n *node, run int) {
	tag := fmt.Sprintf("%s-%d", n.name, run)
	secret := l.Write("secret", "the same on both nodes, 32 bytes\n")
	n.track = filepath.Join(l.Dir, tag+".track")
	n.ctl = filepath.Join(l.Dir, tag+".sock")
	conf := l.Write(tag+".toml", fmt.Sprintf(`[global]
vital_frontends = ["www"]
track_file = %q
control_socket = %q
stop_grace = %q

[frontend.www]
mode = "http"
bind = ["%s:80"]
freebind = true
default_backend = "app"

[backend.app]
sticky = "source"
sticky_ttl = "30m"
timeout_connect = "1s"

[backend.app.health]
check = "tcp"
interval = "100ms"
timeout = "100ms"
fall = 2
rise = 2

[[backend.app.server]]
name = "s1"
address = "%s:8081"

[[backend.app.server]]
name = "s2"
address = "%s:8082"

[peers]
bind = "%s:7070"
peers = ["%s:7070"]
secret_file = %q
flush_interval = "50ms"
`, n.track, n.ctl, stopGrace.String(), vip, beIP, beIP, n.ip, n.peer, secret))
	notify := l.Write(tag+"-notify.sh", fmt.Sprintf("#!/bin/sh\necho \"$(date +%%s.%%N) $*\" >> %s\n", filepath.Join(l.Dir, tag+"-notify.log")))
	os.Chmod(notify, 0o755)
	n.vrrpPID = filepath.Join(l.Dir, tag+"-vrrp.pid")
	kconf := l.Write(tag+"-keepalived.conf", fmt.Sprintf(`global_defs {
    router_id %s
    script_user root
    vrrp_version 3
    vrrp_garp_master_delay 1
}

vrrp_script chk_sluice {
    script "%s check --live -f %s"
    interval 1
    timeout 1
    fall 2
    rise 2
    weight -20
}

track_file sluice_track {
    file "%s"
    weight -20
}

vrrp_instance VI_SLUICE {
    state BACKUP
    interface eth0
    virtual_router_id 51
    priority %d
    advert_int 0.2
    unicast_src_ip %s
    unicast_peer {
        %s
    }
    virtual_ipaddress {
        %s/24 dev eth0
    }
    track_script {
        chk_sluice
    }
    track_file {
        sluice_track
    }
    notify %s
}
`, n.name, l.sluice, conf, n.track, n.prio, n.ip, n.peer, vip, notify))
	n.conf = conf
	n.sluice = l.Start(tag+"-sluice", n.name, l.sluice, nil, "run", "-f", conf)
	n.kad = l.Start(tag+"-keepalived", n.name, "keepalived", nil, "-n", "-l", "-D", "-G", "-P", "-f", kconf,
		"-p", filepath.Join(l.Dir, tag+"-keepalived.pid"), "-r", n.vrrpPID, "-c", filepath.Join(l.Dir, tag+"-checkers.pid"))
}

// holdsVIP reports whether the namespace ns has the VIP.
func (l *lab) holdsVIP(ns string) bool {
	out, _ := exec.Command("ip", "-n", l.NS[ns], "-4", "-o", "addr", "show", "dev", "eth0").Output()
	return strings.Contains(string(out), " "+vip+"/")
}

// mac returns the MAC address of eth0 in namespace ns.
func (l *lab) mac(ns string) string {
	l.T.Helper()
	f := strings.Fields(l.IP("-n", l.NS[ns], "-o", "link", "show", "dev", "eth0"))
	for i := range f[:len(f)-1] {
		if f[i] == "link/ether" {
			return f[i+1]
		}
	}
	l.T.Fatalf("no MAC for %s in %v", ns, f)
	return ""
}

// neighbour returns the MAC the client namespace has for ip, or "".
func (l *lab) neighbour(ip string) string {
	out, _ := exec.Command("ip", "-n", l.NS["cli"], "neigh", "show", ip).Output()
	f := strings.Fields(string(out))
	for i := range f {
		if f[i] == "lladdr" && i+1 < len(f) {
			return f[i+1]
		}
	}
	return ""
}

// result is one request of the continuous client.
type result struct {
	at     time.Time
	ok     bool
	server string // or the error
}

// client runs the continuous client in the client namespace and collects
// its results.
type client struct {
	p   *netlab.Proc
	mu  sync.Mutex
	res []result
}

// stop ends the client, so that it does not go on picking servers (and
// moving round robin) in the next run's balancers.
func (c *client) stop() { c.p.Kill() }

func (l *lab) runClient(from string) *client {
	l.T.Helper()
	c := &client{}
	cmd := exec.Command("ip", "netns", "exec", l.NS["cli"], os.Args[0], "http://"+vip+"/", from)
	cmd.Env = append(os.Environ(), "SLUICE_HA_HELPER=client")
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
			c.mu.Lock()
			c.res = append(c.res, result{at: time.Unix(0, ns), ok: f[1] == "ok", server: f[2]})
			c.mu.Unlock()
		}
		cmd.Wait()
		close(p.Done)
	}()
	return c
}

func (c *client) since(t time.Time) []result {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []result
	for _, r := range c.res {
		if !r.at.Before(t) {
			out = append(out, r)
		}
	}
	return out
}

// once sends one request from the address from and returns the server.
func (l *lab) once(from string) (string, error) {
	cmd := exec.Command("ip", "netns", "exec", l.NS["cli"], os.Args[0], "http://"+vip+"/", from)
	cmd.Env = append(os.Environ(), "SLUICE_HA_HELPER=client", "SLUICE_HA_ONCE=1")
	out, err := cmd.Output()
	f := strings.SplitN(strings.TrimSpace(string(out)), " ", 3)
	if err != nil || len(f) < 3 {
		return "", fmt.Errorf("%v: %s", err, out)
	}
	return f[2], nil
}

// TestKeepalivedFailover runs the pair, makes lb1 the master, and fails it
// in five ways; each time the VIP must move to lb2 and traffic resume, the
// sticky client still on its server. keepalived hears of sluice at once:
// track_process sees the master die, track_file (global.track_file) says
// when it cannot serve or is stopping; `check --live` is the slow net.
func TestKeepalivedFailover(t *testing.T) {
	l := newLab(t)
	type outcome struct {
		noneFailed bool          // an orderly move: not one request may fail
		within     time.Duration // else traffic must be back within this
	}
	for i, tc := range []struct {
		desc string
		want outcome
		fail func(t *testing.T, lb1 *node)
	}{
		// Under 1 s: measured about 0.33 s in 8 runs on a 2-core machine (the
		// orphaned worker writes 254, keepalived faults at once, node2
		// takes over after its skew; one request of the 300 ms client
		// fails), so 1 s leaves three times the margin.
		{"the active node's sluice is killed", outcome{within: time.Second}, func(t *testing.T, lb1 *node) {
			lb1.sluice.Kill()
		}},
		{"the active node's sluice is stopped", outcome{noneFailed: true}, func(t *testing.T, lb1 *node) {
			lb1.sluice.Cmd.Process.Signal(syscall.SIGTERM)
		}},
		{"the active node is put into maintenance", outcome{noneFailed: true}, func(t *testing.T, lb1 *node) {
			out, err := exec.Command("ip", "netns", "exec", l.NS["lb1"], l.sluice, "ctl", "-f", lb1.conf, "set", "node", "maint").CombinedOutput()
			if err != nil {
				t.Fatalf("sluice ctl set node maint: %v\n%s", err, out)
			}
		}},
		{"the active node's only backend dies", outcome{within: resume}, func(t *testing.T, lb1 *node) {
			// From lb1 only: lb2 still reaches the servers.
			l.IP("-n", l.NS["lb1"], "route", "add", "blackhole", beIP+"/32")
			t.Cleanup(func() {
				if out, err := exec.Command("ip", "-n", l.NS["lb1"], "route", "del", beIP+"/32").CombinedOutput(); err != nil {
					t.Errorf("remove the blackhole route: %v %s", err, out)
				}
			})
		}},
		{"the active node's keepalived dies", outcome{within: resume}, func(t *testing.T, lb1 *node) {
			// Both keepalived processes, as in a crash: the VIP is not
			// released, the VRRP adverts just stop.
			if b, err := os.ReadFile(lb1.vrrpPID); err == nil {
				if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
					syscall.Kill(pid, syscall.SIGKILL)
				}
			}
			lb1.kad.Kill()
		}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			parent := l.T
			l.T = t
			defer func() { l.T = parent }()
			r := failover(t, l, i, func(lb1 *node) { tc.fail(t, lb1) })
			switch {
			case tc.want.noneFailed && r.failed == 1 && r.atMove:
				// One connection opened to lb1 just before lb2's
				// gratuitous ARP: its next packets reach lb2, which has
				// no such connection and resets it. Every VRRP pair
				// without connection sync has this window (a CI run hit
				// it once); sluice refusing early would fail many.
				t.Logf("1 request in flight while the address moved failed: %s", r.why)
			case tc.want.noneFailed && r.failed > 0:
				t.Errorf("%d requests failed, want none: the address must move before sluice stops taking connections", r.failed)
			case !tc.want.noneFailed && r.outage > tc.want.within:
				t.Errorf("traffic back %v after the failure, want within %v", r.outage, tc.want.within)
			}
		})
	}
}

// measured is what one failover cost the client.
type measured struct {
	failed int
	atMove bool          // every failed request began within moveWindow before the VIP was seen on lb2
	why    string        // the first failure's error
	outage time.Duration // from the failure to the first success after the last failed request (0: none failed)
}

func failover(t *testing.T, l *lab, run int, fail func(lb1 *node)) measured {
	// Fresh processes; a VIP left behind by a killed keepalived is removed.
	for _, ns := range []string{"lb1", "lb2"} {
		exec.Command("ip", "-n", l.NS[ns], "addr", "del", vip+"/24", "dev", "eth0").Run()
	}
	lb1 := &node{name: "lb1", ip: lb1IP, peer: lb2IP, prio: 110}
	lb2 := &node{name: "lb2", ip: lb2IP, peer: lb1IP, prio: 100}
	l.startNode(lb1, run)
	l.startNode(lb2, run)
	// stop kills everything in the node's namespace: sluice's master, a
	// worker still draining after its master was killed (it holds the
	// listeners the next run binds), keepalived and its VRRP process.
	stop := func(n *node) {
		n.sluice.Kill()
		n.kad.Kill()
		l.WaitFor(n.name+"'s processes to go", 10*time.Second, func() bool {
			out, _ := exec.Command("ip", "netns", "pids", l.NS[n.name]).Output()
			pids := strings.Fields(string(out))
			for _, f := range pids {
				if pid, err := strconv.Atoi(f); err == nil {
					syscall.Kill(pid, syscall.SIGKILL)
				}
			}
			return len(pids) == 0
		})
	}
	defer stop(lb1)
	defer stop(lb2)

	l.WaitFor("lb1 to hold the VIP", 15*time.Second, func() bool { return l.holdsVIP("lb1") && !l.holdsVIP("lb2") })
	// Another client first, so that round robin gives our client s2 on lb1,
	// while lb2 left to itself would start it on s1.
	var first string
	l.WaitFor("the first request through lb1", 10*time.Second, func() bool {
		s, err := l.once(otherCli)
		first = s
		return err == nil
	})
	if first != "s1" {
		t.Fatalf("first client reached %s, want s1", first)
	}
	c := l.runClient(cliIP)
	defer c.stop()
	warm := time.Now()
	l.WaitFor("steady traffic through lb1", 10*time.Second, func() bool {
		rs := c.since(warm)
		return len(rs) >= 10 && rs[len(rs)-1].ok
	})
	for _, r := range c.since(warm) {
		if r.ok && r.server != "s2" {
			t.Fatalf("sticky client reached %s before failover, want s2", r.server)
		}
	}

	killed := time.Now()
	fail(lb1)
	l.WaitFor("lb2 to take the VIP", 2*resume, func() bool { return l.holdsVIP("lb2") })
	vipMoved := time.Since(killed)
	var resumed time.Time
	l.WaitFor("traffic to resume", 2*resume, func() bool {
		for _, r := range c.since(killed) {
			if r.ok {
				resumed = r.at
				return true
			}
		}
		return false
	})
	// The client's traffic really goes to lb2 now: its neighbour entry for
	// the VIP has lb2's MAC (after lb2's gratuitous ARP).
	lb2MAC := l.mac("lb2")
	l.WaitFor("the client to send to lb2's MAC", resume, func() bool { return l.neighbour(vip) == lb2MAC })
	time.Sleep(time.Second) // traffic must stay up, not flap
	after := c.since(killed)
	var failed int
	var firstFail, lastFail time.Time
	why := ""
	for _, r := range after {
		if !r.ok {
			failed++
			if firstFail.IsZero() {
				firstFail, why = r.at, r.server
			}
			lastFail = r.at
		}
	}
	// The VIP is seen on lb2 up to a poll (20 ms) and two ip commands
	// after it moved; a request begun in this window before was in flight.
	const moveWindow = 150 * time.Millisecond
	moved := killed.Add(vipMoved)
	atMove := failed > 0 && firstFail.After(moved.Add(-moveWindow)) && !lastFail.After(moved)
	// Traffic is back for good at the first success after the last
	// failure: a request can still fail while the VIP is in flight even if
	// the old node answered a moment after the kill (keepalived killed,
	// sluice still up).
	var back time.Time
	okSince := 0
	for _, r := range after {
		if r.ok && r.at.After(lastFail) {
			if back.IsZero() {
				back = r.at
			}
			okSince++
			if r.at.After(resumed) && r.server != "s2" {
				t.Errorf("sticky client reached %s after failover, want s2 (its server before)", r.server)
			}
		}
	}
	if back.IsZero() {
		t.Fatalf("no request succeeded after the last failure (+%v)", lastFail.Sub(killed))
	}
	// The outage runs from the failure (or the first failed request, when
	// its timeout began a moment before) to the first success after it.
	outage := back.Sub(killed)
	failures := "none failed"
	if failed > 0 {
		failures = fmt.Sprintf("%d failed (from +%v to +%v)", failed,
			firstFail.Sub(killed).Round(time.Millisecond), lastFail.Sub(killed).Round(time.Millisecond))
	}
	if failed == 0 {
		outage = 0
	}
	t.Logf("failover: VIP on lb2 after %v; requests failed for %v; requests every 50 ms: %s, %d ok since",
		vipMoved.Round(time.Millisecond), outage.Round(time.Millisecond), failures, okSince)
	if okSince < 10 {
		t.Errorf("only %d requests succeeded after the last failure: traffic is not steady", okSince)
	}
	return measured{failed: failed, outage: outage, atMove: atMove, why: why}
}

// TestExampleKeepalivedConf: keepalived accepts both example configurations
// (with the sluice binary, not installed here, replaced by /bin/true:
// keepalived refuses a configuration whose script does not exist).
func TestExampleKeepalivedConf(t *testing.T) {
	if _, err := exec.LookPath("keepalived"); err != nil {
		t.Skip("keepalived is not installed (apt-get install keepalived)")
	}
	for _, n := range []string{"node1", "node2"} {
		src, err := os.ReadFile(filepath.Join("..", "..", "examples", "keepalived", n, "keepalived.conf"))
		if err != nil {
			t.Fatal(err)
		}
		script := "/usr/local/bin/sluice check --live -f /etc/sluice/sluice.toml"
		if !strings.Contains(string(src), script) {
			t.Fatalf("%s: the vrrp_script does not run %q", n, script)
		}
		// keepalived watches the file sluice writes, and tracks the master
		// as the sluice service starts it.
		toml, err := os.ReadFile(filepath.Join("..", "..", "examples", "keepalived", n, "sluice.toml"))
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []struct{ in, what string }{
			{string(toml), `track_file = "/run/sluice/keepalived.track"`},
			{string(src), "file /run/sluice/keepalived.track"},
			{string(src), "process /usr/local/bin/sluice run -f /etc/sluice/sluice.toml"},
		} {
			if !strings.Contains(want.in, want.what) {
				t.Errorf("%s: the example does not contain %q", n, want.what)
			}
		}
		p := filepath.Join(t.TempDir(), "keepalived.conf")
		os.WriteFile(p, []byte(strings.ReplaceAll(string(src), script, "/bin/true")), 0o644)
		out, err := exec.Command("keepalived", "-t", "-f", p).CombinedOutput()
		if err != nil {
			t.Errorf("keepalived -t -f %s: %v\n%s", p, err, out)
		}
	}
}
