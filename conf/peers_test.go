package conf_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"sluice/conf"
)

func TestPeersSection(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "secret")
	short := filepath.Join(dir, "short")
	os.WriteFile(good, []byte("0123456789abcdef0123\n"), 0o600)
	os.WriteFile(short, []byte("abc\n"), 0o600)
	const rest = `
[frontend.f]
bind = ["127.0.0.1:8080"]
default_backend = "b"
[backend.b]
sticky = "source"
[[backend.b.server]]
address = "127.0.0.1:1"
`
	cfg := mustParse(t, `[peers]
bind = "127.0.0.1:7070"
peers = ["127.0.0.2:7070", "node2.example:7070"]
secret_file = "`+good+`"
`+rest)
	p := cfg.Peers
	if p.Bind != "127.0.0.1:7070" || len(p.Peers) != 2 || p.SecretFile != good || p.FlushInterval != 100*time.Millisecond || !p.Enabled() {
		t.Errorf("peers = %+v", p)
	}
	if mustParse(t, rest).Peers.Enabled() {
		t.Error("no [peers] section, yet Enabled")
	}

	for _, tc := range []struct {
		desc string
		src  string
		want []want
	}{
		{"no secret", `[peers]
bind = "127.0.0.1:7070"
`, []want{{1, "peers", "needs secret_file"}}},
		{"missing secret file", `[peers]
peers = ["127.0.0.2:7070"]
secret_file = "` + filepath.Join(dir, "nope") + `"
`, []want{{3, "peers.secret_file", "no such file"}}},
		{"short secret", `[peers]
peers = ["127.0.0.2:7070"]
secret_file = "` + short + `"
`, []want{{3, "peers.secret_file", "use at least 16"}}},
		{"bad peer addresses", `[peers]
bind = "127.0.0.1:7070"
peers = ["10.0.0.2", "10.0.0.2:99999", "127.0.0.1:7070"]
secret_file = "` + good + `"
`, []want{
			{3, "peers.peers", `entry 1 "10.0.0.2" is not host:port`},
			{3, "peers.peers", `entry 2 "10.0.0.2:99999" has a bad port`},
			{3, "peers.peers", "own peers.bind"},
		}},
		{"bind taken by a frontend", `[peers]
bind = "127.0.0.1:8080"
secret_file = "` + good + `"
`, []want{{6, "frontend.f.bind", "already bound by peers.bind (line 2)"}}},
		{"bad bind and flush interval", `[peers]
bind = "localhost:7070"
flush_interval = "soon"
secret_file = "` + good + `"
`, []want{
			{2, "peers.bind", "not an IP address"},
			{3, "peers.flush_interval", "not a duration"},
		}},
		{"unknown key", `[peers]
bind = "127.0.0.1:7070"
secret = "hunter2"
secret_file = "` + good + `"
`, []want{{3, "peers.secret", "unknown key"}}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			checkProblems(t, parseErrors(t, tc.src+rest), tc.want)
		})
	}
}

// TestKeepalivedExamples: both nodes' sluice.toml in examples/keepalived
// validate (with the secret file they name replaced by one that exists) and
// point their peers at each other.
func TestKeepalivedExamples(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "peers.secret")
	os.WriteFile(secret, []byte("an example secret of 32 bytes...\n"), 0o600)
	cfgs := map[string]*conf.Config{}
	for _, n := range []string{"node1", "node2"} {
		p := filepath.Join("..", "examples", "keepalived", n, "sluice.toml")
		src, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		src = bytes.ReplaceAll(src, []byte("/etc/sluice/peers.secret"), []byte(secret))
		// /run/sluice exists where sluice runs (RuntimeDirectory=), not here.
		src = bytes.ReplaceAll(src, []byte("/run/sluice/keepalived.track"), []byte(filepath.Join(filepath.Dir(secret), "keepalived.track")))
		cfg, err := conf.Parse(p, src)
		if err != nil {
			t.Fatalf("%s:\n%v", p, err)
		}
		f := cfg.Frontend("www")
		if f == nil || !f.Freebind || cfg.Backend("app").Sticky != "source" {
			t.Errorf("%s: want frontend www with freebind and a sticky = \"source\" backend", p)
		}
		cfgs[n] = cfg
	}
	p1, p2 := cfgs["node1"].Peers, cfgs["node2"].Peers
	if len(p1.Peers) != 1 || p1.Peers[0] != p2.Bind || len(p2.Peers) != 1 || p2.Peers[0] != p1.Bind {
		t.Errorf("peers do not point at each other: node1 %+v, node2 %+v", p1, p2)
	}
}

// TestBGPExamples: the three nodes' files in examples/bgp validate (with
// the secret file they name replaced by one that exists), announce the
// same service address, and list each other as a full mesh of peers.
func TestBGPExamples(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "peers.secret")
	os.WriteFile(secret, []byte("an example secret of 32 bytes...\n"), 0o600)
	var cfgs []*conf.Config
	for _, n := range []string{"node1", "node2", "node3"} {
		p := filepath.Join("..", "examples", "bgp", n+".toml")
		src, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		src = bytes.ReplaceAll(src, []byte(`"peers.secret"`), []byte(strconv.Quote(secret)))
		cfg, err := conf.Parse(p, src)
		if err != nil {
			t.Fatalf("%s:\n%v", p, err)
		}
		if !cfg.BGP.Enabled() || len(cfg.BGP.Announce) != 1 || cfg.BGP.Announce[0].Prefix.String() != "198.51.100.10/32" {
			t.Errorf("%s: want [bgp] announcing 198.51.100.10/32, have %+v", p, cfg.BGP)
		}
		if host, _, _ := strings.Cut(cfg.Peers.Bind, ":"); host != cfg.BGP.RouterID.String() {
			t.Errorf("%s: peers.bind %s is not on the router_id %s", p, cfg.Peers.Bind, cfg.BGP.RouterID)
		}
		cfgs = append(cfgs, cfg)
	}
	for i, c := range cfgs {
		want := map[string]bool{}
		for j, o := range cfgs {
			if j != i {
				want[o.Peers.Bind] = true
			}
		}
		got := map[string]bool{}
		for _, p := range c.Peers.Peers {
			got[p] = true
		}
		if len(got) != 2 || !got[cfgs[(i+1)%3].Peers.Bind] || !got[cfgs[(i+2)%3].Peers.Bind] {
			t.Errorf("node%d's peers %v, want the two others %v", i+1, c.Peers.Peers, want)
		}
	}
}
