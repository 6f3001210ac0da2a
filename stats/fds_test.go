package stats_test

import (
	"fmt"
	"strconv"
	"strings"
	"testing"

	"sluice/internal/testutil"
)

// The descriptor budget (issue 15) is on the page, in /api/stats and in
// /metrics, with the flows of a udp frontend and their refusals.
func TestDescriptorBudgetShown(t *testing.T) {
	be := testutil.Serve(t, "be", testutil.Echo)
	e := start(t, fmt.Sprintf(`[stats]
bind = "{{STATS}}"
[frontend.web]
bind = ["{{FRONT}}"]
default_backend = "be"
[frontend.dns]
mode = "udp"
bind = ["{{FRONT2}}"]
max_flows = 50
default_backend = "dns"
[[backend.be.server]]
address = %q
[[backend.dns.server]]
address = "127.0.0.1:53"
`, be.Addr))
	fds := e.eng.FDs
	page := e.get(t, "/", 200)
	if want := fmt.Sprintf("limit %d · conns %d · udp flows 0 / 50 · reserve", fds.Limit, 2*fds.MaxConn); !strings.Contains(page, want) {
		t.Errorf("page lacks %q", want)
	}
	if api := e.get(t, "/api/stats", 200); !strings.Contains(api, `"flows_share": 50`) {
		t.Errorf("/api/stats lacks the budget: %.300s", api)
	}
	metrics := e.get(t, "/metrics", 200)
	for _, want := range []string{
		"sluice_process_fd_limit " + strconv.FormatFloat(float64(fds.Limit), 'g', -1, 64),
		"sluice_process_fd_maxconn_share " + strconv.FormatFloat(2*float64(fds.MaxConn), 'g', -1, 64),
		"sluice_process_fd_flows_share 50",
		`sluice_frontend_udp_flows{frontend="dns"} 0`,
		`sluice_frontend_udp_flows_limit{frontend="dns"} 50`,
		`sluice_frontend_udp_flows_refused_total{frontend="dns",reason="per_source"} 0`,
		`sluice_frontend_udp_flows_refused_total{frontend="dns",reason="no_socket"} 0`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}
