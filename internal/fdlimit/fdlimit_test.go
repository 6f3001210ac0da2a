package fdlimit

import (
	"reflect"
	"strings"
	"testing"
)

func TestFit(t *testing.T) {
	for _, tc := range []struct {
		maxconn int
		set     bool
		limit   uint64
		want    int
		warn    bool
		msg     string // substring; "" means no message
	}{
		{50000, false, 1 << 20, 50000, false, ""},
		{50000, true, 100256, 50000, false, ""},                            // exactly enough
		{50000, false, 20000, 9872, false, "global.maxconn not set: 9872"}, // (20000-256)/2
		{50000, true, 20000, 50000, true, "set global.maxconn to 9872"},
		{9000, true, 20000, 9000, false, ""},
		{10, true, 0, 10, false, ""}, // limit unknown: trust the file
		{10, false, 100, 1, false, "not set: 1 "},
	} {
		n, msg, warn := Fit(tc.maxconn, tc.set, tc.limit)
		if n != tc.want || warn != tc.warn || (tc.msg == "") != (msg == "") || !strings.Contains(msg, tc.msg) {
			t.Errorf("Fit(%d, %v, %d) = %d, %q, %v; want %d, %q…, %v", tc.maxconn, tc.set, tc.limit, n, msg, warn, tc.want, tc.msg, tc.warn)
		}
	}
}

func TestLimit(t *testing.T) {
	if Limit() == 0 {
		t.Fatal("RLIMIT_NOFILE unreadable")
	}
}

// The flows of udp frontends get their own share of the limit, so that the
// descriptors maxconn is fitted to stay free for accept (issue 15).
func TestPlan(t *testing.T) {
	u := func(name string, n int) UDPFrontend { return UDPFrontend{Name: name, MaxFlows: n} }
	for _, tc := range []struct {
		desc    string
		maxconn int
		set     bool
		udp     []UDPFrontend
		limit   uint64
		conns   int
		flows   map[string]int
		warn    string // substring of the one warning; "" none
		fixed   Fixed
	}{
		{"no udp: as Fit", 50000, false, nil, 20000, 9872, map[string]int{}, "", Fixed{}},
		{"tight limit: a quarter kept for flows", 50000, false, []UDPFrontend{u("dns", 0)}, 20000,
			7404, map[string]int{"dns": 19744 - 2*7404}, "", Fixed{}},
		{"two frontends split the rest", 50000, false, []UDPFrontend{u("a", 0), u("b", 0)}, 20000,
			7404, map[string]int{"a": 2468, "b": 2468}, "", Fixed{}},
		{"large limit: the default share is capped", 50000, false, []UDPFrontend{u("dns", 0)}, 1 << 20,
			50000, map[string]int{"dns": MaxDefaultFlows}, "", Fixed{}},
		{"explicit max_flows comes off first", 1000, true, []UDPFrontend{u("a", 500), u("b", 0)}, 4000,
			1000, map[string]int{"a": 500, "b": 4000 - Reserve - 2000 - 500}, "", Fixed{}},
		{"explicit max_flows past the limit is clamped", 1000, true, []UDPFrontend{u("a", 5000)}, 4000,
			1000, map[string]int{"a": 1744}, "frontend.a.max_flows = 5000 needs a descriptor per flow but the file descriptor limit 4000 leaves 1744", Fixed{}},
		{"two explicit max_flows share what is left", 1000, true, []UDPFrontend{u("a", 1000), u("b", 1000)}, 4000,
			1000, map[string]int{"a": 1000, "b": 744}, "frontend.b.max_flows = 1000 needs a descriptor per flow but the file descriptor limit 4000 leaves 744", Fixed{}},
		{"explicit max_flows when maxconn leaves nothing: one flow", 1872, true, []UDPFrontend{u("a", 500)}, 4000,
			1872, map[string]int{"a": 1}, "clamped to 1 flows", Fixed{}},
		{"maxconn set leaves nothing: floor, warned", 1872, true, []UDPFrontend{u("a", 0)}, 4000,
			1872, map[string]int{"a": MinDefaultFlows}, "frontend.a: max_flows not set and only 0 file descriptors", Fixed{}},
		{"a huge max_flows does not starve an unset maxconn", 50000, false, []UDPFrontend{u("a", 100000)}, 4256,
			1000, map[string]int{"a": 2000}, "clamped to 2000 flows", Fixed{}},
		{"checks and listeners shrink an unset maxconn", 50000, false, nil, 1000,
			(1000 - Reserve - 300 - 3 - 64) / 2, map[string]int{}, "", Fixed{Listeners: 3, Checks: 300, Stats: 64}},
		{"checks and listeners: a set maxconn warns", 300, true, nil, 1000,
			300, map[string]int{}, "beside the reserve of 256 and 367 for 3 listeners, 300 checked servers, 64 stats connections", Fixed{Listeners: 3, Checks: 300, Stats: 64}},
		{"checks and listeners come off before the flows", 100, true, []UDPFrontend{u("a", 1000)}, 1000,
			100, map[string]int{"a": 1000 - Reserve - 367 - 200}, "clamped to 177 flows", Fixed{Listeners: 3, Checks: 300, Stats: 64}},
		{"limit unknown", 10, true, []UDPFrontend{u("a", 0), u("b", 7)}, 0,
			10, map[string]int{"a": MaxDefaultFlows, "b": 7}, "", Fixed{}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			b := Plan(tc.maxconn, tc.set, tc.udp, tc.fixed, tc.limit)
			if b.MaxConn != tc.conns || !reflect.DeepEqual(b.Flows, tc.flows) {
				t.Errorf("maxconn %d, flows %v; want %d, %v", b.MaxConn, b.Flows, tc.conns, tc.flows)
			}
			if tc.warn == "" && len(b.Warn) > 0 || tc.warn != "" && (len(b.Warn) != 1 || !strings.Contains(b.Warn[0], tc.warn)) {
				t.Errorf("warnings %q, want one with %q", b.Warn, tc.warn)
			}
			// What is planned fits, unless a warning says otherwise.
			if need := Need(b.MaxConn) + tc.fixed.Total() + uint64(b.FlowsTotal()); len(b.Warn) == 0 && tc.limit > 0 && need > tc.limit {
				t.Errorf("plan needs %d descriptors, limit %d, and no warning", need, tc.limit)
			}
		})
	}
}
