package frontend_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"

	"sluice/conf"
	"sluice/engine"
	"sluice/internal/logbuf"
	"sluice/internal/testutil"
)

// startLogged is testutil.Start with sluice's log kept for the test.
func startLogged(t *testing.T, src string) (*engine.Engine, string, *logbuf.Buffer) {
	t.Helper()
	front := testutil.FreeAddr(t)
	src = strings.ReplaceAll(src, "{{FRONT}}", front)
	cfg, err := conf.Parse(t.Name()+".toml", []byte(src))
	if err != nil {
		t.Fatalf("config: %v\n%s", err, src)
	}
	var buf logbuf.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	eng, err := engine.Start(cfg, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		eng.Shutdown(t.Context())
	})
	return eng, front, &buf
}

// proxyReporter is a server that reads the PROXY header sluice sends,
// answers with one line "src=… dst=… id=…" ("src=none" without a header),
// then echoes.
func proxyReporter(c net.Conn) {
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	h, err := proxyproto.Read(br)
	if err != nil {
		fmt.Fprintf(c, "src=none err=%q\n", err)
		return
	}
	fmt.Fprintf(c, "%s\n", describeHeader(h))
	io.Copy(c, br)
}

func describeHeader(h *proxyproto.Header) string {
	var id, alpn, authority string
	tlvs, _ := h.TLVs()
	for _, t := range tlvs {
		switch t.Type {
		case proxyproto.PP2_TYPE_UNIQUE_ID:
			id = string(t.Value)
		case proxyproto.PP2_TYPE_ALPN:
			alpn = string(t.Value)
		case proxyproto.PP2_TYPE_AUTHORITY:
			authority = string(t.Value)
		}
	}
	src, dst := "local", "local"
	if h.Command.IsProxy() {
		src, dst = h.SourceAddr.String(), h.DestinationAddr.String()
	}
	return fmt.Sprintf("v=%d src=%s dst=%s id=%s alpn=%s authority=%s", h.Version, src, dst, id, alpn, authority)
}

func proxyTCPConfig(front, back string, servers ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "[global]\nhard_stop_after = \"5s\"\n[frontend.f]\nmode = \"tcp\"\nbind = [\"{{FRONT}}\"]\ndefault_backend = \"b\"\n%s\n\n[backend.b]\n%s\n", front, back)
	for _, s := range servers {
		b.WriteString(s)
	}
	return b.String()
}

func v1(src, dst string, sport, dport int) []byte {
	fam := "TCP4"
	if strings.Contains(src, ":") {
		fam = "TCP6"
	}
	return fmt.Appendf(nil, "PROXY %s %s %s %d %d\r\n", fam, src, dst, sport, dport)
}

func v2(t *testing.T, src, dst string, tlvs ...proxyproto.TLV) []byte {
	t.Helper()
	sa, err := net.ResolveTCPAddr("tcp", src)
	if err != nil {
		t.Fatal(err)
	}
	da, err := net.ResolveTCPAddr("tcp", dst)
	if err != nil {
		t.Fatal(err)
	}
	h := proxyproto.HeaderProxyFromAddrs(2, sa, da)
	if len(tlvs) > 0 {
		if err := h.SetTLVs(tlvs); err != nil {
			t.Fatal(err)
		}
	}
	b, err := h.Format()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// rawV2 is a v2 PROXY TCPv4 header for 192.0.2.30:40030 -> 198.51.100.1:80
// followed by tlvs exactly as given (possibly malformed), with the length
// field covering them.
func rawV2(tlvs []byte) []byte {
	b := append([]byte{}, proxyproto.SIGV2...)
	b = append(b, 0x21, 0x11, 0, 0)
	binary.BigEndian.PutUint16(b[14:16], uint16(12+len(tlvs)))
	b = append(b, 192, 0, 2, 30, 198, 51, 100, 1, 0x9c, 0x5e, 0, 80)
	return append(b, tlvs...)
}

// withCRC32C is rawV2 with a PP2_TYPE_CRC32C TLV (after tlvs) holding the
// checksum of the whole header, plus delta (0: the right checksum).
func withCRC32C(tlvs []byte, delta uint32) []byte {
	b := rawV2(append(append([]byte{}, tlvs...), byte(proxyproto.PP2_TYPE_CRC32C), 0, 4, 0, 0, 0, 0))
	sum := crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli)) + delta
	binary.BigEndian.PutUint32(b[len(b)-4:], sum)
	return b
}

