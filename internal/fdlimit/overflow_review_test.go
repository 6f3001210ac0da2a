package fdlimit

import (
	"math"
	"testing"
)

// Review of issue 15: a global.maxconn the decoder takes (any int64) must
// not overflow the budget arithmetic. With maxconn = MaxInt64, Need wraps
// to 254, so Fit says the limit holds it (no warning), and Plan's
// avail-2*maxconn wraps positive, handing UDP flows the whole limit: the
// flood the budget exists to stop takes the descriptors accept needs again.
func TestHugeMaxconnDoesNotOverflowBudget(t *testing.T) {
	const limit = 20000
	for _, mc := range []int{math.MaxInt64, math.MaxInt64/2 + 1, 1 << 62} {
		if _, msg, warn := Fit(mc, true, limit); !warn || msg == "" {
			t.Errorf("Fit(%d, set, %d): no warning; a maxconn this large cannot be held", mc, limit)
		}
		if Need(mc) < limit {
			t.Errorf("Need(%d) = %d, under the limit %d: the product wrapped", mc, Need(mc), limit)
		}
		b := Plan(mc, true, []UDPFrontend{{Name: "dns"}}, Fixed{}, limit)
		if got := b.Flows["dns"]; got > MinDefaultFlows {
			t.Errorf("Plan(maxconn=%d): dns gets %d flows of a limit of %d that maxconn already spends; want at most %d (with a warning)",
				mc, got, limit, MinDefaultFlows)
		}
		if len(b.Warn) == 0 {
			t.Errorf("Plan(maxconn=%d): no warning", mc)
		}
	}
}
