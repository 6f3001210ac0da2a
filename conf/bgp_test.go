package conf_test

import (
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"sluice/conf"
)

// TestBGPExamplesValidate: examples/bgp/*.toml validate, and node1's [bgp]
// reads as written (defaults filled in).
func TestBGPExamplesValidate(t *testing.T) {
	files, _ := filepath.Glob("../examples/bgp/*.toml")
	if len(files) == 0 {
		t.Fatal("no examples/bgp/*.toml")
	}
	for _, f := range files {
		cfg, err := conf.Load(f)
		if err != nil {
			t.Fatalf("%v", err)
		}
		if !cfg.BGP.Enabled() || len(cfg.BGP.Neighbors) == 0 || len(cfg.BGP.Announce) == 0 {
			t.Errorf("%s: [bgp] = %+v", f, cfg.BGP)
		}
	}
	cfg, err := conf.Load("../examples/bgp/node1.toml")
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
