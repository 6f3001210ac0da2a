package engine_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"sluice/conf"
	"sluice/engine"
	"sluice/internal/sockets"
	"sluice/internal/testutil"
)

// resolver is a DNS server on loopback that answers every A question with
// 127.0.0.1 and counts the questions.
func resolver(t *testing.T) (string, *atomic.Int64) {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var asked atomic.Int64
	started := make(chan struct{})
	srv := &dns.Server{PacketConn: pc, NotifyStartedFunc: func() { close(started) },
		Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
			asked.Add(1)
			m := new(dns.Msg)
			m.SetReply(r)
			if q := r.Question[0]; q.Qtype == dns.TypeA {
				rr, _ := dns.NewRR(q.Name + " 1 IN A 127.0.0.1")
				m.Answer = append(m.Answer, rr)
			}
			w.WriteMsg(m)
		})}
	go srv.ActivateAndServe()
	select {
	case <-started:
	case <-time.After(5 * time.Second):
		t.Fatal("dns server did not start")
	}
	t.Cleanup(func() { srv.Shutdown() })
	return pc.LocalAddr().String(), &asked
}

// running counts the goroutines executing sluice code (discovery, peers,
// health checks, stats, accept loops...), leaving out the tests' own.
func running() (int, string) {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	var which []string
	for _, g := range bytes.Split(buf, []byte("\n\n")) {
		for _, line := range strings.Split(string(g), "\n") {
			if strings.HasPrefix(line, "sluice/") && !strings.HasPrefix(line, "sluice/engine_test.") &&
				!strings.HasPrefix(line, "sluice/internal/testutil.") {
				n++
				which = append(which, line)
				break
			}
		}
	}
	return n, strings.Join(which, "\n")
}

// TestFailedStartUndoes: a start that fails (late, after DNS discovery and
// the health checks of the servers it found are running, or early, on an
// address in use) leaves nothing running and every address it bound free.
func TestFailedStartUndoes(t *testing.T) {
	for _, tc := range []struct {
		desc  string
		spoil func(t *testing.T, secret string, addrs map[string]string) // makes the start fail
		busy  string                                                     // the address the test holds
	}{
		{"peers secret gone after validation", func(t *testing.T, secret string, _ map[string]string) {
			if err := os.Remove(secret); err != nil {
				t.Fatal(err)
			}
		}, ""},
		{"second frontend address in use", nil, "f2"},
		{"stats address in use", nil, "stats"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			ns, asked := resolver(t)
			secret := filepath.Join(t.TempDir(), "peers.secret")
			if err := os.WriteFile(secret, []byte("0123456789abcdef0123456789\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			addrs := map[string]string{}
			for _, k := range []string{"f1", "f2", "stats", "peers"} {
				addrs[k] = testutil.FreeAddr(t)
			}
			src := fmt.Sprintf(`
[frontend.f1]
bind = [%q]
default_backend = "b"
[frontend.f2]
bind = [%q]
default_backend = "b"
[backend.b.dns]
name = "svc.test."
port = 1
resolvers = [%q]
[backend.b.health]
check = "tcp"
interval = "50ms"
[stats]
bind = %q
[peers]
bind = %q
peers = ["127.0.0.1:1"]
secret_file = %q
`, addrs["f1"], addrs["f2"], ns, addrs["stats"], addrs["peers"], secret)
			cfg, err := conf.Parse("undo.toml", []byte(src))
			if err != nil {
				t.Fatal(err)
			}
			if tc.spoil != nil {
				tc.spoil(t, secret, addrs)
			}
			if tc.busy != "" {
				s, err := sockets.Listen(sockets.Key{Network: "tcp", Addr: addrs[tc.busy]}, sockets.Options{})
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
			}
			before, _ := running()
			e, err := engine.Start(cfg, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err == nil {
				e.Sockets.Close()
				t.Fatal("start succeeded")
			}
			t.Logf("start failed as it should: %v (dns questions so far: %d)", err, asked.Load())
			deadline := time.Now().Add(5 * time.Second)
			for {
				n, which := running()
				if n <= before {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%d goroutines of sluice still run after the failed start (%d before):\n%s", n, before, which)
				}
				time.Sleep(10 * time.Millisecond) // polling, bounded by the deadline
			}
			for k, a := range addrs {
				if k == tc.busy {
					continue
				}
				s, err := sockets.Listen(sockets.Key{Network: "tcp", Addr: a}, sockets.Options{})
				if err != nil {
					t.Errorf("%s address %s still bound after the failed start: %v", k, a, err)
					continue
				}
				s.Close()
			}
		})
	}
}

// TestFreebindFrontend: a frontend with freebind = true binds a VIP this
// host does not hold (192.0.2.10, TEST-NET-1) through the engine's one bind
// path (Listeners, sockets.Bind); the same frontend without it is refused,
// so the key really reaches the socket.
func TestFreebindFrontend(t *testing.T) {
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_nonlocal_bind"); err == nil && len(b) > 0 && b[0] == '1' {
		t.Skip("net.ipv4.ip_nonlocal_bind = 1 here: every address binds, so freebind cannot be told apart")
	}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.String() == "192.0.2.10" {
				t.Skip("192.0.2.10 is assigned on this host")
			}
		}
	}
	for _, freebind := range []bool{false, true} {
		t.Run(fmt.Sprintf("freebind=%v", freebind), func(t *testing.T) {
			src := "[frontend.vip]\nbind = [\"192.0.2.10:0\"]\ndefault_backend = \"b\"\n"
			if freebind {
				src += "freebind = true\n"
			}
			src += "[[backend.b.server]]\naddress = \"127.0.0.1:1\"\n"
			cfg, err := conf.Parse("freebind.toml", []byte(src))
			if err != nil {
				t.Fatal(err)
			}
			e, err := engine.Start(cfg, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
			if !freebind {
				if err == nil {
					e.Sockets.Close()
					t.Fatal("bound a non-local address without freebind")
				}
				if !errors.Is(err, syscall.EADDRNOTAVAIL) {
					t.Fatalf("got %v, want EADDRNOTAVAIL", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer e.Sockets.Close()
			for _, s := range e.Sockets {
				if host, _, _ := net.SplitHostPort(s.Listener.Addr().String()); host != "192.0.2.10" {
					t.Fatalf("listening on %s", s.Listener.Addr())
				}
			}
		})
	}
}
