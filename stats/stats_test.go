package stats_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"sluice/backend"
	"sluice/internal/testutil"
)

// trafficConfig is an http frontend over two servers and a tcp frontend
// over an echo server, with a stats listener and an admin token.
func trafficConfig(t *testing.T) string {
	a, b := httpBackend(t, "a"), httpBackend(t, "b")
	echo := testutil.Serve(t, "echo", testutil.Echo)
	return fmt.Sprintf(`[global]
maxconn = 500
vital_frontends = ["web"]

[stats]
bind = "{{STATS}}"
admin_token_file = "{{TOKEN_FILE}}"

[frontend.web]
mode = "http"
bind = ["{{FRONT}}"]
maxconn = 100
default_backend = "app"

[frontend.tcp]
mode = "tcp"
bind = ["{{FRONT2}}"]
default_backend = "echo"

[backend.app]
[[backend.app.server]]
name = "a"
address = %q
[[backend.app.server]]
name = "b"
address = %q
maxconn = 50

[backend.echo]
sticky = "source"
[[backend.echo.server]]
name = "e1"
address = %q
`, a, b, echo.Addr)
}

// sendHTTP sends each path on a new connection through the frontend and
// returns the body bytes received.
func sendHTTP(t *testing.T, front string, paths ...string) {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	for _, p := range paths {
		resp, err := client.Get("http://" + front + p)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}

// sendTCP opens n connections, sends size bytes on each, reads them back.
func sendTCP(t *testing.T, front string, n, size int) {
	t.Helper()
	payload := bytes.Repeat([]byte("x"), size)
	for range n {
		c := testutil.Dial(t, front)
		if _, err := c.Write(payload); err != nil {
			t.Fatal(err)
		}
		c.CloseWrite()
		got, err := io.ReadAll(c)
		if err != nil || len(got) != size {
			t.Fatalf("echo: %d bytes, %v", len(got), err)
		}
		c.Close()
	}
}

func TestCountersMatchTraffic(t *testing.T) {
	e := start(t, trafficConfig(t))
	tcpFront := e.eng.Config.Frontend("tcp").Bind[0]

	paths := []string{"/", "/", "/status/201", "/", "/status/404", "/status/500", "/status/302"}
	sendHTTP(t, e.front, paths...)
	const conns, size = 3, 10000
	sendTCP(t, tcpFront, conns, size)

	// The counters settle once every connection has been closed on the
	// proxy's side too.
	eventually(t, "connections closed", func() error {
		if n := e.eng.Front.Current(); n != 0 {
			return fmt.Errorf("%d connections still open", n)
		}
		s := e.snapshot(t)
		return expect(s.Frontends[1].Resp[5]+s.Frontends[1].Resp[2]+s.Frontends[1].Resp[3]+s.Frontends[1].Resp[4], 7, "web responses")
	})

	t.Run("json", func(t *testing.T) {
		s := e.snapshot(t)
		if len(s.Frontends) != 2 || len(s.Backends) != 2 {
			t.Fatalf("frontends %d, backends %d", len(s.Frontends), len(s.Backends))
		}
		tcp, web := s.Frontends[0], s.Frontends[1]
		app, echo := s.Backends[0], s.Backends[1]
		for _, err := range []error{
			expect(web.Proxy, "web", "frontends[1]"),
			expect(web.STot, len(paths), "web stot"),
			expect(web.ReqTot, len(paths), "web req_tot"),
			expect(web.Resp, [6]uint64{0, 0, 4, 1, 1, 1}, "web hrsp"),
			expect(web.SLim, 100, "web slim"),
			expect(app.STot, len(paths), "app stot"),
			expect(app.Resp, [6]uint64{0, 0, 4, 1, 1, 1}, "app hrsp"),
			expect(app.Servers[0].STot+app.Servers[1].STot, len(paths), "app servers stot"),
			expect(app.Servers[0].STot-app.Servers[1].STot <= 1, true, "roundrobin spread"),
			expect(app.Servers[1].SLim, 50, "b slim"),
			expect(tcp.STot, conns, "tcp stot"),
			expect(tcp.BytesIn, conns*size, "tcp bin"),
			expect(tcp.BytesOut, conns*size, "tcp bout"),
			expect(echo.STot, conns, "echo stot"),
			expect(echo.Servers[0].BytesIn, conns*size, "e1 bin"),
			expect(echo.Servers[0].BytesOut, conns*size, "e1 bout"),
			expect(s.Process.MaxConn, 500, "maxconn"),
			expect(s.Process.Admin, true, "admin"),
		} {
			if err != nil {
				t.Error(err)
			}
		}
		if web.BytesIn == 0 || web.BytesOut == 0 || app.BytesIn == 0 || app.BytesOut == 0 {
			t.Errorf("http bytes not counted: web %d/%d app %d/%d", web.BytesIn, web.BytesOut, app.BytesIn, app.BytesOut)
		}
	})

	t.Run("csv", func(t *testing.T) {
		rows := e.csvRows(t)
		want := map[string]map[string]string{
			"web/FRONTEND": {"stot": "7", "req_tot": "7", "hrsp_2xx": "4", "hrsp_3xx": "1", "hrsp_4xx": "1", "hrsp_5xx": "1", "slim": "100", "status": "OPEN", "type": "0"},
			"app/BACKEND":  {"stot": "7", "hrsp_2xx": "4", "hrsp_5xx": "1", "status": "UP", "act": "2", "weight": "2", "type": "1"},
			"app/b":        {"slim": "50", "status": "no check", "type": "2", "weight": "1", "act": "1", "bck": "0"},
			"tcp/FRONTEND": {"stot": "3", "bin": "30000", "bout": "30000", "hrsp_2xx": ""},
			"echo/e1":      {"stot": "3", "bin": "30000", "bout": "30000", "econ": "0", "eresp": "0"},
		}
		for key, cols := range want {
			r, ok := rows[key]
			if !ok {
				t.Errorf("no csv row %s", key)
				continue
			}
			for k, v := range cols {
				if r[k] != v {
					t.Errorf("%s %s = %q, want %q", key, k, r[k], v)
				}
			}
		}
		if len(rows) != 2+2+2+1 {
			t.Errorf("%d csv rows, want 7", len(rows))
		}
	})

	t.Run("html", func(t *testing.T) {
		rows, body := e.page(t, "/")
		for id, cols := range map[string]map[string]string{
			"row:fe:web":     {"stot": "7", "hrsp_2xx": "4", "hrsp_3xx": "1", "hrsp_4xx": "1", "hrsp_5xx": "1", "status": "OPEN", "slim": "100"},
			"row:be:app":     {"stot": "7", "hrsp_2xx": "4", "status": "UP", "weight": "2/2"},
			"row:fe:tcp":     {"stot": "3", "bin": "30000", "bout": "30000"},
			"row:sv:echo/e1": {"stot": "3", "bin": "30000", "bout": "30000", "status": "no check", "weight": "1/1"},
		} {
			r, ok := rows[id]
			if !ok {
				t.Errorf("no row %s", id)
				continue
			}
			for k, v := range cols {
				if r.Cells[k] != v {
					t.Errorf("%s %s = %q, want %q", id, k, r.Cells[k], v)
				}
			}
		}
		for _, want := range []string{`http-equiv="refresh"`, `href="/;norefresh"`, `<dd id="conns">0 / 500</dd>`, `<dd id="reloads">0</dd>`, `<dd id="pid">` + strconv.Itoa(os.Getpid()) + `</dd>`} {
			if !strings.Contains(body, want) {
				t.Errorf("page lacks %s", want)
			}
		}
	})

	t.Run("metrics", func(t *testing.T) {
		mf := e.metrics(t)
		for _, c := range []struct {
			name   string
			labels []string
			want   float64
		}{
			{"sluice_frontend_sessions_total", []string{"frontend", "web"}, 7},
			{"sluice_frontend_sessions_total", []string{"frontend", "tcp"}, 3},
			{"sluice_frontend_bytes_in_total", []string{"frontend", "tcp"}, 30000},
			{"sluice_frontend_bytes_out_total", []string{"frontend", "tcp"}, 30000},
			{"sluice_frontend_current_sessions", []string{"frontend", "web"}, 0},
			{"sluice_frontend_limit_sessions", []string{"frontend", "web"}, 100},
			{"sluice_frontend_http_requests_total", []string{"frontend", "web"}, 7},
			{"sluice_frontend_http_responses_total", []string{"frontend", "web", "code", "2xx"}, 4},
			{"sluice_frontend_http_responses_total", []string{"frontend", "web", "code", "5xx"}, 1},
			{"sluice_backend_sessions_total", []string{"backend", "app"}, 7},
			{"sluice_backend_http_responses_total", []string{"backend", "app", "code", "4xx"}, 1},
			{"sluice_backend_up", []string{"backend", "app"}, 1},
			{"sluice_backend_current_queue", []string{"backend", "app"}, 0},
			{"sluice_backend_bytes_in_total", []string{"backend", "echo"}, 30000},
			{"sluice_server_up", []string{"backend", "app", "server", "a"}, 1},
			{"sluice_server_weight", []string{"backend", "app", "server", "a"}, 1},
			{"sluice_server_limit_sessions", []string{"backend", "app", "server", "b"}, 50},
			{"sluice_server_admin_state", []string{"backend", "app", "server", "a"}, 0},
			{"sluice_server_sessions_total", []string{"backend", "echo", "server", "e1"}, 3},
			{"sluice_server_bytes_out_total", []string{"backend", "echo", "server", "e1"}, 30000},
			{"sluice_process_max_connections", nil, 500},
		} {
			if got := metric(t, mf, c.name, c.labels...); got != c.want {
				t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
			}
		}
		for _, name := range []string{"go_goroutines", "process_cpu_seconds_total", "sluice_build_info"} {
			if mf[name] == nil {
				t.Errorf("no %s", name)
			}
		}
	})
}

func TestStatesChangeOnPage(t *testing.T) {
	e := start(t, trafficConfig(t))
	app := e.eng.Backends["app"]
	a, b := app.Server("a"), app.Server("b")

	state := func(id string) pageRow {
		t.Helper()
		rows, _ := e.page(t, "/;norefresh")
		return rows[id]
	}
	check := func(id, status, class string) {
		t.Helper()
		r := state(id)
		if r.Cells["status"] != status || !strings.Contains(r.Class, class) {
			t.Errorf("%s: status %q class %q, want %q / %q", id, r.Cells["status"], r.Class, status, class)
		}
	}
	check("row:sv:app/a", "no check", "no-check") // app has no health check

	// Health takes a server down, with a failed check on record.
	a.SetLastCheck(backend.CheckResult{At: time.Now(), OK: false, Desc: "HTTP 500", Code: 500, Duration: 3 * time.Millisecond})
	a.SetUp(false)
	check("row:sv:app/a", "DOWN", "down")
	if r := state("row:sv:app/a"); !strings.HasPrefix(r.Cells["check"], "HTTP 500") || r.Cells["chkdown"] != "1" || r.Cells["check_duration"] != "3" {
		t.Errorf("check cells: %v", r.Cells)
	}
	// Rising again: "DOWN 1/2".
	a.SetProgress(1, 2)
	check("row:sv:app/a", "DOWN 1/2", "going-up")
	a.SetProgress(0, 0)
	a.SetUp(true)
	check("row:sv:app/a", "no check", "no-check")
	// Falling: "UP 2/3".
	a.SetProgress(2, 3)
	check("row:sv:app/a", "UP 2/3", "going-down")
	a.SetProgress(0, 0)

	// Drained, in maintenance and reweighted through the API.
	auth := "Bearer " + e.token
	for _, st := range []struct {
		state, status, class string
		admin                float64
	}{
		{"drain", "DRAIN", "drain", 1}, {"maint", "MAINT", "maint", 2}, {"ready", "no check", "no-check", 0},
	} {
		code, body := e.post(t, "POST", "/api/servers/app/b/state", auth, url.Values{"state": {st.state}})
		if code != 200 {
			t.Fatalf("set %s: %d %s", st.state, code, body)
		}
		check("row:sv:app/b", st.status, st.class)
		mf := e.metrics(t)
		if got := metric(t, mf, "sluice_server_admin_state", "backend", "app", "server", "b"); got != st.admin {
			t.Errorf("after %s: sluice_server_admin_state = %v, want %v", st.state, got, st.admin)
		}
	}
	code, body := e.post(t, "POST", "/api/servers/app/b/weight", auth, url.Values{"weight": {"7"}})
	if code != 200 || b.Weight() != 7 {
		t.Fatalf("set weight: %d %s, weight %d", code, body, b.Weight())
	}
	if r := state("row:sv:app/b"); r.Cells["weight"] != "7/7" {
		t.Errorf("weight cell %q, want 7/7", r.Cells["weight"])
	}
	if r := e.csvRows(t)["app/b"]; r["weight"] != "7" || r["uweight"] != "7" {
		t.Errorf("csv weight %q uweight %q", r["weight"], r["uweight"])
	}
	if sv := e.snapshot(t).Backends[0].Servers[1]; sv.ConfWeight != 1 {
		t.Errorf("json conf_weight %d, want 1", sv.ConfWeight)
	}

	// A drained server gets no new requests.
	e.post(t, "POST", "/api/servers/app/b/state", auth, url.Values{"state": {"drain"}})
	before := b.Counters.Sessions.Load()
	sendHTTP(t, e.front, "/", "/", "/")
	if got := b.Counters.Sessions.Load(); got != before {
		t.Errorf("drained server got %d requests", got-before)
	}
}

func TestHealthz(t *testing.T) {
	e := start(t, trafficConfig(t))
	app := e.eng.Backends["app"]
	if body := e.get(t, "/healthz", 200); strings.TrimSpace(body) != "ok" {
		t.Errorf("healthz: %q", body)
	}
	app.Server("a").SetUp(false)
	app.Server("b").SetAdmin(backend.AdminMaint)
	body := e.get(t, "/healthz", 503)
	if !strings.Contains(body, "vital frontend web has no server up (backend app)") || strings.Count(body, "\n") != 1 {
		t.Errorf("healthz reason: %q", body)
	}
	app.Server("b").SetAdmin(backend.AdminReady)
	e.get(t, "/healthz", 200)
}

func TestAdminRefusals(t *testing.T) {
	e := start(t, trafficConfig(t))
	good := "Bearer " + e.token
	state := url.Values{"state": {"maint"}}
	for _, tc := range []struct {
		desc, method, path, auth string
		form                     url.Values
		want                     int
	}{
		{"no token", "POST", "/api/servers/app/a/state", "", state, 401},
		{"wrong token", "POST", "/api/servers/app/a/state", "Bearer nope", state, 401},
		{"token of the wrong scheme", "POST", "/api/servers/app/a/state", "Basic " + e.token, state, 401},
		{"token in the form, wrong", "POST", "/api/servers/app/a/state", "", url.Values{"state": {"maint"}, "token": {"nope"}}, 401},
		{"no token for sticky", "GET", "/api/backends/echo/sticky", "", nil, 401},
		{"wrong method for state", "GET", "/api/servers/app/a/state", good, nil, 405},
		{"wrong method for weight", "PUT", "/api/servers/app/a/weight", good, nil, 405},
		{"wrong method for sticky", "POST", "/api/backends/echo/sticky", good, nil, 405},
		{"wrong method without token", "DELETE", "/api/servers/app/a/state", "", nil, 405},
		{"unknown backend", "POST", "/api/servers/nope/a/state", good, state, 404},
		{"unknown server", "POST", "/api/servers/app/nope/state", good, state, 404},
		{"unknown server for weight", "POST", "/api/servers/app/nope/weight", good, url.Values{"weight": {"2"}}, 404},
		{"unknown backend for sticky", "GET", "/api/backends/nope/sticky", good, nil, 404},
		{"bad state", "POST", "/api/servers/app/a/state", good, url.Values{"state": {"off"}}, 400},
		{"bad weight", "POST", "/api/servers/app/a/weight", good, url.Values{"weight": {"heavy"}}, 400},
		{"weight out of range", "POST", "/api/servers/app/a/weight", good, url.Values{"weight": {"1000"}}, 400},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			code, body := e.post(t, tc.method, tc.path, tc.auth, tc.form)
			if code != tc.want {
				t.Errorf("%s %s: %d %q, want %d", tc.method, tc.path, code, body, tc.want)
			}
		})
	}
	if a := e.eng.Backends["app"].Server("a"); a.Admin() != backend.AdminReady || a.Weight() != 1 {
		t.Errorf("a refused call changed server a: admin %d weight %d", a.Admin(), a.Weight())
	}

	t.Run("form of the page without JavaScript", func(t *testing.T) {
		code, _ := e.post(t, "POST", "/api/servers/app/a/state", "", url.Values{"state": {"drain"}, "token": {e.token}, "from": {"page"}})
		if code != http.StatusSeeOther {
			t.Fatalf("status %d, want 303 back to the page", code)
		}
		if a := e.eng.Backends["app"].Server("a"); a.Admin() != backend.AdminDrain {
			t.Errorf("admin state %d, want drain", a.Admin())
		}
	})

	t.Run("sticky table", func(t *testing.T) {
		sendTCP(t, e.eng.Config.Frontend("tcp").Bind[0], 1, 10)
		code, body := e.post(t, "GET", "/api/backends/echo/sticky", good, nil)
		if code != 200 || !strings.Contains(body, `"client": "127.0.0.1"`) || !strings.Contains(body, `"server": "e1"`) {
			t.Errorf("sticky: %d %s", code, body)
		}
	})
}

