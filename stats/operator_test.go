package stats_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/html"

	"sluice/backend"
	"sluice/internal/testutil"
	"sluice/stats"
)

// checkedConfig is trafficConfig plus a backend whose server is health
// checked (tcp checks against an echo server).
func checkedConfig(t *testing.T) string {
	echo := testutil.Serve(t, "echo", testutil.Echo)
	return trafficConfig(t) + fmt.Sprintf(`
[backend.checked]
[backend.checked.health]
check = "tcp"
interval = "1h"
[[backend.checked.server]]
name = "c1"
address = %q
`, echo.Addr)
}

// A server nobody checks is "no check", as in HAProxy, not a green UP;
// one with a check is UP.
func TestUncheckedServerShowsNoCheck(t *testing.T) {
	e := start(t, checkedConfig(t))
	rows, _ := e.page(t, "/;norefresh")
	for id, want := range map[string]string{"row:sv:app/a": "no check", "row:sv:echo/e1": "no check", "row:sv:checked/c1": "UP", "row:be:app": "UP"} {
		if got := rows[id].Cells["status"]; got != want {
			t.Errorf("page %s status %q, want %q", id, got, want)
		}
	}
	if c := rows["row:sv:app/a"].Class; !strings.Contains(c, "no-check") {
		t.Errorf("app/a class %q, want no-check", c)
	}
	if got := e.csvRows(t)["app/a"]["status"]; got != "no check" {
		t.Errorf("csv app/a status %q", got)
	}
	s := e.snapshot(t)
	if got := s.Backends[0].Servers[0].Status; got != "no check" {
		t.Errorf("json app/a status %q", got)
	}
	// Admin states still show: maintenance beats "no check".
	e.eng.Backends["app"].Server("a").SetAdmin(backend.AdminMaint)
	rows, _ = e.page(t, "/;norefresh")
	if got := rows["row:sv:app/a"].Cells["status"]; got != "MAINT" {
		t.Errorf("app/a in maint: status %q", got)
	}
}

// MAINT and DRAIN take a server's effective weight to 0; the weight it
// would have when ready stays visible after the slash and in uweight.
func TestMaintAndDrainShowEffectiveWeight(t *testing.T) {
	e := start(t, trafficConfig(t))
	auth := "Bearer " + e.token
	if code, body := e.post(t, "POST", "/api/servers/app/b/weight", auth, url.Values{"weight": {"4"}}); code != 200 {
		t.Fatalf("set weight: %d %s", code, body)
	}
	for _, st := range []struct{ state, weight, csvWeight, beWeight string }{
		{"drain", "0/4", "0", "1"}, {"maint", "0/4", "0", "1"}, {"ready", "4/4", "4", "5"},
	} {
		if code, body := e.post(t, "POST", "/api/servers/app/b/state", auth, url.Values{"state": {st.state}}); code != 200 {
			t.Fatalf("set %s: %d %s", st.state, code, body)
		}
		rows, _ := e.page(t, "/;norefresh")
		if got := rows["row:sv:app/b"].Cells["weight"]; got != st.weight {
			t.Errorf("%s: weight cell %q, want %q", st.state, got, st.weight)
		}
		r := e.csvRows(t)["app/b"]
		if r["weight"] != st.csvWeight || r["uweight"] != "4" {
			t.Errorf("%s: csv weight %q uweight %q, want %s and 4", st.state, r["weight"], r["uweight"], st.csvWeight)
		}
		if got := e.csvRows(t)["app/BACKEND"]["weight"]; got != st.beWeight {
			t.Errorf("%s: backend weight %q, want %s", st.state, got, st.beWeight)
		}
		sv := e.snapshot(t).Backends[0].Servers[1]
		if fmt.Sprint(sv.Weight) != st.csvWeight || sv.UWeight != 4 || sv.ConfWeight != 1 {
			t.Errorf("%s: json weight %d uweight %d conf %d", st.state, sv.Weight, sv.UWeight, sv.ConfWeight)
		}
	}
}

