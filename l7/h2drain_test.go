package l7_test

import (
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"sluice/internal/testutil"
	"sluice/l7"
)

// A drain with streams in flight (reload review: h2load saw streams fail
// across two reloads): the last stream in flight ending just as the final
// GOAWAY is decided must not close the connection before that GOAWAY is
// written. Before the fix its end half-closed the connection first, the
// GOAWAY write failed, and the client saw EOF without learning which of
// its streams were refused. Every stream up to the final GOAWAY's last
// stream id is answered completely; one opened after the PING round trip
// is above it and ignored (RFC 9113 §6.8: the client may retry it).
func TestH2DrainFinalGoAwayBeforeClose(t *testing.T) {
	hold := make(chan struct{})
	var release sync.Once
	l7.SetStreamHook(func(r *http.Request) {
		if r.URL.Path == "/hold" {
			<-hold
		}
	})
	t.Cleanup(func() {
		release.Do(func() { close(hold) })
		l7.SetStreamHook(nil)
		l7.SetFinalGoAwayHook(nil)
	})
	addr, _ := startHTTP(t, reporter("s1"), false)
	eng, front := testutil.Start(t, h2Config("default_backend = \"app\"\nh2c = true", "",
		map[string]h2Backend{"app": {addrs: []string{addr}}}))
	c := dialRaw(t, front)
	ended := func(id uint32) func() bool {
		return func() bool {
			c.mu.Lock()
			defer c.mu.Unlock()
			return c.ended[id]
		}
	}
	if err := c.headers(1, "x", "/hold", true); err != nil {
		t.Fatal(err)
	}
	if err := c.headers(3, "x", "/three", true); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "stream 3 answered", 5*time.Second, ended(3))

	eng.Front.Frontends[0].HTTP().Drain()
	var ping [8]byte
	testutil.WaitFor(t, "first GOAWAY and PING", 5*time.Second, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		if len(c.goaways) == 1 && len(c.pings) == 1 {
			ping = c.pings[0]
			return true
		}
		return false
	})
	// Sent before the client answers the PING: below the final GOAWAY.
	if err := c.headers(5, "x", "/five", true); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "stream 5 answered", 5*time.Second, ended(5))

	// Stream 1, the last one in flight, ends after the final GOAWAY is
	// decided and before it is written. Before the fix its end closed the
	// connection at once (the client's reader ends: done); now the
	// connection waits for the GOAWAY, so the wait is bounded.
	l7.SetFinalGoAwayHook(func() {
		release.Do(func() { close(hold) })
		for deadline := time.Now().Add(5 * time.Second); !ended(1)() && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
		select {
		case <-c.done:
		case <-time.After(500 * time.Millisecond):
		}
	})
	c.send(func(fr *http2.Framer) error { return fr.WritePing(true, ping) })
	// After the PING round trip: above the final GOAWAY, ignored.
	c.headers(7, "x", "/seven", true)
	<-c.done // the connection closes by itself

	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.goaways) != 2 || c.goaways[1].LastStreamID != 5 || c.goaways[1].ErrCode != http2.ErrCodeNo {
		t.Fatalf("GOAWAYs %v, want a final one naming stream 5 before the close", c.goaways)
	}
	for _, id := range []uint32{1, 3, 5} {
		if c.status[id] != "200" || !c.ended[id] || c.resets[id] != 0 {
			t.Fatalf("stream %d: status %q ended %v reset %v", id, c.status[id], c.ended[id], c.resets[id])
		}
	}
	if !strings.Contains(c.body[5], "path=/five") || !strings.Contains(c.body[1], "path=/hold") {
		t.Fatalf("bodies %q %q", c.body[1], c.body[5])
	}
	if c.status[7] != "" {
		t.Fatalf("stream 7, opened after the PING round trip, answered %q", c.status[7])
	}
	p := eng.Front.Frontends[0].HTTP()
	testutil.WaitFor(t, "stream 7 counted as past the final GOAWAY", 5*time.Second, func() bool {
		return p.Counters.H2AfterGoAway.Load() == 1
	})
}
