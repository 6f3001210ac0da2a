package packaging_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"sluice/internal/testutil"
)

var metricName = regexp.MustCompile(`\bsluice_[A-Za-z0-9_]+`)

// queries returns every PromQL text of the dashboard (panel targets,
// template variables, annotations): the strings under "expr", "query" and
// "definition", wherever they are nested.
func queries(v any) []string {
	var out []string
	switch v := v.(type) {
	case map[string]any:
		for k, c := range v {
			if s, ok := c.(string); ok && (k == "expr" || k == "query" || k == "definition") {
				out = append(out, s)
				continue
			}
			out = append(out, queries(c)...)
		}
	case []any:
		for _, c := range v {
			out = append(out, queries(c)...)
		}
	}
	return out
}

// TestGrafanaDashboardMetricsExist: every metric the dashboard in
// examples/grafana queries is in /metrics of a real sluice with http, tcp
// and udp frontends, health checks, DNS discovery and peers, so no panel
// stays empty for a misspelt or renamed metric.
func TestGrafanaDashboardMetricsExist(t *testing.T) {
	raw, err := os.ReadFile("../examples/grafana/sluice-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			ID      int    `json:"id"`
			Title   string `json:"title"`
			Type    string `json:"type"`
			GridPos struct{ X, Y, W, H int }
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatal(err)
	}
	ids := map[int]bool{}
	for _, p := range dash.Panels {
		if ids[p.ID] {
			t.Errorf("panel %q: id %d used twice", p.Title, p.ID)
		}
		ids[p.ID] = true
		if p.GridPos.W < 1 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("panel %q: gridPos x=%d w=%d is outside Grafana's 24 columns", p.Title, p.GridPos.X, p.GridPos.W)
		}
		if p.Type != "row" && len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			if !metricName.MatchString(tg.Expr) {
				t.Errorf("panel %q: query %q names no sluice metric", p.Title, tg.Expr)
			}
		}
	}
	var doc any
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	for _, q := range queries(doc) {
		for _, n := range metricName.FindAllString(q, -1) {
			want[n] = true
		}
	}
	if len(want) < 40 {
		t.Fatalf("the dashboard queries only %d metrics: %v", len(want), want)
	}

	metrics := scrapeFullSluice(t)
	have := map[string]bool{}
	for _, l := range strings.Split(metrics, "\n") {
		if n := metricName.FindString(l); n != "" && strings.HasPrefix(l, n) {
			have[n] = true
		}
	}
	var missing []string
	for n := range want {
		if !have[n] {
			missing = append(missing, n)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("the dashboard queries metrics /metrics does not have: %s", strings.Join(missing, ", "))
	}
}

// scrapeFullSluice starts an engine with every kind of part that has
// metrics and returns its /metrics once a health check has run (the
// check duration is there only after the first check).
func scrapeFullSluice(t *testing.T) string {
	dir := t.TempDir()
	secret := filepath.Join(dir, "peers.secret")
	if err := os.WriteFile(secret, []byte("0123456789abcdef0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	web := testutil.Serve(t, "web", testutil.Echo)
	db := testutil.Serve(t, "db", testutil.Echo)
	statsAddr := testutil.FreeAddr(t)
	src := fmt.Sprintf(`
[stats]
bind = %q
[peers]
bind = %q
peers = [%q]
secret_file = %q
[frontend.www]
mode = "http"
bind = ["{{FRONT}}"]
default_backend = "app"
[frontend.db]
mode = "tcp"
bind = [%q]
default_backend = "db"
[frontend.dns]
mode = "udp"
bind = [%q]
max_flows = 10
default_backend = "dns"
[backend.app]
[backend.app.health]
check = "tcp"
interval = "50ms"
[[backend.app.server]]
name = "app1"
address = %q
[backend.db]
sticky = "source"
[[backend.db.server]]
name = "db1"
address = %q
maxconn = 10
[backend.dns]
[[backend.dns.server]]
address = %q
[backend.discovered]
[backend.discovered.dns]
name = "svc.test."
port = 80
resolvers = [%q]
`, statsAddr, testutil.FreeAddr(t), testutil.ClosedAddr(t), secret, testutil.FreeAddr(t), testutil.FreeAddr(t),
		web.Addr, db.Addr, testutil.UDPEcho(t, ""), testutil.ClosedAddr(t))
	testutil.Start(t, src)

	var body string
	testutil.WaitFor(t, "a health check in /metrics", 10*time.Second, func() bool {
		resp, err := http.Get("http://" + statsAddr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET /metrics: %v %d", err, resp.StatusCode)
		}
		body = string(b)
		return strings.Contains(body, "\nsluice_server_check_duration_seconds{")
	})
	return body
}
