package stats_test

import (
	"fmt"
	"testing"

	"sluice/internal/testutil"
)

// TestCSVCheckStatusIsHAProxys: HAProxy's check_status is a code a script
// compares (L4OK, L4CON, L7OK, L7STS…), check_desc its wording and
// last_chk the detail. sluice wrote its own text ("connection refused",
// "HTTP 503") in all three, so `check_status == "L4OK"` never held.
func TestCSVCheckStatusIsHAProxys(t *testing.T) {
	echo := testutil.Serve(t, "echo", testutil.Echo)
	web := httpBackend(t, "w")
	refused := testutil.FreeAddr(t) // nothing listens there
	e := start(t, trafficConfig(t)+fmt.Sprintf(`
[backend.l4]
[backend.l4.health]
check = "tcp"
interval = "20ms"
fall = 1
[[backend.l4.server]]
name = "up"
address = %q
[[backend.l4.server]]
name = "down"
address = %q

[backend.l7ok]
[backend.l7ok.health]
check = "http"
interval = "20ms"
[[backend.l7ok.server]]
name = "w"
address = %q

[backend.l7bad]
[backend.l7bad.health]
check = "http"
path = "/status/503"
interval = "20ms"
fall = 1
[[backend.l7bad.server]]
name = "w"
address = %q
`, echo.Addr, refused, web, web))

	want := map[string][4]string{ // check_status, check_desc, check_code, last_chk
		"l4/up":      {"L4OK", "Layer4 check passed", "", "L4OK"},
		"l4/down":    {"L4CON", "Layer4 connection problem", "", "connection refused"},
		"l7ok/w":     {"L7OK", "Layer7 check passed", "200", "HTTP 200"},
		"l7bad/w":    {"L7STS", "Layer7 wrong status", "503", "HTTP 503"},
		"app/a":      {"", "", "", ""}, // no check: empty, as HAProxy's
		"echo/e1":    {"", "", "", ""},
		"l4/BACKEND": {"", "", "", ""},
	}
	eventually(t, "check columns", func() error {
		rows := e.csvRows(t)
		for id, w := range want {
			r := rows[id]
			if r == nil {
				return fmt.Errorf("no row %s", id)
			}
			got := [4]string{r["check_status"], r["check_desc"], r["check_code"], r["last_chk"]}
			if got != w {
				return fmt.Errorf("%s: check_status, check_desc, check_code, last_chk = %q, want %q", id, got, w)
			}
		}
		return nil
	})
}
