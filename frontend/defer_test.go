//go:build linux

package frontend_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"sluice/conf"
	"sluice/engine"
	"sluice/internal/testutil"
)

// deferAccept reads TCP_DEFER_ACCEPT off the listener bound at addr.
func deferAccept(t *testing.T, e *engine.Engine, addr string) int {
	t.Helper()
	for k, s := range e.Sockets {
		if k.Network != "tcp" || k.Addr != addr {
			continue
		}
		f, err := s.File()
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		// Not f.Fd(): it would make the shared descriptor blocking.
		rc, err := f.SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		v := -1
		rc.Control(func(fd uintptr) { v, err = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT) })
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	t.Fatalf("no listener on %s", addr)
	return -1
}

// HTTP frontends defer their accepts (the client speaks first), tcp ones
// do not unless asked (a server may speak first), and a reload that turns
// the option off clears it on the socket the new worker inherits.
func TestDeferAcceptPerFrontend(t *testing.T) {
	be := testutil.Serve(t, "be", testutil.Namer("be"))
	addrs := []string{testutil.FreeAddr(t), testutil.FreeAddr(t), testutil.FreeAddr(t), testutil.FreeAddr(t)}
	src := func(httpDefault string) string {
		return fmt.Sprintf(`[frontend.h]
mode = "http"
bind = [%q]
%s
default_backend = "b"
[frontend.hoff]
mode = "http"
bind = [%q]
defer_accept = false
default_backend = "b"
[frontend.t]
mode = "tcp"
bind = [%q]
default_backend = "tb"
[frontend.ton]
mode = "tcp"
bind = [%q]
defer_accept = true
default_backend = "tb"
[[backend.b.server]]
address = %q
[[backend.tb.server]]
address = %q
`, addrs[0], httpDefault, addrs[1], addrs[2], addrs[3], be.Addr, be.Addr)
	}
	start := func(s string, have engine.Engine) *engine.Engine {
		t.Helper()
		cfg, err := conf.Parse(t.Name()+".toml", []byte(s))
		if err != nil {
			t.Fatal(err)
		}
		e, err := engine.Start(cfg, have.Sockets, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			e.Shutdown(ctx)
		})
		return e
	}
	a := start(src(""), engine.Engine{})
	for i, want := range []int{1, 0, 0, 1} {
		if got := deferAccept(t, a, addrs[i]); got != want {
			t.Errorf("%s: TCP_DEFER_ACCEPT %d, want %d", addrs[i], got, want)
		}
	}
	// The tcp frontend still relays a server that speaks first.
	if got := whoAnswers(t, addrs[2]); got != "be" {
		t.Errorf("tcp frontend: server said %q, want be", got)
	}
	b := start(src("defer_accept = false"), *a)
	if got := deferAccept(t, b, addrs[0]); got != 0 {
		t.Errorf("after the reload with defer_accept = false: TCP_DEFER_ACCEPT %d, want 0", got)
	}
}
