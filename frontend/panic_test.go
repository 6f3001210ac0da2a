package frontend_test

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"sluice/frontend"
	"sluice/internal/testutil"
)

// A panic while serving one connection closes that connection, is counted
// and logged, and the worker serves the next connection on the same
// frontend as before.
func TestPanicClosesOnlyThatConnection(t *testing.T) {
	for _, mode := range []string{"tcp", "http"} {
		t.Run(mode, func(t *testing.T) {
			var fired atomic.Bool
			frontend.SetConnHook(func(string) {
				if fired.CompareAndSwap(false, true) {
					panic("test: boom in the connection path")
				}
			})
			t.Cleanup(func() { frontend.SetConnHook(nil) }) // runs after the engine's shutdown

			web := newWebServer(t, "a")
			statsAddr := testutil.FreeAddr(t)
			src := fmt.Sprintf("[stats]\nbind = %q\n\n", statsAddr)
			if mode == "tcp" {
				src += tcpConfig("", server("a", web.addr, 1))
			} else {
				src += httpConfig("", server("a", web.addr, 1))
			}
			eng, front, logs := startLogged(t, src)

			// The first connection panics: closed without a byte.
			c := testutil.Dial(t, front)
			c.SetDeadline(time.Now().Add(5 * time.Second))
			fmt.Fprintf(c, "GET /app HTTP/1.1\r\nHost: x\r\n\r\n")
			b, err := io.ReadAll(c)
			c.Close()
			// Unread request bytes turn the close into a reset: either is a close.
			if (err != nil && !errors.Is(err, syscall.ECONNRESET)) || len(b) != 0 {
				t.Fatalf("panicking connection: read %q, %v; want a close without a byte", b, err)
			}
			if !fired.Load() {
				t.Fatal("the hook did not run")
			}

			// The next one on the same frontend is served.
			if code, who := get(t, front); code != 200 || who != "a" {
				t.Fatalf("after the panic: %d from %q, want 200 from a", code, who)
			}

			if n := eng.Front.Frontends[0].Counters.Panics.Load(); n != 1 {
				t.Errorf("Panics = %d, want 1", n)
			}
			// The panicked connection gave its slot back.
			testutil.WaitFor(t, "connections to end", 5*time.Second, func() bool { return eng.Front.Current() == 0 })
			log := logs.String()
			if !strings.Contains(log, "panic serving a connection") || !strings.Contains(log, "test: boom in the connection path") ||
				!strings.Contains(log, "panic_test.go") {
				t.Errorf("log does not tell the panic and where:\n%s", log)
			}
			metrics := fetch(t, "http://"+statsAddr+"/metrics")
			if want := `sluice_frontend_panics_total{frontend="f"} 1`; !strings.Contains(metrics, want) {
				t.Errorf("/metrics lacks %s", want)
			}
			if page := fetch(t, "http://"+statsAddr+"/"); !strings.Contains(page, "frontend_panics_total") {
				t.Error("stats page does not show frontend_panics_total")
			}
		})
	}
}

func fetch(t *testing.T, url string) string {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	return string(b)
}
