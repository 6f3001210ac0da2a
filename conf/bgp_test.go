package conf_test

import (
	"bytes"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"sluice/conf"
)

// TestBGPExamplesValidate: node1's [bgp] reads as written (defaults filled
// in); TestBGPExamples (peers_test.go) validates the three nodes' files.
func TestBGPExamplesValidate(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "peers.secret")
	os.WriteFile(secret, []byte("an example secret of 32 bytes...\n"), 0o600)
	p := "../examples/bgp/node1.toml"
	src, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := conf.Parse(p, bytes.ReplaceAll(src, []byte(`"peers.secret"`), []byte(strconv.Quote(secret))))
	if err != nil {
		t.Fatal(err)
	}
	b := cfg.BGP
	a := b.Announce[0]
	if b.ASN != 65010 || b.ListenPort != -1 || b.HoldTime != 9*time.Second || b.DrainBeforeStop != 2*time.Second ||
		b.Neighbors[0].Port != 179 || a.Prefix != netip.MustParsePrefix("198.51.100.10/32") || a.NextHop.IsValid() ||
		len(a.Communities) != 1 || conf.CommunityString(a.Communities[0]) != "65000:100" {
		t.Errorf("[bgp] = %+v", b)
	}
}

// TestBGPRiskyAnnouncements: mistakes that validate but hurt in production.
// A default route from a balancer draws every destination to it; a
// password on a node that also accepts sessions protects only the sessions
// it dials (gobgp's listener is Multipath TCP, on which Linux refuses
// TCP_MD5SIG: an incoming session without the key was accepted).
func TestBGPRiskyAnnouncements(t *testing.T) {
	errs := parseErrors(t, `[frontend.web]
mode = "http"
bind = ["198.51.100.10:80"]
default_backend = "app"
[[backend.app.server]]
name = "a"
address = "127.0.0.1:8080"
[bgp]
asn = 65010
router_id = "192.0.2.11"
listen_port = 179
[[bgp.neighbor]]
address = "192.0.2.1"
asn = 65000
password = "s3cret"
[[bgp.announce]]
prefix = "0.0.0.0/0"
when_vital = ["web"]
[[bgp.announce]]
prefix = "::/0"
when_vital = ["web"]
`)
	checkProblems(t, errs, []want{
		{15, "bgp.neighbor.0.password", "listen_port"},
		{17, "bgp.announce.0.prefix", "default route"},
		{20, "bgp.announce.1.prefix", "default route"},
	})
}

// TestBGPUnguardedAnnounceWarns: an announcement that no frontend's health
// gates (no when_vital, no global.vital_frontends) stays announced while
// every server is down; check says so.
func TestBGPUnguardedAnnounceWarns(t *testing.T) {
	src := `[frontend.web]
mode = "http"
bind = ["198.51.100.10:80"]
default_backend = "app"
[[backend.app.server]]
name = "a"
address = "127.0.0.1:8080"
[bgp]
asn = 65010
router_id = "192.0.2.11"
[[bgp.neighbor]]
address = "192.0.2.1"
asn = 65000
[[bgp.announce]]
prefix = "198.51.100.10/32"
`
	cfg, err := conf.Parse("t.toml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, w := range cfg.Warnings {
		if w.Line == 14 && w.Key == "bgp.announce.0" && strings.Contains(w.Msg, "when_vital") {
			found = true
		}
	}
	if !found {
		t.Errorf("no warning on line 14 for an announcement no health gates; warnings: %v", cfg.Warnings)
	}
	// Either guard silences it.
	for _, guard := range []string{"[global]\nvital_frontends = [\"web\"]\n" + src, src + "when_vital = [\"web\"]\n"} {
		cfg, err := conf.Parse("t.toml", []byte(guard))
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range cfg.Warnings {
			if strings.HasPrefix(w.Key, "bgp") {
				t.Errorf("guarded announcement still warned: %v", w)
			}
		}
	}
}
