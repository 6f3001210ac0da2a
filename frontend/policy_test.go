package frontend_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"sluice/conf"
	"sluice/engine"
	"sluice/internal/testutil"
)

// startPolicy runs src with the first frontend's rules and rate limit set
// by edit (as conf.Parse would fill them), until the test ends.
func startPolicy(t *testing.T, src string, edit func(*conf.Frontend)) (*engine.Engine, string) {
	t.Helper()
	front := testutil.FreeAddr(t)
	src = strings.ReplaceAll(src, "{{FRONT}}", front)
	cfg, err := conf.Parse(t.Name()+".toml", []byte(src))
	if err != nil {
		t.Fatalf("config: %v\n%s", err, src)
	}
	edit(cfg.Frontends[0])
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	eng, err := engine.Start(cfg, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		eng.Shutdown(ctx)
	})
	return eng, front
}

// proxyV1 writes a PROXY v1 header with the given source address.
func proxyV1(t *testing.T, c net.Conn, src string) {
	t.Helper()
	if _, err := fmt.Fprintf(c, "PROXY TCP4 %s 127.0.0.1 40000 80\r\n", src); err != nil {
		t.Fatal(err)
	}
}

// served reports the line the server sent first (its name), "" when the
// connection was closed without a byte.
func served(t *testing.T, c net.Conn) string {
	t.Helper()
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		if line != "" {
			t.Fatalf("connection closed after %q: %v", line, err)
		}
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatalf("neither served nor closed: %v", err)
		}
		return ""
	}
	return strings.TrimSpace(line)
}

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// policyPaths are the two accept paths of a tcp frontend: the epoll loops
// (plain tcp) and the connection's goroutine (accept_proxy, where the
// client is the PROXY header's source). client returns a connection that
// comes from the client address ip (127.0.0.x).
var policyPaths = []struct {
	name   string
	extra  string
	client func(t *testing.T, ip, front string) *net.TCPConn
}{
	{"loop", "", func(t *testing.T, ip, front string) *net.TCPConn { return dialFrom(t, ip, front) }},
	{"proxy", "accept_proxy = true\n", func(t *testing.T, ip, front string) *net.TCPConn {
		c := dialFrom(t, "127.0.0.1", front)
		proxyV1(t, c, ip)
		return c
	}},
}

func policyConfig(extra, srv string) string {
	return fmt.Sprintf("[global]\nhard_stop_after = \"5s\"\n[frontend.f]\nmode = \"tcp\"\nbind = [\"{{FRONT}}\"]\ndefault_backend = \"b\"\n%s\n[backend.b]\n%s", extra, server("s", srv, 1))
}

// TestPolicyDeniesNetworkAtAccept: a tcp frontend whose rule denies a
// network closes that network's connections before any server connection
// is made, while another network is relayed; on both accept paths.
func TestPolicyDeniesNetworkAtAccept(t *testing.T) {
	for _, p := range policyPaths {
		t.Run(p.name, func(t *testing.T) {
			srv := testutil.Serve(t, "s", testutil.Namer("s"))
			eng, front := startPolicy(t, policyConfig(p.extra, srv.Addr), func(f *conf.Frontend) {
				f.Rules = []conf.Rule{{Line: 1, Src: []netip.Prefix{mustPrefix("127.0.0.2/32")}, Action: conf.ActionDeny}}
			})
			f := eng.Front.Frontends[0]
			for i := range 3 {
				if got := served(t, p.client(t, "127.0.0.2", front)); got != "" {
					t.Fatalf("denied client %d reached server %q", i, got)
				}
			}
			if n := srv.Accepted.Load(); n != 0 {
				t.Fatalf("server accepted %d connections of a denied network", n)
			}
			if got := served(t, p.client(t, "127.0.0.3", front)); got != "s" {
				t.Fatalf("allowed client got %q, want the server", got)
			}
			pol := f.Policy()
			if n := pol.Counters.ConnDenied.Load(); n != 3 {
				t.Fatalf("conn_denied = %d, want 3", n)
			}
			if n := f.Counters.Denied.Load(); n != 3 {
				t.Fatalf("frontend denied = %d, want 3", n)
			}
			if p.name == "loop" && f.Counters.LoopConnections.Load() != 1 {
				t.Fatalf("loop connections = %d, want the allowed one", f.Counters.LoopConnections.Load())
			}
		})
	}
}

