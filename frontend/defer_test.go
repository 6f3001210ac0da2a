//go:build linux

package frontend_test

import (
	"bufio"
	"fmt"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"sluice/engine"
	"sluice/internal/sockets"
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
	a := testutil.StartOn(t, src(""), nil)
	for i, want := range []int{1, 0, 0, 1} {
		if got := deferAccept(t, a, addrs[i]); got != want {
			t.Errorf("%s: TCP_DEFER_ACCEPT %d, want %d", addrs[i], got, want)
		}
	}
	// The tcp frontend still relays a server that speaks first.
	if got := whoAnswers(t, addrs[2]); got != "be" {
		t.Errorf("tcp frontend: server said %q, want be", got)
	}
	b := testutil.StartOn(t, src("defer_accept = false"), a.Sockets)
	if got := deferAccept(t, b, addrs[0]); got != 0 {
		t.Errorf("after the reload with defer_accept = false: TCP_DEFER_ACCEPT %d, want 0", got)
	}
}

// handOver is what a new worker gets at a reload: duplicates of the
// listening sockets, so that the old one can stop accepting (closing its
// own copies) while the new one serves.
func handOver(t *testing.T, e *engine.Engine) sockets.Set {
	t.Helper()
	out := sockets.Set{}
	for k, s := range e.Sockets {
		f, err := s.File()
		if err != nil {
			t.Fatal(err)
		}
		if out[k], err = sockets.FromFile(k, f); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// An http frontend whose address becomes a tcp frontend at a reload (a
// server that speaks first behind it): the new worker clears
// TCP_DEFER_ACCEPT on the socket it inherits, so the server's greeting
// reaches a client that waits for it; a client that sent nothing while
// the http worker still ran (held by the kernel) is handed to the tcp
// one and gets the greeting too, not an HTTP 408.
func TestDeferAcceptModeChangeAtReload(t *testing.T) {
	web := testutil.Serve(t, "web", testutil.Namer("web"))
	banner := testutil.Serve(t, "banner", testutil.Namer("banner"))
	addr := testutil.FreeAddr(t)
	src := func(mode, be string) string {
		return fmt.Sprintf("[frontend.f]\nmode = %q\nbind = [%q]\ndefault_backend = \"b\"\ntimeout_http_request = \"30s\"\n[[backend.b.server]]\naddress = %q\n", mode, addr, be)
	}
	a := testutil.StartOn(t, src("http", web.Addr), nil)
	if got := deferAccept(t, a, addr); got != 1 {
		t.Fatalf("http frontend: TCP_DEFER_ACCEPT %d, want 1", got)
	}
	// The old worker stops accepting first: the client below is then held
	// by the kernel until the new one takes it, however long the start
	// takes (the old one could not take it and answer 408).
	have := handOver(t, a)
	a.Front.StopAccepting()
	waiting := testutil.Dial(t, addr) // sends nothing: the kernel holds it
	b := testutil.StartOn(t, src("tcp", banner.Addr), have)
	if got := deferAccept(t, b, addr); got != 0 {
		t.Fatalf("after the reload to mode tcp: TCP_DEFER_ACCEPT %d, want 0", got)
	}
	if got := whoAnswers(t, addr); got != "banner" {
		t.Errorf("new client after the reload: %q, want the banner", got)
	}
	waiting.SetDeadline(time.Now().Add(10 * time.Second))
	if got := testutil.ReadLine(t, bufio.NewReader(waiting)); got != "banner" {
		t.Errorf("client waiting through the reload: %q, want the banner", got)
	}
	waiting.Close()
}

// A client that connects to an http frontend and sends nothing is still
// answered 408 once timeout_http_request has run from its hand-over, and
// counted once; so is one that sends a byte and stalls (slowloris).
func TestDeferredSilentClientGets408(t *testing.T) {
	be := testutil.Serve(t, "be", testutil.Namer("be"))
	eng, front := testutil.Start(t, fmt.Sprintf("[frontend.f]\nmode = \"http\"\nbind = [\"{{FRONT}}\"]\ndefault_backend = \"b\"\ntimeout_http_request = \"200ms\"\n[[backend.b.server]]\naddress = %q\n", be.Addr))
	f := eng.Front.Frontends[0]
	for i, first := range []string{"", "G"} {
		c := testutil.Dial(t, front)
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if first != "" {
			if _, err := c.Write([]byte(first)); err != nil {
				t.Fatal(err)
			}
		}
		if got := testutil.ReadLine(t, bufio.NewReader(c)); !strings.HasPrefix(got, "HTTP/1.1 408") {
			t.Errorf("client sending %q: %q, want a 408", first, got)
		}
		c.Close()
		testutil.WaitFor(t, "the connection to end", 5*time.Second, func() bool { return f.Counters.Current.Load() == 0 })
		if n := f.Counters.Sessions.Load(); n != uint64(i+1) {
			t.Errorf("sessions %d after %d clients, want %d", n, i+1, i+1)
		}
	}
}
