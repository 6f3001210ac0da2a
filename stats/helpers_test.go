package stats_test

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"golang.org/x/net/html"

	"sluice/engine"
	"sluice/internal/testutil"
	"sluice/stats"
)

const testToken = "test-token-0123456789abcdef"

// env is a running engine with a stats listener, and the addresses the
// test needs.
type env struct {
	eng   *engine.Engine
	front string // first frontend ({{FRONT}})
	stats string // stats listener host:port
	token string
	cfg   string // config file written for `sluice ctl`
}

// start runs src in-process. Besides testutil.Start's {{FRONT}}, it fills
// {{STATS}} (a free loopback address), {{TOKEN_FILE}} (a file holding
// testToken) and {{FRONT2}} (another free address).
func start(t *testing.T, src string) *env {
	t.Helper()
	dir := t.TempDir()
	tokFile := filepath.Join(dir, "admin.token")
	if err := os.WriteFile(tokFile, []byte(testToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e := &env{stats: testutil.FreeAddr(t), token: testToken}
	src = strings.ReplaceAll(src, "{{STATS}}", e.stats)
	src = strings.ReplaceAll(src, "{{TOKEN_FILE}}", tokFile)
	src = strings.ReplaceAll(src, "{{FRONT2}}", testutil.FreeAddr(t))
	e.eng, e.front = testutil.Start(t, src)
	e.cfg = filepath.Join(dir, "sluice.toml")
	if err := os.WriteFile(e.cfg, []byte(strings.ReplaceAll(src, "{{FRONT}}", e.front)), 0o600); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) url(path string) string { return "http://" + e.stats + path }

// get fetches path from the stats listener and returns the body, failing
// the test unless the status is want.
func (e *env) get(t *testing.T, path string, want int) string {
	t.Helper()
	resp, err := http.Get(e.url(path))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != want {
		t.Fatalf("GET %s: %s, want %d: %s", path, resp.Status, want, body)
	}
	return string(body)
}

// post sends an admin form with the given Authorization header value ("" for
// none) and returns the status and body.
func (e *env) post(t *testing.T, method, path, auth string, form url.Values) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, e.url(path), strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func (e *env) snapshot(t *testing.T) stats.Snapshot {
	t.Helper()
	var s stats.Snapshot
	if err := json.Unmarshal([]byte(e.get(t, "/api/stats", 200)), &s); err != nil {
		t.Fatal(err)
	}
	return s
}

// csvRows reads /;csv into maps keyed by column name, indexed by
// "pxname/svname".
func (e *env) csvRows(t *testing.T) map[string]map[string]string {
	t.Helper()
	recs, err := csv.NewReader(strings.NewReader(e.get(t, "/;csv", 200))).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) == 0 || !strings.HasPrefix(recs[0][0], "# pxname") {
		t.Fatalf("csv header: %v", recs)
	}
	hdr := recs[0]
	hdr[0] = "pxname"
	out := map[string]map[string]string{}
	for _, r := range recs[1:] {
		m := map[string]string{}
		for i, v := range r {
			m[hdr[i]] = v
		}
		out[m["pxname"]+"/"+m["svname"]] = m
	}
	return out
}

// metrics scrapes /metrics and parses it.
func (e *env) metrics(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mf, err := p.TextToMetricFamilies(strings.NewReader(e.get(t, "/metrics", 200)))
	if err != nil {
		t.Fatal(err)
	}
	return mf
}

// metric returns the value of the series of family name with exactly the
// given labels (name=value pairs), or fails.
func metric(t *testing.T, mf map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	t.Helper()
	fam := mf[name]
	if fam == nil {
		t.Fatalf("no metric %s", name)
	}
	for _, m := range fam.Metric {
		match := len(m.Label) == len(labels)/2
		for i := 0; match && i < len(labels); i += 2 {
			found := false
			for _, l := range m.Label {
				if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
					found = true
				}
			}
			match = found
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		}
	}
	t.Fatalf("no series %s%v", name, labels)
	return 0
}

// pageRow is one row of the HTML page: its class and its cells by data-k
// (the data-v value when there is one, else the text).
type pageRow struct {
	Class string
	Cells map[string]string
}

// page fetches path and returns its rows by id.
func (e *env) page(t *testing.T, path string) (map[string]pageRow, string) {
	t.Helper()
	body := e.get(t, path, 200)
	return parseRows(t, body), body
}

func parseRows(t *testing.T, body string) map[string]pageRow {
	t.Helper()
	doc, err := html.Parse(strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]pageRow{}
	var walk func(n *html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode && n.Data == "tr" && attr(n, "id") != "" {
			r := pageRow{Class: attr(n, "class"), Cells: map[string]string{}}
			for c := n.FirstChild; c != nil; c = c.NextSibling {
				if c.Type != html.ElementNode || c.Data != "td" || attr(c, "data-k") == "" {
					continue
				}
				v := attr(c, "data-v")
				if v == "" {
					v = strings.TrimSpace(text(c))
				}
				r.Cells[attr(c, "data-k")] = v
			}
			rows[attr(n, "id")] = r
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(doc)
	return rows
}

func attr(n *html.Node, k string) string {
	for _, a := range n.Attr {
		if a.Key == k {
			return a.Val
		}
	}
	return ""
}

func text(n *html.Node) string {
	if n.Type == html.TextNode {
		return n.Data
	}
	var b strings.Builder
	for c := n.FirstChild; c != nil; c = c.NextSibling {
		b.WriteString(text(c))
	}
	return b.String()
}

// eventually polls cond until it returns nil or 5 seconds pass: counters
// are updated by the proxy's goroutines just after the bytes they count
// reach the client, so a test waits for them to settle.
func eventually(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func expect(got, want any, what string) error {
	if fmt.Sprint(got) != fmt.Sprint(want) {
		return fmt.Errorf("%s = %v, want %v", what, got, want)
	}
	return nil
}

// httpBackend is a real HTTP server on loopback answering by path:
// /status/NNN answers NNN, anything else 200 with the server's name.
func httpBackend(t *testing.T, name string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &httptest.Server{Listener: ln, Config: &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		code := 200
		if c, ok := strings.CutPrefix(r.URL.Path, "/status/"); ok {
			fmt.Sscan(c, &code)
		}
		w.WriteHeader(code)
		fmt.Fprintf(w, "%s\n", name)
	})}}
	srv.Start()
	t.Cleanup(srv.Close)
	return ln.Addr().String()
}
