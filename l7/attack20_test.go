package l7_test

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"sluice/internal/testutil"
	"sluice/l7"
)

// TestDrainClosesIdleKeepAliveClients (attack 20): a graceful stop (a
// reload) closes the HTTP/1 keep-alive clients that wait for their next
// request, at once and with a FIN, as HAProxy closes its idle clients at
// a soft stop. They used to hold the old worker until timeout_client or
// hard_stop_after, and were then cut (counted, and a request sent at that
// moment lost).
func TestDrainClosesIdleKeepAliveClients(t *testing.T) {
	// Every wait moves to its small goroutine at once (the path of a
	// client quiet for idleHandOff), not after 10 ms.
	defer l7.SetIdleHandOff(l7.SetIdleHandOff(0))
	be := testutil.Serve(t, "be", answerFixed)
	front := "default_backend = \"app\"\ntimeout_client = \"60s\""
	eng, addr := testutil.Start(t, httpConfig(front, "", map[string][]string{"app": {be.Addr}}))
	const clients = 20
	req := []byte("GET /x HTTP/1.1\r\nHost: h\r\n\r\n")
	buf := make([]byte, 512)
	conns := make([]net.Conn, 0, clients)
	for i := range clients {
		c := testutil.Dial(t, addr)
		conns = append(conns, c)
		c.SetDeadline(time.Now().Add(30 * time.Second))
		if _, err := c.Write(req); err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
		if err := readFixed(c, buf); err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if cut := eng.Shutdown(ctx); cut != 0 {
		t.Fatalf("the stop cut %d idle keep-alive clients, want 0 (closed when the drain began)", cut)
	}
	for i, c := range conns {
		if n, err := c.Read(buf); n != 0 || err != io.EOF {
			t.Fatalf("client %d: read %d, %v: want EOF", i, n, err)
		}
	}
}
