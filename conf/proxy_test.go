package conf_test

import (
	"net/netip"
	"reflect"
	"testing"
	"time"
)

func TestProxyKeys(t *testing.T) {
	t.Run("parsed and defaulted", func(t *testing.T) {
		cfg := mustParse(t, `[frontend.a]
bind = ["127.0.0.1:0"]
accept_proxy = true
proxy_trusted = ["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"]
default_backend = "b"

[frontend.c]
bind = ["127.0.0.1:1"]
accept_proxy = true
timeout_proxy_header = "250ms"
default_backend = "b"

[backend.b]
send_proxy = "v2"
[[backend.b.server]]
address = "127.0.0.1:1"
`)
		a, c := cfg.Frontend("a"), cfg.Frontend("c")
		want := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.7/32"), netip.MustParsePrefix("2001:db8::/32")}
		if !a.AcceptProxy || !reflect.DeepEqual(a.ProxyTrusted, want) {
			t.Errorf("frontend a: accept_proxy %v, proxy_trusted %v", a.AcceptProxy, a.ProxyTrusted)
		}
		if a.TimeoutProxyHeader != 3*time.Second || c.TimeoutProxyHeader != 250*time.Millisecond {
			t.Errorf("timeout_proxy_header = %v, %v; want 3s, 250ms", a.TimeoutProxyHeader, c.TimeoutProxyHeader)
		}
		if b := cfg.Backend("b"); b.SendProxy.String() != "v2" {
			t.Errorf("send_proxy = %q", b.SendProxy)
		}
	})
	t.Run("problems", func(t *testing.T) {
		errs := parseErrors(t, `[frontend.a]
bind = ["127.0.0.1:0"]
accept_proxy = true
proxy_trusted = ["10.0.0.0/33", "nope"]
timeout_proxy_header = "-1s"
default_backend = "b"

[frontend.u]
mode = "udp"
bind = ["127.0.0.1:0"]
accept_proxy = true
default_backend = "d"

[backend.d]
[[backend.d.server]]
address = "127.0.0.1:2"

[backend.b]
send_proxy = "v9"
[[backend.b.server]]
address = "127.0.0.1:1"
`)
		checkProblems(t, errs, []want{
			{4, "frontend.a.proxy_trusted", `"10.0.0.0/33" is not an address or CIDR`},
			{4, "frontend.a.proxy_trusted", `"nope" is not an address or CIDR`},
			{5, "frontend.a.timeout_proxy_header", "negative"},
			{11, "frontend.u.accept_proxy", "tcp and http frontends only"},
			{19, "backend.b.send_proxy", `"v9" is not one of`},
		})
	})
}
