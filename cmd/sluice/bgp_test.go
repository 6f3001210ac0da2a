package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"sluice/internal/bgppeer"
	"sluice/supervisor"
)

// TestBGPAnnouncesWhileHealthy: a sluice master with [bgp] keeps a session
// with a real BGP router (gobgp on loopback) and announces the service
// prefix while the node can serve; it withdraws it when the only backend
// goes down, in maintenance, and at the start of a stop while the
// frontend still accepts; a reload keeps the session. The state shows in
// ctl show bgp, /api/stats and /metrics.
func TestBGPAnnouncesWhileHealthy(t *testing.T) {
	const prefix = "198.51.100.10/32"
	peer, err := bgppeer.Start(65000, 65010)
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	dir := shortDir(t)
	ctl := filepath.Join(dir, "ctl.sock")
	be, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	beAddr := be.Addr().String()
	serve := func(l net.Listener) {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}
	go serve(be)
	free := func() string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return l.Addr().String()
	}
	web, statsAddr := free(), free()
	src := fmt.Sprintf(`[global]
control_socket = %q
vital_frontends = ["web"]

[stats]
bind = %q

[frontend.web]
mode = "tcp"
bind = [%q]
default_backend = "app"

[backend.app.health]
check = "tcp"
interval = "20ms"
fall = 1
rise = 1

[[backend.app.server]]
name = "s1"
address = %q

[bgp]
asn = 65010
router_id = "192.0.2.11"
drain_before_stop = "3s"

[[bgp.neighbor]]
address = "127.0.0.1"
asn = 65000
port = %d

[[bgp.announce]]
prefix = %q
communities = ["65000:100"]
when_vital = ["web"]
`, ctl, statsAddr, web, beAddr, peer.Port, prefix)
	file := filepath.Join(dir, "sluice.toml")
	os.WriteFile(file, []byte(src), 0o644)
	l := startLB(t, binary, file, ctl)
	waitFor(t, 30*time.Second, "the prefix announced", func() bool { return peer.Has(prefix) })
	if r := peer.Routes()[0]; r.NextHop != "127.0.0.1" || strings.Join(r.Communities, ",") != "65000:100" {
		t.Errorf("route %+v; want next hop self (127.0.0.1), community 65000:100", r)
	}

	show := func() string {
		out, err := exec.Command(binary, "ctl", "-f", file, "show", "bgp").CombinedOutput()
		if err != nil {
			t.Fatalf("ctl show bgp: %v\n%s", err, out)
		}
		return string(out)
	}
	if out := show(); !strings.Contains(out, "established") || !strings.Contains(out, prefix+"  true") {
		t.Errorf("ctl show bgp:\n%s\nwant the session established and the prefix announced", out)
	}
	get := func(path string) string {
		resp, err := http.Get("http://" + statsAddr + path)
		if err != nil {
			return ""
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	defer func() {
		if t.Failed() {
			t.Logf("metrics:\n%s\napi:\n%s", get("/metrics"), get("/api/stats"))
		}
	}()
	waitFor(t, 5*time.Second, "bgp in /metrics and /api/stats", func() bool {
		m := get("/metrics")
		return strings.Contains(m, `sluice_bgp_prefix_announced{prefix="198.51.100.10/32"} 1`) &&
			strings.Contains(m, `sluice_bgp_session_up{neighbor="127.0.0.1"} 1`) &&
			strings.Contains(get("/api/stats"), `"asn": 65010`)
	})

	// A reload keeps the session (its "since" does not move).
	r1, _, _ := supervisor.Control(ctl, supervisor.Request{Cmd: "show-bgp"}, 5*time.Second)
	l.reload(src)
	r2, _, _ := supervisor.Control(ctl, supervisor.Request{Cmd: "show-bgp"}, 5*time.Second)
	if r1.BGP == nil || r2.BGP == nil || !r2.BGP.Neighbors[0].Up || !r2.BGP.Neighbors[0].Since.Equal(r1.BGP.Neighbors[0].Since) || !peer.Has(prefix) {
		t.Errorf("a reload touched the session or the route: before %+v after %+v", r1.BGP, r2.BGP)
	}

	// The only server goes down: withdrawn; back up: announced again.
	be.Close()
	waitFor(t, 10*time.Second, "withdrawn when the backend is down", func() bool { return !peer.Has(prefix) })
	if out := show(); !strings.Contains(out, "no server up") {
		t.Errorf("ctl show bgp does not say why:\n%s", out)
	}
	be2, err := net.Listen("tcp", beAddr)
	if err != nil {
		t.Fatalf("listen again on %s: %v", beAddr, err)
	}
	defer be2.Close()
	go serve(be2)
	waitFor(t, 10*time.Second, "announced again", func() bool { return peer.Has(prefix) })

	// Maintenance withdraws, ready announces.
	ctlCmd := func(state string) {
		t.Helper()
		if out, err := exec.Command(binary, "ctl", "-f", file, "set", "node", state).CombinedOutput(); err != nil {
			t.Fatalf("ctl set node %s: %v\n%s", state, err, out)
		}
	}
	ctlCmd("maint")
	waitFor(t, 10*time.Second, "withdrawn in maintenance", func() bool { return !peer.Has(prefix) })
	ctlCmd("ready")
	waitFor(t, 10*time.Second, "announced out of maintenance", func() bool { return peer.Has(prefix) })

	// A stop withdraws first and serves on for drain_before_stop.
	l.cmd.Process.Signal(syscall.SIGTERM)
	waitFor(t, 5*time.Second, "withdrawn on stop", func() bool { return !peer.Has(prefix) })
	c, err := net.DialTimeout("tcp", web, time.Second)
	if err != nil {
		t.Errorf("the frontend refused a connection right after the withdrawal: %v; want it served for drain_before_stop", err)
	} else {
		c.Close()
	}
	select {
	case <-l.done:
	case <-time.After(15 * time.Second):
		t.Fatal("sluice did not stop")
	}
	if !strings.Contains(l.logs.String(), "bgp: withdrawn") {
		t.Errorf("the master did not log its withdrawals")
	}
}

// TestCheckBGP: sluice check reports each [bgp] problem with its line and
// key, and what to write instead.
func TestCheckBGP(t *testing.T) {
	bad := writeFile(t, "bgp.toml", `[frontend.web]
bind = ["127.0.0.1:0"]
default_backend = "b"
[[backend.b.server]]
address = "127.0.0.1:1"
[bgp]
asn = 65535
router_id = "2001:db8::1"
hold_time = "2s"
listen_port = 0
[[bgp.neighbor]]
address = "192.0.2.1:179"
asn = 4294967295
[[bgp.announce]]
prefix = "198.51.100.10"
next_hop = "2001:db8::2"
communities = ["65000-100"]
when_vital = ["www"]
[[bgp.announce]]
prefix = "198.51.100.1/24"
`)
	cmd := exec.Command(binary, "check", "-f", bad)
	out, _ := cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); code != 1 {
		t.Fatalf("exit %d, want 1\n%s", code, out)
	}
	for _, w := range []string{
		"bgp.toml:7: bgp.asn: 65535 is not a usable AS number",
		"bgp.toml:8: bgp.router_id: \"2001:db8::1\" is not an IPv4 address",
		"bgp.toml:9: bgp.hold_time: 2s is not a BGP hold time",
		"bgp.toml:10: bgp.listen_port: 0 is not a port; use -1",
		"bgp.toml:12: bgp.neighbor.0.address: \"192.0.2.1:179\" is not an IP address",
		"bgp.toml:13: bgp.neighbor.0.asn: 4294967295 is not a usable AS number",
		"bgp.toml:15: bgp.announce.0.prefix: \"198.51.100.10\" has no length; write \"198.51.100.10/32\"",
		"bgp.toml:17: bgp.announce.0.communities: entry 1 \"65000-100\" is not a community",
		"bgp.toml:18: bgp.announce.0.when_vital: frontend \"www\" does not exist",
		"bgp.toml:20: bgp.announce.1.prefix: \"198.51.100.1/24\" has host bits set; write \"198.51.100.0/24\"",
	} {
		if !strings.Contains(string(out), w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
}
