package backend

import (
	"fmt"
	"testing"

	"sluice/conf"
)

// TestClientTLSConfigsBounded: one config per server address is kept for
// dials, but addresses churn with DNS discovery: the map must not grow
// without bound, and a config still names its server after a restart.
func TestClientTLSConfigsBounded(t *testing.T) {
	ct := NewClientTLS(&conf.BackendTLS{})
	for i := range 3 * maxConfigs {
		addr := fmt.Sprintf("10.%d.%d.%d:443", i>>16&255, i>>8&255, i&255)
		if c := ct.Config(addr); c.ServerName != addr[:len(addr)-4] {
			t.Fatalf("config of %s names %q", addr, c.ServerName)
		}
	}
	n := 0
	ct.configs.Range(func(any, any) bool { n++; return true })
	if n > maxConfigs {
		t.Errorf("%d configs kept after %d addresses, want at most %d", n, 3*maxConfigs, maxConfigs)
	}
	if c1, c2 := ct.Config("10.9.9.9:443"), ct.Config("10.9.9.9:443"); c1 != c2 {
		t.Error("a second dial to one address built its config again")
	}
}
