package conf_test

import (
	"testing"

	"sluice/conf"
)

// TestTypedValuesRefusedTogether: every enumerated key decodes into its
// type once, and a bad value of each is refused with its line, key and the
// accepted names, all in one report next to the file's other problems
// (the decoder does not stop at the first).
func TestTypedValuesRefusedTogether(t *testing.T) {
	errs := parseErrors(t, `[frontend.f]
mode = "htpp"
bind = ["127.0.0.1:0"]
default_backend = "b"
timeout_client = "soon"

[backend.b]
mode = "tcp"
balance = "fastest"
sticky = "ip"
send_proxy = "v3"
proto = "h3"
[backend.b.health]
check = "icmp"
init_state = "sideways"
[[backend.b.server]]
address = "127.0.0.1:1"
`)
	checkProblems(t, errs, []want{
		{2, "frontend.f.mode", `"htpp" is not one of "tcp", "udp", "http"`},
		{5, "frontend.f.timeout_client", `"soon" is not a duration`},
		{9, "backend.b.balance", `"fastest" is not one of "roundrobin", "leastconn", "iphash", "random"`},
		{10, "backend.b.sticky", `"ip" is not one of "", "cookie", "source"`},
		{11, "backend.b.send_proxy", `"v3" is not one of "", "v1", "v2"`},
		{12, "backend.b.proto", `"h3" is not one of "", "http1", "h2c"`},
		{14, "backend.b.health.check", `"icmp" is not one of "tcp", "http", "dns", "agent", "udp", "none"`},
		{15, "backend.b.health.init_state", `"sideways" is not one of "up", "down"`},
		// The frontend's mode, though refused, still names what was written.
		{4, "frontend.f.default_backend", `frontend f is mode "htpp" but backend b is mode "tcp"`},
	})
	for _, p := range errs {
		if p.Key == "backend.b.send_proxy" && p.Error() != `t.toml:11: backend.b.send_proxy: "v3" is not one of "", "v1", "v2"` {
			t.Errorf("send_proxy problem reads %q", p.Error())
		}
	}
}

// TestTypedValuesDecoded: each accepted name decodes to its constant and
// prints back with String, including the defaults of keys left out.
func TestTypedValuesDecoded(t *testing.T) {
	cfg := mustParse(t, `[frontend.h]
mode = "http"
bind = ["127.0.0.1:0"]
default_backend = "b"
[backend.b]
balance = "iphash"
sticky = "cookie"
send_proxy = "v1"
proto = "h2c"
[backend.b.health]
check = "http"
init_state = "down"
[[backend.b.server]]
address = "127.0.0.1:1"
[frontend.u]
mode = "udp"
bind = ["127.0.0.1:0"]
default_backend = "d"
[[backend.d.server]]
address = "127.0.0.1:1"
`)
	b, d := cfg.Backend("b"), cfg.Backend("d")
	for _, c := range []struct {
		got  interface{ String() string }
		want string
		ok   bool
	}{
		{b.Mode, "http", b.Mode == conf.ModeHTTP},
		{b.Balance, "iphash", b.Balance == conf.BalanceIPHash},
		{b.Sticky, "cookie", b.Sticky == conf.StickyCookie},
		{b.SendProxy, "v1", b.SendProxy == conf.ProxyV1},
		{b.Proto, "h2c", b.Proto == conf.ProtoH2C},
		{b.Health.Check, "http", b.Health.Check == conf.CheckHTTP && b.Health.Check.Active()},
		{b.Health.InitState, "down", b.Health.InitState == conf.InitDown},
		{d.Mode, "udp", d.Mode == conf.ModeUDP && cfg.Frontend("u").Network() == "udp"},
		{d.Balance, "roundrobin", d.Balance == conf.BalanceRoundRobin},
		{d.Sticky, "", d.Sticky == conf.StickyNone},
		{d.SendProxy, "", d.SendProxy == conf.ProxyNone},
		{d.Health.Check, "none", !d.Health.Check.Active()},
		{d.Health.InitState, "up", d.Health.InitState == conf.InitUp},
	} {
		if c.got.String() != c.want || !c.ok {
			t.Errorf("%T %q, want %q (constant matches: %v)", c.got, c.got.String(), c.want, c.ok)
		}
	}
	if cfg.Frontend("h").Network() != "tcp" {
		t.Errorf("http frontend listens on %s, want tcp", cfg.Frontend("h").Network())
	}
}

// TestAdminStateNames: the one mapping of admin-state names round-trips,
// refuses anything else, and names an unknown value without panicking.
func TestAdminStateNames(t *testing.T) {
	for _, tc := range []struct {
		name string
		a    conf.AdminState
	}{{"ready", conf.AdminReady}, {"drain", conf.AdminDrain}, {"maint", conf.AdminMaint}} {
		if got := tc.a.String(); got != tc.name {
			t.Errorf("%d.String() = %q, want %q", tc.a, got, tc.name)
		}
		a, err := conf.ParseAdminState(tc.name)
		if err != nil || a != tc.a {
			t.Errorf("ParseAdminState(%q) = %v, %v; want %v", tc.name, a, err, tc.a)
		}
	}
	for _, bad := range []string{"", "READY", "up", "maintenance"} {
		if a, err := conf.ParseAdminState(bad); err == nil {
			t.Errorf("ParseAdminState(%q) = %v, want an error", bad, a)
		}
	}
	if got := conf.AdminState(7).String(); got != "AdminState(7)" {
		t.Errorf("AdminState(7).String() = %q", got)
	}
}