// v2Unix is a v2 PROXY header with AF_UNIX stream addresses.
func v2Unix() []byte {
	b := append([]byte{}, proxyproto.SIGV2...)
	b = append(b, 0x21, 0x31, 0, 216)
	src := make([]byte, 108)
	copy(src, "/run/client.sock")
	dst := make([]byte, 108)
	copy(dst, "/run/server.sock")
	return append(append(b, src...), dst...)
}

// v2Local is a v2 LOCAL header, as health checks of a proxy in front send.
func v2Local() []byte {
	b := append([]byte{}, proxyproto.SIGV2...)
	return append(b, 0x20, 0x00, 0, 0)
}

// exchangeLine writes b on a new connection to front and returns the first
// line that comes back.
func exchangeLine(t *testing.T, front string, b []byte) string {
	t.Helper()
	c := testutil.Dial(t, front)
	defer c.Close()
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	return testutil.ReadLine(t, bufio.NewReader(c))
}

func TestAcceptProxyClientAddress(t *testing.T) {
	be := testutil.Serve(t, "be", proxyReporter)
	_, front := testutil.Start(t, proxyTCPConfig("accept_proxy = true", `send_proxy = "v2"`, server("s", be.Addr, 1)))
	uid := proxyproto.TLV{Type: proxyproto.PP2_TYPE_UNIQUE_ID, Value: []byte("tier1-abc")}
	for _, tc := range []struct {
		desc   string
		header []byte
		want   string // prefix of the reporter's line
	}{
		{"v1 IPv4", v1("192.0.2.10", "198.51.100.1", 40000, 443), "v=2 src=192.0.2.10:40000 dst=198.51.100.1:443 id="},
		{"v1 IPv6", v1("2001:db8::10", "2001:db8::1", 40001, 443), "v=2 src=[2001:db8::10]:40001 dst=[2001:db8::1]:443 id="},
		{"v2 IPv4", v2(t, "192.0.2.11:40002", "198.51.100.1:80"), "v=2 src=192.0.2.11:40002 dst=198.51.100.1:80 id="},
		{"v2 IPv6", v2(t, "[2001:db8::11]:40003", "[2001:db8::1]:80"), "v=2 src=[2001:db8::11]:40003 dst=[2001:db8::1]:80 id="},
		{"v2 unique id is kept", v2(t, "192.0.2.12:1", "198.51.100.1:80", uid), "v=2 src=192.0.2.12:1 dst=198.51.100.1:80 id=tier1-abc "},
		{"v2 LOCAL keeps the peer", v2Local(), "v=2 src=127.0.0.1:"},
		{"v1 UNKNOWN keeps the peer", []byte("PROXY UNKNOWN\r\n"), "v=2 src=127.0.0.1:"},
		{"v2 right CRC32C", withCRC32C(nil, 0), "v=2 src=192.0.2.30:40030 dst=198.51.100.1:80 id="},
		{"v2 right CRC32C after a unique id", withCRC32C([]byte{0x05, 0, 3, 'u', 'i', 'd'}, 0), "v=2 src=192.0.2.30:40030 dst=198.51.100.1:80 id=uid "},
		{"v2 right CRC32C after NOOP padding", withCRC32C([]byte{0x04, 0, 3, 0, 0, 0}, 0), "v=2 src=192.0.2.30:40030 dst=198.51.100.1:80 id="},
		{"v2 LOCAL ignores its block", append(append([]byte{}, proxyproto.SIGV2...), 0x20, 0x11, 0, 15, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x05, 0, 9), "v=2 src=127.0.0.1:"},
		{"v2 well-formed TLVs", rawV2([]byte{0x05, 0, 3, 'u', 'i', 'd', 0x04, 0, 2, 0, 0}), "v=2 src=192.0.2.30:40030 dst=198.51.100.1:80 id=uid "},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			// Data in the same segment as the header must not be lost.
			c := testutil.Dial(t, front)
			if _, err := c.Write(append(append([]byte{}, tc.header...), "hello\n"...)); err != nil {
				t.Fatal(err)
			}
			r := bufio.NewReader(c)
			if got := testutil.ReadLine(t, r); !strings.HasPrefix(got, tc.want) {
				t.Fatalf("server saw %q, want prefix %q", got, tc.want)
			}
			if got := testutil.ReadLine(t, r); got != "hello" {
				t.Fatalf("echo %q, want hello", got)
			}
		})
	}
}

