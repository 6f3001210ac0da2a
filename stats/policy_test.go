package stats_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"sluice/conf"
	"sluice/engine"
	"sluice/internal/testutil"
	"sluice/stats"
)

// startEdited is start with the parsed configuration changed by edit
// before the engine starts (the policy's keys are set as conf.Parse fills
// them).
func startEdited(t *testing.T, src string, edit func(*conf.Config)) *env {
	t.Helper()
	dir := t.TempDir()
	tokFile := filepath.Join(dir, "admin.token")
	if err := os.WriteFile(tokFile, []byte(testToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e := &env{stats: testutil.FreeAddr(t), token: testToken, front: testutil.FreeAddr(t)}
	src = strings.NewReplacer("{{STATS}}", e.stats, "{{TOKEN_FILE}}", tokFile, "{{FRONT2}}", testutil.FreeAddr(t), "{{FRONT}}", e.front).Replace(src)
	cfg, err := conf.Parse(t.Name()+".toml", []byte(src))
	if err != nil {
		t.Fatalf("config: %v\n%s", err, src)
	}
	edit(cfg)
	eng, err := engine.Start(cfg, nil, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		eng.Shutdown(ctx)
	})
	e.eng = eng
	e.cfg = filepath.Join(dir, "sluice.toml")
	if err := os.WriteFile(e.cfg, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	return e
}

func dialFromAddr(t *testing.T, ip, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	t.Cleanup(func() { c.Close() })
	return c
}

// policyEnv runs a tcp frontend f whose rule denies 127.0.0.4 and whose
// rate limit allows one connection per client, a tcp frontend g with no
// policy, and makes traffic: 127.0.0.2 holds one connection open and has a
// second one closed, 127.0.0.4 is denied.
func policyEnv(t *testing.T) *env {
	srv := testutil.Serve(t, "s", testutil.Namer("s"))
	src := `[stats]
bind = "{{STATS}}"
admin_token_file = "{{TOKEN_FILE}}"
[frontend.f]
bind = ["{{FRONT}}"]
default_backend = "b"
[frontend.g]
bind = ["{{FRONT2}}"]
default_backend = "b"
[backend.b]
[[backend.b.server]]
name = "s"
address = "` + srv.Addr + `"
`
	e := startEdited(t, src, func(c *conf.Config) {
		f := c.Frontends[0]
		f.Rules = []conf.Rule{{Line: 1, Src: []netip.Prefix{netip.MustParsePrefix("127.0.0.4/32")}, Action: conf.ActionDeny}}
		f.RateLimit = &conf.RateLimit{Connections: 1, Period: 10 * time.Second, Action: conf.LimitDeny, TableSize: 1000}
	})
	held := dialFromAddr(t, "127.0.0.2", e.front)
	if line, err := readLine(held); err != nil || line != "s" {
		t.Fatalf("first connection: %q %v", line, err)
	}
	for _, ip := range []string{"127.0.0.2", "127.0.0.4"} {
		c := dialFromAddr(t, ip, e.front)
		if n, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatalf("connection from %s read %d bytes, want it closed", ip, n)
		}
	}
	return e
}

func readLine(c net.Conn) (string, error) {
	var b [64]byte
	n, err := io.ReadAtLeast(c, b[:], 2)
	return strings.TrimSpace(string(b[:n])), err
}

// TestPolicyCountersEverywhere: the policy counters of a frontend are in
// /api/stats, /metrics and on the page; a frontend without a policy has
// none.
func TestPolicyCountersEverywhere(t *testing.T) {
	e := policyEnv(t)
	snap := e.snapshot(t)
	p := snap.Frontends[0].Policy
	if p == nil {
		t.Fatal("/api/stats: frontend f has no policy counters")
	}
	want := stats.PolicyCounters{ConnDenied: 1, ConnLimited: 1, RateLimit: true, RateClients: 1}
	if *p != want {
		t.Errorf("/api/stats policy = %+v, want %+v", *p, want)
	}
	if snap.Frontends[1].Policy != nil {
		t.Errorf("frontend g without a policy has counters %+v", *snap.Frontends[1].Policy)
	}
	mf := e.metrics(t)
	for name, v := range map[string]float64{
		"sluice_frontend_policy_conn_denied_total":  1,
		"sluice_frontend_policy_conn_limited_total": 1,
		"sluice_frontend_policy_denied_total":       0,
		"sluice_frontend_policy_redirected_total":   0,
		"sluice_frontend_policy_tarpitted_total":    0,
		"sluice_frontend_policy_rate_limited_total": 0,
		"sluice_frontend_rate_clients":              1,
		"sluice_frontend_rate_evicted_total":        0,
	} {
		if got := metric(t, mf, name, "frontend", "f"); got != v {
			t.Errorf("%s{frontend=f} = %v, want %v", name, got, v)
		}
		for _, m := range mf[name].Metric {
			for _, l := range m.Label {
				if l.GetValue() == "g" {
					t.Errorf("%s has a series for frontend g, which has no policy", name)
				}
			}
		}
	}
	body := e.get(t, "/", 200)
	m := regexp.MustCompile(`(?s)<small class="pol" id="pol:f"[^>]*>(.*?)</small>`).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("page has no policy line for frontend f")
	}
	cells := map[string]string{}
	for _, c := range regexp.MustCompile(`data-k="([a-z_]+)">([^<]*)<`).FindAllStringSubmatch(m[1], -1) {
		cells[c[1]] = c[2]
	}
	for k, v := range map[string]string{"pol_conn_denied": "1", "pol_conn_limited": "1", "pol_tarpitted": "0", "rate_clients": "1", "rate_evicted": "0"} {
		if cells[k] != v {
			t.Errorf("page policy %s = %q, want %q (%s)", k, cells[k], v, m[1])
		}
	}
	if strings.Contains(body, `id="pol:g"`) {
		t.Error("page shows a policy line for frontend g, which has none")
	}
}

