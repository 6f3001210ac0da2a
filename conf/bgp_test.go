package conf_test

import (
	"bytes"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
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
