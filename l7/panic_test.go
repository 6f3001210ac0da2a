package l7_test

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"sluice/internal/testutil"
	"sluice/l7"
)

// A panic serving one HTTP/2 stream resets that stream only: it is counted,
// and the next request on the same connection is served.
func TestHTTP2StreamPanicResetsOnlyThatStream(t *testing.T) {
	l7.SetStreamHook(func(r *http.Request) {
		if r.URL.Path == "/panic" {
			panic("test: boom in an HTTP/2 stream")
		}
	})
	t.Cleanup(func() { l7.SetStreamHook(nil) }) // after the engine's shutdown

	addr, _ := startHTTP(t, reporter("s1"), false)
	eng, front := testutil.Start(t, h2Config("default_backend = \"app\"\nh2c = true", "",
		map[string]h2Backend{"app": {addrs: []string{addr}}}))

	var dials atomic.Int64
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			dials.Add(1)
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}}
	if _, body := get(t, c, "http://"+front+"/before"); fields(t, body)["path"] != "/before" {
		t.Fatalf("before the panic: %q", body)
	}
	resp, err := c.Get("http://" + front + "/panic")
	if err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Fatalf("the panicking stream got %d %q, want a reset", resp.StatusCode, b)
	}
	if _, body := get(t, c, "http://"+front+"/after"); fields(t, body)["path"] != "/after" {
		t.Fatalf("after the panic: %q", body)
	}
	if n := dials.Load(); n != 1 {
		t.Errorf("%d connections, want the one connection to live on", n)
	}
	if n := eng.Front.Frontends[0].Counters.Panics.Load(); n != 1 {
		t.Errorf("Panics = %d, want 1", n)
	}
}

// A panic in the goroutine that streams an HTTP/1 request body (outside the
// connection's own recover) costs that exchange only: the client
// connection is closed, the panic counted, and the next client is served.
func TestHTTP1BodyPanicClosesOnlyThatConnection(t *testing.T) {
	var once atomic.Bool
	l7.SetBodyHook(func() {
		if once.CompareAndSwap(false, true) {
			panic("test: boom streaming a request body")
		}
	})
	t.Cleanup(func() { l7.SetBodyHook(nil) })

	addr, _ := startHTTP(t, reporter("s1"), false)
	eng, front := testutil.Start(t, h2Config("default_backend = \"app\"", "",
		map[string]h2Backend{"app": {addrs: []string{addr}}}))

	c := testutil.Dial(t, front)
	// The head alone: its body is not buffered with it, so it streams
	// from the body goroutine, which panics.
	c.Write([]byte("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n"))
	if b, _ := io.ReadAll(c); len(b) != 0 {
		t.Fatalf("the panicking exchange answered %q, want the connection closed", b)
	}
	if n := eng.Front.Frontends[0].Counters.Panics.Load(); n != 1 {
		t.Errorf("Panics = %d, want 1", n)
	}
	hc := &http.Client{Timeout: 10 * time.Second}
	if _, body := get(t, hc, "http://"+front+"/after"); fields(t, body)["path"] != "/after" {
		t.Fatalf("after the panic: %q", body)
	}
}
