package supervisor

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"sluice/conf"
	"sluice/internal/sockets"
	"sluice/internal/testutil"
)

// liveFixture stands in for a running sluice: a listener for the vital
// frontend, an HTTP server for the stats listener's /healthz, and a unix
// socket for the master's control socket.
type liveFixture struct {
	front   string // accepting address
	stats   string // address of the /healthz stand-in
	control string // path of a listening unix socket
}

func newLiveFixture(t *testing.T, healthzCode int, body string) liveFixture {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(healthzCode)
		fmt.Fprint(w, body)
	}))
	t.Cleanup(hs.Close)
	sock := filepath.Join(t.TempDir(), "sluice.sock")
	ul, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ul.Close() })
	// It answers "status" as a master with a running worker does.
	go func() {
		for {
			c, err := ul.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if _, err := bufio.NewReader(c).ReadString('\n'); err == nil {
					fmt.Fprintln(c, `{"ok":true,"pid":1,"worker_pid":2}`)
				}
			}()
		}
	}()
	return liveFixture{front: ln.Addr().String(), stats: strings.TrimPrefix(hs.URL, "http://"), control: sock}
}

func liveConfig(t *testing.T, control, stats, front string) *conf.Config {
	t.Helper()
	src := ""
	if control != "" {
		src += fmt.Sprintf("[global]\ncontrol_socket = %q\nvital_frontends = [\"www\"]\n", control)
	} else {
		src += "[global]\nvital_frontends = [\"www\"]\n"
	}
	if stats != "" {
		src += fmt.Sprintf("[stats]\nbind = %q\n", stats)
	}
	src += fmt.Sprintf("[frontend.www]\nbind = [%q]\ndefault_backend = \"app\"\n[[backend.app.server]]\naddress = \"127.0.0.1:1\"\n", front)
	cfg, err := conf.Parse("live.toml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestLiveCheck(t *testing.T) {
	up := newLiveFixture(t, 200, "ok\n")
	down := newLiveFixture(t, 503, "frontend www: no server up\nmore detail\n")
	closed := testutil.ClosedAddr(t)
	missing := filepath.Join(t.TempDir(), "no.sock")
	for _, tc := range []struct {
		desc                  string
		control, stats, front string
		want                  string // "" = live
	}{
		{"everything answers", up.control, up.stats, up.front, ""},
		{"no control socket or stats configured", "", "", up.front, ""},
		{"stats says a vital frontend has no server up", up.control, down.stats, up.front,
			"http://" + down.stats + "/healthz answered 503: frontend www: no server up"},
		{"stats does not answer", up.control, closed, up.front, "no answer from stats at http://" + closed + "/healthz"},
		{"vital frontend does not accept", up.control, up.stats, closed, "vital frontend www: not accepting on " + closed},
		{"control socket missing", missing, up.stats, up.front, "master not answering on control socket " + missing},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			err := CheckLive(liveConfig(t, tc.control, tc.stats, tc.front))
			if tc.want == "" {
				if err != nil {
					t.Fatalf("not live: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("live, want %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("reason %q, want one line containing %q", err, tc.want)
			}
		})
	}
}

// TestLiveCheckVIP: on the backup node the VIP is bound with freebind but
// not held; the check looks for the listening socket instead of dialling
// (which would reach the other node).
func TestLiveCheckVIP(t *testing.T) {
	vip := netip.MustParseAddr("192.0.2.10")
	if isLocal(vip) {
		t.Skip("192.0.2.10 is assigned here")
	}
	s, err := sockets.Listen(sockets.Key{Network: "tcp", Addr: "192.0.2.10:0"}, sockets.Options{Freebind: true})
	if err != nil {
		t.Skipf("cannot bind with IP_FREEBIND here: %v", err)
	}
	addr := s.Listener.Addr().String()
	if err := CheckLive(liveConfig(t, "", "", addr)); err != nil {
		t.Fatalf("VIP bound with freebind: not live: %v", err)
	}
	s.Close()
	err = CheckLive(liveConfig(t, "", "", addr))
	if err == nil || !strings.Contains(err.Error(), "nothing listens on "+addr) {
		t.Fatalf("after closing: %v, want nothing listens", err)
	}
}

func TestParseProcAddr(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"0100007F:1F90", "127.0.0.1:8080"},
		{"0A0200C0:0050", "192.0.2.10:80"},
		{"00000000000000000000000001000000:0016", "[::1]:22"},
	} {
		got, ok := parseProcAddr(tc.in)
		if !ok || got.String() != tc.want {
			t.Errorf("parseProcAddr(%q) = %v %v, want %s", tc.in, got, ok, tc.want)
		}
	}
}

func TestDialable(t *testing.T) {
	for in, want := range map[string]string{
		"0.0.0.0:8404": "127.0.0.1:8404", "[::]:8404": "[::1]:8404", ":8404": "127.0.0.1:8404", "10.0.0.1:80": "10.0.0.1:80",
	} {
		if got := Dialable(in); got != want {
			t.Errorf("Dialable(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestLiveNothingToCheck: a file without control socket, stats listener or
// vital frontends fails --live (nothing running must never pass).
func TestLiveNothingToCheck(t *testing.T) {
	cfg, err := conf.Parse("t.toml", []byte("[frontend.f]\nbind = [\"127.0.0.1:1\"]\ndefault_backend = \"b\"\n[[backend.b.server]]\naddress = \"127.0.0.1:1\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	err = CheckLive(cfg)
	if err == nil || err.Error() != "nothing to check: set global.control_socket or global.vital_frontends" {
		t.Fatalf("CheckLive = %v", err)
	}
}
