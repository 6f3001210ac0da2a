package stats_test

import (
	"net/http"
	"strings"
	"testing"
)

// TestPageRefusesFraming: the page with the admin forms may not be framed by
// another site (clickjacking the token-holding operator's buttons).
func TestPageRefusesFraming(t *testing.T) {
	e := start(t, trafficConfig(t))
	for _, path := range []string{"/", "/;norefresh"} {
		resp, err := http.Get(e.url(path))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		csp := resp.Header.Get("Content-Security-Policy")
		if !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Errorf("GET %s: Content-Security-Policy %q lacks frame-ancestors 'none'", path, csp)
		}
		if got := resp.Header.Get("X-Frame-Options"); got != "DENY" {
			t.Errorf("GET %s: X-Frame-Options %q, want DENY (browsers without CSP 2)", path, got)
		}
	}
}
