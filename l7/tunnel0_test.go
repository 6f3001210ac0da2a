package l7_test

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"sluice/internal/testutil"
)

// timeout_tunnel = "0s" means an upgraded connection never times out: the
// deadlines of its HTTP phase (timeout_http_request and timeout_client on
// the client side, timeout_server on the server's) must not outlive the
// 101. The server answers an echo only after all of them have passed.
func TestTunnelWithoutTimeoutOutlivesHTTPDeadlines(t *testing.T) {
	const short = 200 * time.Millisecond
	be := serveHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		brw.Flush()
		msg := make([]byte, 4)
		if _, err := io.ReadFull(brw, msg); err != nil {
			return
		}
		// A timer of the server's own, not the test's synchronization:
		// the answer comes after every HTTP-phase deadline has expired.
		time.Sleep(4 * short)
		conn.Write(msg)
	}))
	_, front := testutil.Start(t, httpConfig(fmt.Sprintf(`default_backend = "app"
timeout_client = %q
timeout_http_request = %q
timeout_tunnel = "0s"`, short, short), fmt.Sprintf("timeout_server = %q", short), map[string][]string{"app": {be.Addr}}))
	c := testutil.Dial(t, front)
	fmt.Fprint(c, "GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
	r := bufio.NewReader(c)
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 101 {
		t.Fatalf("status %d, want 101", resp.StatusCode)
	}
	c.Write([]byte("ping"))
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(r, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo after %v of quiet: %q, %v (the tunnel was cut by a deadline of the HTTP phase)", 4*short, buf, err)
	}
}