// A header that arrives in pieces (a fragmenting path, a slow peer within
// timeout_proxy_header) is read whole, as HAProxy does. The pauses make the
// pieces arrive in separate reads; they are the scenario, not a wait for
// the balancer.
func TestAcceptProxySplitHeader(t *testing.T) {
	be := testutil.Serve(t, "be", proxyReporter)
	_, front := testutil.Start(t, proxyTCPConfig("accept_proxy = true\ntimeout_proxy_header = \"5s\"", `send_proxy = "v2"`, server("s", be.Addr, 1)))
	for _, tc := range []struct {
		desc   string
		header []byte
		cuts   []int
		want   string
	}{
		{"v1 in three pieces", v1("192.0.2.20", "198.51.100.1", 40010, 443), []int{3, 17}, "v=2 src=192.0.2.20:40010 dst=198.51.100.1:443 id="},
		{"v1 without its LF", v1("192.0.2.21", "198.51.100.1", 40011, 443), []int{41}, "v=2 src=192.0.2.21:40011 dst=198.51.100.1:443 id="},
		{"v2 in two pieces", v2(t, "192.0.2.22:40012", "198.51.100.1:80"), []int{20}, "v=2 src=192.0.2.22:40012 dst=198.51.100.1:80 id="},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			c := testutil.Dial(t, front)
			c.SetNoDelay(true)
			prev := 0
			for _, cut := range append(tc.cuts, len(tc.header)) {
				if prev > 0 {
					time.Sleep(50 * time.Millisecond)
				}
				if _, err := c.Write(tc.header[prev:cut]); err != nil {
					t.Fatal(err)
				}
				prev = cut
			}
			c.Write([]byte("hello\n"))
			r := bufio.NewReader(c)
			if got := testutil.ReadLine(t, r); !strings.HasPrefix(got, tc.want) {
				t.Fatalf("server saw %q, want prefix %q", got, tc.want)
			}
			if got := testutil.ReadLine(t, r); got != "hello" {
				t.Fatalf("echo %q, want hello", got)
			}
		})
	}
}