// The backend row carries HAProxy's aggregates: scur and smax of the
// backend itself, totals, and its own up/down history.
func TestBackendAggregates(t *testing.T) {
	e := start(t, trafficConfig(t))
	tcpFront := e.eng.Config.Frontend("tcp").Bind[0]
	const held = 3
	var conns []*net.TCPConn
	for range held {
		c := testutil.Dial(t, tcpFront)
		if _, err := c.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Read(make([]byte, 1)); err != nil { // echoed: the server side is open
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	eventually(t, "backend scur", func() error { return expect(e.csvRows(t)["echo/BACKEND"]["scur"], held, "echo scur") })
	for _, c := range conns {
		c.Close()
	}
	eventually(t, "connections closed", func() error { return expect(e.eng.Front.Current(), 0, "open connections") })
	eventually(t, "backend scur 0", func() error { return expect(e.csvRows(t)["echo/BACKEND"]["scur"], 0, "echo scur") })
	be := e.csvRows(t)["echo/BACKEND"]
	for k, want := range map[string]string{
		"smax": "3", "stot": "3", "bin": "3", "bout": "3", "status": "UP", "weight": "1", "act": "1", "bck": "0",
		"chkdown": "0", "downtime": "0", "econ": "0", "eresp": "0", "wretr": "0", "wredis": "0",
	} {
		if be[k] != want {
			t.Errorf("echo BACKEND %s = %q, want %q", k, be[k], want)
		}
	}
	if be["lastchg"] == "" {
		t.Error("echo BACKEND lastchg is empty")
	}
	// The backend goes down when its only server does, and that counts.
	e1 := e.eng.Backends["echo"].Server("e1")
	e1.SetUp(false)
	if got := e.csvRows(t)["echo/BACKEND"]; got["status"] != "DOWN" || got["chkdown"] != "1" || got["act"] != "0" {
		t.Errorf("echo BACKEND after its server went down: status %q chkdown %q act %q", got["status"], got["chkdown"], got["act"])
	}
	e1.SetUp(true)
	rows, _ := e.page(t, "/;norefresh")
	if r := rows["row:be:echo"]; r.Cells["status"] != "UP" || r.Cells["smax"] != "3" || r.Cells["chkdown"] != "1" || r.Cells["lastchg"] == "" {
		t.Errorf("echo backend row on the page: %v", r.Cells)
	}
}

// HAProxy's JSON path answers with the same document as /api/stats.
func TestHAProxyJSONPath(t *testing.T) {
	e := start(t, trafficConfig(t))
	var s stats.Snapshot
	if err := json.Unmarshal([]byte(e.get(t, "/;json", 200)), &s); err != nil {
		t.Fatal(err)
	}
	if len(s.Backends) != 2 || s.Backends[0].Proxy != "app" {
		t.Errorf("/;json: %+v", s.Backends)
	}
}

// Counters at zero are left off the page (they stay in the JSON and the
// metrics), and the admin buttons say what they do.
func TestPageHidesZeroCountersAndNamesButtons(t *testing.T) {
	e := start(t, trafficConfig(t))
	body := e.get(t, "/;norefresh", 200)
	doc, err := html.Parse(strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	var buttons []string
	var otherRows [][]string
	var walk func(n *html.Node, inOther bool)
	walk = func(n *html.Node, inOther bool) {
		if n.Type == html.ElementNode {
			switch {
			case n.Data == "table" && attr(n, "id") == "other":
				inOther = true
			case n.Data == "button" && strings.Contains(attr(n, "formaction")+attr(n.Parent, "action"), "/api/servers/app/a/"):
				buttons = append(buttons, strings.TrimSpace(text(n)))
			case n.Data == "tr" && inOther && n.Parent.Data == "tbody":
				var cells []string
				for c := n.FirstChild; c != nil; c = c.NextSibling {
					if c.Type == html.ElementNode {
						cells = append(cells, text(c))
					}
				}
				otherRows = append(otherRows, cells)
			}
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c, inOther)
		}
	}
	walk(doc, false)
	if got := strings.Join(buttons, ","); got != "Ready,Drain,Maint,Weight" {
		t.Errorf("buttons of app/a: %q, want Ready,Drain,Maint,Weight", got)
	}
	if len(otherRows) == 0 {
		t.Fatal("no other counters on the page (stats_conns_limit is never 0)")
	}
	for _, r := range otherRows {
		if r[len(r)-1] == "0" {
			t.Errorf("other counter at 0 on the page: %v", r)
		}
	}
	zero := 0
	for _, c := range e.snapshot(t).Counters {
		if c.Value == 0 {
			zero++
		}
	}
	if zero == 0 {
		t.Error("the JSON has no counter at 0: the test shows nothing")
	}
}

// haproxyShowStat runs a real HAProxy with a frontend, a backend and a
// stats socket on loopback, and returns the lines `show stat` prints.
func haproxyShowStat(t *testing.T) []string {
	t.Helper()
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		if _, err2 := os.Stat("/usr/sbin/haproxy"); err2 != nil {
			t.Skip("haproxy is not installed; the CSV layout test compares with its output")
		}
		bin = "/usr/sbin/haproxy"
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "stats.sock")
	cfg := fmt.Sprintf(`global
    stats socket %s level admin
defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
frontend fe
    bind %s
    default_backend be
backend be
    server a %s weight 3
    server b %s weight 2 backup
`, sock, testutil.FreeAddr(t), testutil.ClosedAddr(t), testutil.ClosedAddr(t))
	file := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-db", "-f", file)
	out, err := os.Create(filepath.Join(dir, "haproxy.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	var c net.Conn
	eventually(t, "haproxy's stats socket", func() error {
		var err error
		c, err = net.Dial("unix", sock)
		return err
	})
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("show stat\n")); err != nil {
		t.Fatal(err)
	}
	var lines []string
	sc := bufio.NewScanner(c)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if sc.Text() == "" {
			break // the CLI ends its answer with an empty line
		}
		lines = append(lines, sc.Text())
	}
	if len(lines) < 4 {
		log, _ := os.ReadFile(out.Name())
		t.Fatalf("haproxy show stat: %q (%v)\n%s", lines, sc.Err(), log)
	}
	return lines
}

// The CSV is HAProxy 2.6's: the same header byte for byte and the same
// number of fields on every row, so scripts that read by position work.
func TestCSVLayoutIsHAProxys(t *testing.T) {
	want := haproxyShowStat(t)
	e := start(t, trafficConfig(t))
	resp, err := http.Get(e.url("/;csv"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got []string
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		got = append(got, sc.Text())
	}
	if len(got) == 0 || got[0] != want[0] {
		t.Fatalf("header\n got %q\nwant %q", got[:min(1, len(got))], want[0])
	}
	fields := strings.Count(want[1], ",")
	for _, l := range want[1:] {
		if n := strings.Count(l, ","); n != fields {
			t.Fatalf("haproxy rows differ in length: %d and %d commas", fields, n)
		}
	}
	if len(got) != 1+2+2+2+1 { // 2 frontends, app: 2 servers + BACKEND, echo: 1 + BACKEND
		t.Errorf("%d lines: %q", len(got), got)
	}
	// sluice's values have no commas, so counting them counts fields.
	col := map[string]int{}
	for i, name := range strings.Split(strings.TrimPrefix(want[0], "# "), ",") {
		col[name] = i
	}
	for _, l := range got[1:] {
		if n := strings.Count(l, ","); n != fields {
			t.Errorf("row has %d commas, HAProxy's have %d: %s", n, fields, l)
		}
		f := strings.Split(l, ",")
		// Read by position, as a script would.
		ty, status := f[col["type"]], f[col["status"]]
		switch ty {
		case "0":
			if f[col["svname"]] != "FRONTEND" || status != "OPEN" {
				t.Errorf("frontend row by position: svname %q status %q", f[col["svname"]], status)
			}
		case "1":
			if f[col["svname"]] != "BACKEND" || status != "UP" || f[col["act"]] != "1" && f[col["act"]] != "2" {
				t.Errorf("backend row by position: svname %q status %q act %q", f[col["svname"]], status, f[col["act"]])
			}
		case "2":
			if status != "no check" || f[col["weight"]] != "1" || f[col["uweight"]] != "1" || f[col["lbtot"]] != "0" {
				t.Errorf("server row by position: status %q weight %q uweight %q lbtot %q", status, f[col["weight"]], f[col["uweight"]], f[col["lbtot"]])
			}
		default:
			t.Errorf("type %q at position %d: %s", ty, col["type"], l)
		}
	}
}

// The sticky API answers 404 with a reason for a backend without a table.
func TestStickyWithoutTable(t *testing.T) {
	e := start(t, trafficConfig(t))
	code, body := e.post(t, "GET", "/api/backends/app/sticky", "Bearer "+e.token, nil)
	if code != http.StatusNotFound || !strings.Contains(body, `backend app keeps no sticky table`) || !strings.Contains(body, `sticky = "source"`) {
		t.Errorf("GET sticky of app: %d %q", code, body)
	}
	if code, body := e.post(t, "GET", "/api/backends/echo/sticky", "Bearer "+e.token, nil); code != 200 {
		t.Errorf("GET sticky of echo: %d %q", code, body)
	}
}
