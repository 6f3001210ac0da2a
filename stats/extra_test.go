package stats_test

import (
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"sluice/internal/testutil"
)

// TestOtherCounters: refusals sluice answers itself show up by status in
// /metrics, in /api/stats and on the page's "other counters" table.
func TestOtherCounters(t *testing.T) {
	e := start(t, trafficConfig(t))
	for i := 0; i < 2; i++ {
		c := testutil.Dial(t, e.front)
		c.SetDeadline(time.Now().Add(5 * time.Second))
		// Content-Length with Transfer-Encoding: refused as smuggling.
		fmt.Fprint(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n")
		out, _ := io.ReadAll(c)
		if !strings.HasPrefix(string(out), "HTTP/1.1 400") {
			t.Fatalf("got %q, want a 400", out)
		}
		c.Close()
	}
	eventually(t, "refusals in /metrics", func() error {
		return expect(metric(t, e.metrics(t), "sluice_frontend_http_refused_total", "frontend", "web", "code", "400"), 2.0, "400s")
	})
	if v := metric(t, e.metrics(t), "sluice_frontend_proxy_errors_total", "frontend", "tcp"); v != 0 {
		t.Errorf("proxy errors on tcp = %v, want 0", v)
	}
	found := false
	for _, c := range e.snapshot(t).Counters {
		if c.Name == "frontend_http_refused_total" && c.Labels["frontend"] == "web" && c.Labels["code"] == "400" {
			found = c.Value == 2
		}
	}
	if !found {
		t.Error("/api/stats has no frontend_http_refused_total{web,400} = 2")
	}
	if body := e.get(t, "/", 200); !strings.Contains(body, "other counters") || !strings.Contains(body, "frontend_http_refused_total") {
		t.Error("the page has no other-counters table")
	}
}