// TestAcceptProxyBadInput sends what a broken or hostile peer might. Each
// bad connection is closed without reaching a server and counted; a healthy
// connection opened before it keeps working.
func TestAcceptProxyBadInput(t *testing.T) {
	be := testutil.Serve(t, "be", testutil.Echo)
	eng, front := testutil.Start(t, proxyTCPConfig("accept_proxy = true\ntimeout_proxy_header = \"300ms\"", "", server("s", be.Addr, 1)))
	f := eng.Front.Frontends[0]

	truncV2 := v2(t, "192.0.2.1:1", "192.0.2.2:2")
	longV2 := append([]byte{}, truncV2[:16]...)
	binary.BigEndian.PutUint16(longV2[14:16], 200) // says 200 bytes follow
	longV2 = append(longV2, truncV2[16:]...)       // 12 do
	for _, tc := range []struct {
		desc  string
		send  []byte
		close bool // half-close after sending
	}{
		{"no header", []byte("GET / HTTP/1.0\r\n\r\n"), false},
		{"garbage", []byte("\x00\x01\x02 not a proxy header at all \xff\r\n"), false},
		{"v1 without CRLF", []byte("PROXY TCP4 192.0.2.1 192.0.2.2 1 2\n"), false},
		{"v1 line too long", []byte("PROXY TCP4 " + strings.Repeat("1", 200) + "\r\n"), false},
		{"v1 bad address", []byte("PROXY TCP4 999.0.2.1 192.0.2.2 1 2\r\n"), false},
		{"v1 cut short", []byte("PROXY TCP4 192.0."), true},
		{"truncated v2", truncV2[:14], true},
		{"v2 length beyond what arrives", longV2, false},
		// Trusted peers too: HAProxy refuses each of these.
		{"v2 TLV longer than the header", rawV2([]byte{0x05, 0, 9, 'a', 'b', 'c'}), false},
		{"v2 TLV cut after its type", rawV2([]byte{0x05}), false},
		{"v2 TLV cut in its length", rawV2([]byte{0x05, 0}), false},
		{"v2 TLV overflowing after a good one", rawV2([]byte{0x05, 0, 1, 'a', 0x04, 0xff, 0xff}), false},
		{"v2 bad CRC32C", withCRC32C(nil, 1), false},
		{"v2 bad CRC32C after a unique id", withCRC32C([]byte{0x05, 0, 3, 'u', 'i', 'd'}, 0x100), false},
		{"v2 CRC32C of the wrong size", rawV2([]byte{byte(proxyproto.PP2_TYPE_CRC32C), 0, 2, 0, 0}), false},
		{"v2 AF_UNIX", v2Unix(), false},
		{"v2 unique id over 128 bytes", rawV2(append([]byte{0x05, 0, 129}, strings.Repeat("a", 129)...)), false},
		{"slow header", nil, false},
		{"empty then close", nil, true},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			before := f.Counters.ProxyErrors.Load()
			acceptedBefore := be.Accepted.Load()
			healthy := testutil.Dial(t, front)
			hr := bufio.NewReader(healthy)
			healthy.Write(append(v1("192.0.2.50", "192.0.2.2", 5, 6), "ping1\n"...))
			if got := testutil.ReadLine(t, hr); got != "ping1" {
				t.Fatalf("healthy connection: %q", got)
			}

			bad := testutil.Dial(t, front)
			start := time.Now()
			if len(tc.send) > 0 {
				bad.Write(tc.send)
			}
			if tc.close {
				bad.CloseWrite()
			}
			bad.SetReadDeadline(time.Now().Add(5 * time.Second))
			got, err := io.ReadAll(bad)
			if len(got) > 0 {
				t.Fatalf("bad connection got %q back, want it closed without a word", got)
			}
			if err != nil && !isReset(err) {
				t.Fatalf("bad connection: %v, want it closed", err)
			}
			if tc.desc == "slow header" && time.Since(start) < 250*time.Millisecond {
				t.Fatalf("closed after %v, before timeout_proxy_header", time.Since(start))
			}
			waitUntil(t, func() bool { return f.Counters.ProxyErrors.Load() == before+1 }, "ProxyErrors to count the connection")

			healthy.Write([]byte("ping2\n"))
			if got := testutil.ReadLine(t, hr); got != "ping2" {
				t.Fatalf("healthy connection after the bad one: %q", got)
			}
			if n := be.Accepted.Load() - acceptedBefore; n != 1 {
				t.Fatalf("server accepted %d connections, want 1 (the healthy one only)", n)
			}
		})
	}
	if d, p := f.Counters.Denied.Load(), f.Counters.ProxyErrors.Load(); d != p {
		t.Errorf("Denied %d, ProxyErrors %d: each refused header is a denied connection", d, p)
	}
}

func isReset(err error) bool { return errors.Is(err, syscall.ECONNRESET) }

func waitUntil(t *testing.T, cond func() bool, what string) {
	t.Helper()
	testutil.WaitFor(t, what, 5*time.Second, cond)
}