// TestLimitsAPI: GET /api/frontends/{frontend}/limits lists the clients
// of the rate limit to the admin token only, and says what to do on a
// frontend without a rate limit.
func TestLimitsAPI(t *testing.T) {
	e := policyEnv(t)
	auth := "Bearer " + e.token
	if code, _ := e.post(t, "GET", "/api/frontends/f/limits", "", nil); code != http.StatusUnauthorized {
		t.Errorf("limits without the token: %d, want 401", code)
	}
	code, body := e.post(t, "GET", "/api/frontends/f/limits", auth, nil)
	if code != 200 {
		t.Fatalf("limits: %d %s", code, body)
	}
	var l stats.Limits
	if err := json.Unmarshal([]byte(body), &l); err != nil {
		t.Fatal(err)
	}
	if l.Frontend != "f" || l.Connections != 1 || l.Tracked != 1 || l.Period != 10 || len(l.Clients) != 1 {
		t.Fatalf("limits = %+v", l)
	}
	if c := l.Clients[0]; c.Client != "127.0.0.2" || c.Connections != 1 {
		t.Errorf("client = %+v, want 127.0.0.2 with its one connection open", c)
	}
	if code, body := e.post(t, "GET", "/api/frontends/g/limits", auth, nil); code != http.StatusNotFound || !strings.Contains(body, "[frontend.g.rate_limit]") {
		t.Errorf("limits of g: %d %q", code, body)
	}
	if code, body := e.post(t, "GET", "/api/frontends/nope/limits", auth, nil); code != http.StatusNotFound || !strings.Contains(body, `no frontend "nope"`) {
		t.Errorf("limits of nope: %d %q", code, body)
	}
	if code, body := e.post(t, "GET", "/api/frontends/f/limits?n=x", auth, nil); code != http.StatusBadRequest || !strings.Contains(body, "1 to 1000") {
		t.Errorf("limits ?n=x: %d %q", code, body)
	}
	if code, _ := e.post(t, "POST", "/api/frontends/f/limits", auth, nil); code != http.StatusMethodNotAllowed {
		t.Errorf("POST limits: %d, want 405", code)
	}
}
