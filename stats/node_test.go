package stats_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// TestNodeMaint: POST /api/node/state puts the node in maintenance: it
// still serves, /healthz answers 503 with the reason, the page and
// /metrics show it (sluice_node_maint, sluice_track_file_fault); ready
// ends it. Without the token it is refused.
func TestNodeMaint(t *testing.T) {
	e := start(t, trafficConfig(t))
	auth := "Bearer " + e.token
	if code, _ := e.post(t, "POST", "/api/node/state", "", url.Values{"state": {"maint"}}); code != http.StatusUnauthorized {
		t.Errorf("without the token: %d, want 401", code)
	}
	if code, body := e.post(t, "POST", "/api/node/state", auth, url.Values{"state": {"sleep"}}); code != http.StatusBadRequest || !strings.Contains(body, "ready, maint") {
		t.Errorf("bad state: %d %q, want 400 naming ready, maint", code, body)
	}
	mf := e.metrics(t)
	if metric(t, mf, "sluice_node_maint") != 0 || metric(t, mf, "sluice_track_file_fault") != 0 {
		t.Errorf("before: node_maint %v track_file_fault %v, want 0 0", metric(t, mf, "sluice_node_maint"), metric(t, mf, "sluice_track_file_fault"))
	}
	if code, body := e.post(t, "POST", "/api/node/state", auth, url.Values{"state": {"maint"}}); code != 200 || !strings.Contains(body, "ready -> maint") {
		t.Fatalf("set maint: %d %q", code, body)
	}
	if body := e.get(t, "/healthz", 503); !strings.Contains(body, "node in maintenance") {
		t.Errorf("healthz in maintenance: %q", body)
	}
	mf = e.metrics(t)
	if metric(t, mf, "sluice_node_maint") != 1 || metric(t, mf, "sluice_track_file_fault") != 1 {
		t.Errorf("in maintenance: node_maint %v track_file_fault %v, want 1 1", metric(t, mf, "sluice_node_maint"), metric(t, mf, "sluice_track_file_fault"))
	}
	if _, html := e.page(t, "/;norefresh"); !strings.Contains(html, "maint · cannot serve: node in maintenance") {
		t.Errorf("the page does not show the node in maintenance")
	}
	if snap := e.snapshot(t); snap.Process.Node != "maint" || !strings.Contains(snap.Process.Unserved, "maintenance") {
		t.Errorf("json process node %q unserved %q", snap.Process.Node, snap.Process.Unserved)
	}
	// Still serving what reaches it.
	sendHTTP(t, e.front, "/")
	e.post(t, "POST", "/api/node/state", auth, url.Values{"state": {"ready"}})
	e.get(t, "/healthz", 200)
}