func TestAcceptProxyUntrustedPeer(t *testing.T) {
	be := testutil.Serve(t, "be", testutil.Echo)
	eng, front := testutil.Start(t, `[global]
hard_stop_after = "5s"
[frontend.f]
bind = ["{{FRONT}}"]
accept_proxy = true
proxy_trusted = ["10.0.0.0/8", "127.0.0.2"]
default_backend = "b"
[backend.b]
[[backend.b.server]]
address = "`+be.Addr+`"
`)
	f := eng.Front.Frontends[0]
	// 127.0.0.2 is trusted: its header counts.
	trusted := dialFrom(t, "127.0.0.2", front)
	trusted.Write(append(v1("192.0.2.9", "192.0.2.2", 5, 6), "ok\n"...))
	if got := testutil.ReadLine(t, bufio.NewReader(trusted)); got != "ok" {
		t.Fatalf("trusted peer: %q", got)
	}
	// 127.0.0.1 is not, even with a well-formed header.
	c := testutil.Dial(t, front)
	c.Write(append(v1("192.0.2.9", "192.0.2.2", 5, 6), "no\n"...))
	got, _ := io.ReadAll(c)
	if len(got) > 0 {
		t.Fatalf("untrusted peer got %q", got)
	}
	waitUntil(t, func() bool { return f.Counters.ProxyErrors.Load() == 1 }, "ProxyErrors == 1")
	if n := be.Accepted.Load(); n != 1 {
		t.Fatalf("server accepted %d, want 1", n)
	}
}

// dialFrom connects to addr from the local address ip (any of 127/8 works
// on Linux loopback), so the client address differs from 127.0.0.1.
func dialFrom(t testing.TB, ip, addr string) *net.TCPConn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// TestAcceptProxySlowHeaderDoesNotBlockAccept: connections that never send
// their header hold only themselves.
func TestAcceptProxySlowHeaderDoesNotBlockAccept(t *testing.T) {
	be := testutil.Serve(t, "be", testutil.Echo)
	_, front := testutil.Start(t, proxyTCPConfig("accept_proxy = true\ntimeout_proxy_header = \"10s\"", "", server("s", be.Addr, 1)))
	for range 20 {
		testutil.Dial(t, front) // silent
	}
	start := time.Now()
	c := testutil.Dial(t, front)
	c.Write(append(v1("192.0.2.1", "192.0.2.2", 1, 2), "hi\n"...))
	if got := testutil.ReadLine(t, bufio.NewReader(c)); got != "hi" {
		t.Fatalf("got %q", got)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("a healthy connection took %v behind silent ones", d)
	}
}

func TestSendProxyTCP(t *testing.T) {
	be := testutil.Serve(t, "be", proxyReporter)
	for _, tc := range []struct {
		version string
		want    string
	}{
		{"v1", "v=1 src=127.0.0.2:"},
		{"v2", "v=2 src=127.0.0.2:"},
	} {
		t.Run(tc.version, func(t *testing.T) {
			_, front := testutil.Start(t, proxyTCPConfig("", fmt.Sprintf("send_proxy = %q", tc.version), server("s", be.Addr, 1)))
			c := dialFrom(t, "127.0.0.2", front)
			c.Write([]byte("x\n"))
			r := bufio.NewReader(c)
			got := testutil.ReadLine(t, r)
			if !strings.HasPrefix(got, tc.want) || !strings.Contains(got, " dst="+front+" ") {
				t.Fatalf("server saw %q, want %q… dst=%s", got, tc.want, front)
			}
			if tc.version == "v2" && strings.Contains(got, " id= ") {
				t.Fatalf("v2 header without a unique id: %q", got)
			}
			if got := testutil.ReadLine(t, r); got != "x" {
				t.Fatalf("echo %q", got)
			}
		})
	}
}