// TestPolicyConnectionLimitPerClient: past rate_limit.connections a
// client's new connections are closed while another client is served, and
// once one of its connections ends it may open another (the end was told
// to the limiter).
func TestPolicyConnectionLimitPerClient(t *testing.T) {
	for _, p := range policyPaths {
		t.Run(p.name, func(t *testing.T) {
			srv := testutil.Serve(t, "s", testutil.Namer("s"))
			eng, front := startPolicy(t, policyConfig(p.extra, srv.Addr), func(f *conf.Frontend) {
				f.RateLimit = &conf.RateLimit{Connections: 2, Period: 10 * time.Second, Action: conf.LimitDeny, TableSize: 100}
			})
			f := eng.Front.Frontends[0]
			var open []*net.TCPConn
			for range 2 {
				c := p.client(t, "127.0.0.2", front)
				if got := served(t, c); got != "s" {
					t.Fatalf("client under its limit got %q", got)
				}
				open = append(open, c)
			}
			if got := served(t, p.client(t, "127.0.0.2", front)); got != "" {
				t.Fatalf("third connection of a client limited to 2 reached %q", got)
			}
			other := p.client(t, "127.0.0.3", front)
			if got := served(t, other); got != "s" {
				t.Fatalf("another client got %q while the first is limited", got)
			}
			if n := f.Policy().Counters.ConnLimited.Load(); n != 1 {
				t.Fatalf("conn_limited = %d, want 1", n)
			}
			if n := srv.Accepted.Load(); n != 3 {
				t.Fatalf("server accepted %d connections, want 3 (the limited one never)", n)
			}
			open[0].Close()
			lim := f.Policy().Limit
			testutil.WaitFor(t, "the closed connection to leave the limiter", 5*time.Second, func() bool {
				for _, r := range lim.Top(10, time.Now()) {
					if r.Client == netip.MustParseAddr("127.0.0.2") {
						return r.Connections == 1
					}
				}
				return false
			})
			if got := served(t, p.client(t, "127.0.0.2", front)); got != "s" {
				t.Fatalf("client back under its limit got %q", got)
			}
		})
	}
}

// TestPolicyTarpitHoldsThenCloses: a tarpit rule holds the connection
// (no server connection) and closes it; a stop ends the hold at once
// instead of waiting for it.
func TestPolicyTarpitHoldsThenCloses(t *testing.T) {
	for _, p := range policyPaths {
		t.Run(p.name, func(t *testing.T) {
			srv := testutil.Serve(t, "s", testutil.Namer("s"))
			eng, front := startPolicy(t, policyConfig(p.extra, srv.Addr), func(f *conf.Frontend) {
				f.Rules = []conf.Rule{
					{Line: 1, Src: []netip.Prefix{mustPrefix("127.0.0.2/32")}, Action: conf.ActionTarpit, Tarpit: time.Millisecond},
					{Line: 2, Src: []netip.Prefix{mustPrefix("127.0.0.4/32")}, Action: conf.ActionTarpit, Tarpit: time.Hour},
				}
			})
			f := eng.Front.Frontends[0]
			if got := served(t, p.client(t, "127.0.0.2", front)); got != "" {
				t.Fatalf("tarpitted client reached %q", got)
			}
			long := p.client(t, "127.0.0.4", front)
			testutil.WaitFor(t, "the second tarpit", 5*time.Second, func() bool {
				return f.Policy().Counters.Tarpitted.Load() == 2
			})
			other := p.client(t, "127.0.0.3", front)
			if got := served(t, other); got != "s" {
				t.Fatalf("other client got %q", got)
			}
			if n := f.Counters.Current.Load(); n != 2 {
				t.Fatalf("current = %d, want 2: the held connection keeps its slot, the served one", n)
			}
			other.Close() // the stop below then waits for the hold only
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			done := make(chan struct{})
			go func() { eng.Shutdown(ctx); close(done) }()
			if n, err := long.Read(make([]byte, 1)); err == nil {
				t.Fatalf("read %d bytes from a tarpitted connection", n)
			} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatal("the stop did not end the tarpit")
			}
			if n := srv.Accepted.Load(); n != 1 {
				t.Fatalf("server accepted %d connections, want 1", n)
			}
			<-done
		})
	}
}

// TestPolicyHTTPFrontendLimitsConnections: an http frontend applies
// rate_limit.connections at accept too, and hands the policy to its proxy.
func TestPolicyHTTPFrontendLimitsConnections(t *testing.T) {
	srv := testutil.Serve(t, "s", func(c net.Conn) {
		r := bufio.NewReader(c)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			if line == "\r\n" {
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			}
		}
	})
	src := fmt.Sprintf("[global]\nhard_stop_after = \"5s\"\n[frontend.f]\nmode = \"http\"\nbind = [\"{{FRONT}}\"]\ndefault_backend = \"b\"\n\n[backend.b]\n%s", server("s", srv.Addr, 1))
	eng, front := startPolicy(t, src, func(f *conf.Frontend) {
		f.RateLimit = &conf.RateLimit{Connections: 1, Period: 10 * time.Second, Action: conf.LimitDeny, TableSize: 100}
	})
	f := eng.Front.Frontends[0]
	if f.HTTP().Policy != f.Policy() || f.Policy() == nil {
		t.Fatal("the http proxy does not have the frontend's policy")
	}
	get := func(c net.Conn) string {
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		line, _ := bufio.NewReader(c).ReadString('\n')
		return strings.TrimSpace(line)
	}
	first := dialFrom(t, "127.0.0.2", front)
	if got := get(first); got != "HTTP/1.1 200 OK" {
		t.Fatalf("first connection got %q", got)
	}
	if got := get(dialFrom(t, "127.0.0.2", front)); got != "" {
		t.Fatalf("second connection of a client limited to 1 got %q", got)
	}
	if got := get(dialFrom(t, "127.0.0.3", front)); got != "HTTP/1.1 200 OK" {
		t.Fatalf("another client got %q", got)
	}
	if n := f.Policy().Counters.ConnLimited.Load(); n != 1 {
		t.Fatalf("conn_limited = %d, want 1", n)
	}
}