func TestAdminDisabledWithoutToken(t *testing.T) {
	addr := httpBackend(t, "a")
	e := start(t, fmt.Sprintf(`[stats]
bind = "{{STATS}}"
[frontend.web]
mode = "http"
bind = ["{{FRONT}}"]
default_backend = "app"
[[backend.app.server]]
name = "a"
address = %q
`, addr))
	code, body := e.post(t, "POST", "/api/servers/app/a/state", "Bearer anything", url.Values{"state": {"maint"}})
	if code != http.StatusForbidden || !strings.Contains(body, "admin_token_file") {
		t.Errorf("admin without a token file: %d %q, want 403", code, body)
	}
	_, page := e.page(t, "/")
	if strings.Contains(page, "<form") || strings.Contains(page, "<script") {
		t.Error("page shows admin forms or script although the admin API is off")
	}
	e.get(t, "/healthz", 200) // no vital frontends: healthy
}

func TestPageIsSelfContained(t *testing.T) {
	e := start(t, trafficConfig(t))
	_, body := e.page(t, "/;norefresh")
	if strings.Contains(body, `http-equiv="refresh"`) {
		t.Error("/;norefresh still refreshes")
	}
	for _, bad := range []string{`src="http`, `href="http`, `@import`, `url(`} {
		if strings.Contains(body, bad) {
			t.Errorf("page loads an external asset: %s", bad)
		}
	}
	for _, want := range []string{`name="token"`, `class="nojs"`, `<form class="act" method="post" action="/api/servers/app/a/state">`} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %s", want)
		}
	}
	e.get(t, "/;bogus", 404)
	e.get(t, "/elsewhere", 404)
}

// GOGC=off reads back from the runtime as -1: the page says "off".
func TestPageShowsGOGCOff(t *testing.T) {
	e := start(t, trafficConfig(t))
	old := debug.SetGCPercent(-1)
	defer debug.SetGCPercent(old)
	if body := e.get(t, "/", 200); !strings.Contains(body, "GOGC off") {
		i := strings.Index(body, `id="gc"`)
		t.Fatalf("page: %q", body[i:min(len(body), i+200)])
	}
}