// TestAcceptProxyHTTP: in http mode the header's address is the client's
// in forwarding headers and the access log, and the unique id goes to the
// access log ("id") and to the server's v2 header.
func TestAcceptProxyHTTP(t *testing.T) {
	type seen struct{ xff, hdr string }
	got := make(chan seen, 4)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pl := &proxyproto.Listener{Listener: ln}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			got <- seen{r.Header.Get("X-Forwarded-For"), r.Context().Value(hdrKey{}).(string)}
		}),
		ConnContext: connContextHeader,
	}
	go srv.Serve(pl)
	t.Cleanup(func() { srv.Close() })

	logFile := t.TempDir() + "/access.log"
	_, front := testutil.Start(t, fmt.Sprintf(`[global]
hard_stop_after = "5s"
[frontend.f]
mode = "http"
bind = ["{{FRONT}}"]
accept_proxy = true
access_log = true
access_log_file = %q
default_backend = "b"
[backend.b]
send_proxy = "v2"
[[backend.b.server]]
address = %q
`, logFile, ln.Addr().String()))
	c := testutil.Dial(t, front)
	c.Write(append(v2(t, "[2001:db8::77]:5555", "[2001:db8::1]:80"), "GET / HTTP/1.1\r\nHost: x\r\n\r\n"...))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	s := <-got
	if s.xff != "2001:db8::77" {
		t.Errorf("X-Forwarded-For %q, want 2001:db8::77", s.xff)
	}
	if !strings.HasPrefix(s.hdr, "v=2 src=[2001:db8::77]:5555 dst=[2001:db8::1]:80 id=") {
		t.Errorf("server's PROXY header %q", s.hdr)
	}
	id := strings.Fields(strings.SplitN(s.hdr, " id=", 2)[1])[0]
	waitUntil(t, func() bool { b, _ := os.ReadFile(logFile); return strings.Contains(string(b), "id="+id) }, "access log line with id="+id)
	line, _ := os.ReadFile(logFile)
	if !strings.Contains(string(line), "client=[2001:db8::77]:5555") {
		t.Errorf("access log %q, want client=[2001:db8::77]:5555", line)
	}
}

type hdrKey struct{}

// connContextHeader stores the description of a connection's PROXY header
// in its context.
func connContextHeader(ctx context.Context, c net.Conn) context.Context {
	desc := "none"
	if pc, ok := c.(*proxyproto.Conn); ok {
		if h := pc.ProxyHeader(); h != nil {
			desc = describeHeader(h)
		}
	}
	return context.WithValue(ctx, hdrKey{}, desc)
}

// TestUnexpectedProxyHeaderIsLogged: a frontend without accept_proxy that
// receives PROXY headers says so once per peer, and still serves.
func TestUnexpectedProxyHeaderIsLogged(t *testing.T) {
	be := testutil.Serve(t, "be", testutil.Echo)
	eng, front, log := startLogged(t, proxyTCPConfig("", "", server("s", be.Addr, 1)))
	f := eng.Front.Frontends[0]
	for _, b := range [][]byte{v1("192.0.2.1", "192.0.2.2", 1, 2), v2(t, "192.0.2.1:1", "192.0.2.2:2"), v1("192.0.2.3", "192.0.2.2", 1, 2)} {
		c := testutil.Dial(t, front)
		c.Write(b)
		c.CloseWrite()
		io.ReadAll(c) // echoed: the server sees what was sent
	}
	other := dialFrom(t, "127.0.0.3", front)
	other.Write(v2(t, "192.0.2.1:1", "192.0.2.2:2"))
	other.CloseWrite()
	io.ReadAll(other)
	plain := testutil.Dial(t, front)
	plain.Write([]byte("hello\n"))
	testutil.ReadLine(t, bufio.NewReader(plain))

	waitUntil(t, func() bool { return f.Counters.ProxyUnexpected.Load() == 4 }, "ProxyUnexpected == 4")
	out := log.String()
	if n := strings.Count(out, "without accept_proxy"); n != 2 {
		t.Fatalf("%d log lines, want 2 (one per peer):\n%s", n, out)
	}
	if !strings.Contains(out, `saw="v1 \"PROXY TCP4 192.0.2.1 192.0.2.2 1 2\\r\\n\""`) || !strings.Contains(out, "peer=127.0.0.3 saw=\"v2 signature ver/cmd=0x21") {
		t.Fatalf("log does not say what was seen:\n%s", out)
	}
}
