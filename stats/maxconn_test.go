package stats_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"sluice/internal/testutil"
)

// Review of issue 15: idle connections to the stats listener had no cap,
// so enough of them took every descriptor of the worker. With
// stats.maxconn = 3, at most 3 are served; the rest wait in the kernel's
// queue (counted) and are served when a slot frees.
func TestStatsListenerConnectionCap(t *testing.T) {
	be := testutil.Serve(t, "be", testutil.Echo)
	e := start(t, `[stats]
bind = "{{STATS}}"
maxconn = 3
[frontend.web]
bind = ["{{FRONT}}"]
default_backend = "be"
[[backend.be.server]]
address = "`+be.Addr+`"
`)
	get := func(c net.Conn, br *bufio.Reader) string {
		t.Helper()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("GET /metrics: %d", resp.StatusCode)
		}
		return string(b)
	}
	a := testutil.Dial(t, e.stats)
	defer a.Close()
	ar := bufio.NewReader(a)
	if m := get(a, ar); !strings.Contains(m, "sluice_stats_conns_limit 3") {
		t.Fatalf("/metrics lacks the cap:\n%.2000s", m)
	}
	var idle []net.Conn
	for range 5 {
		c := testutil.Dial(t, e.stats)
		defer c.Close()
		idle = append(idle, c)
	}
	// a and two idle ones are served; three wait.
	var m string
	testutil.WaitFor(t, "accepts waiting for a slot", 10*time.Second, func() bool {
		m = get(a, ar)
		return strings.Contains(m, "sluice_stats_conns 3\n") && !strings.Contains(m, "sluice_stats_conns_waited_total 0\n")
	})
	idle[0].Close()
	// A waiting one is served once a slot frees, never more than the cap.
	d := idle[2]
	if got := get(d, bufio.NewReader(d)); !strings.Contains(got, "sluice_stats_conns 3\n") {
		t.Errorf("served past the cap:\n%.2000s", got)
	}
}
