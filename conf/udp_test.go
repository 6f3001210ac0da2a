package conf_test

import (
	"net"
	"reflect"
	"testing"
	"time"

	"sluice/conf"
)

func TestUDPKeys(t *testing.T) {
	cfg := mustParse(t, `[defaults]
timeout_udp = "40s"
[frontend.dns]
mode = "udp"
bind = ["127.0.0.1:5353"]
max_flows = 1000
default_backend = "dns"
[frontend.syslog]
mode = "udp"
bind = ["127.0.0.1:5514"]
timeout_udp = "5s"
default_backend = "syslog"
[backend.dns]
responses = 1
timeout_udp = "2s"
[[backend.dns.server]]
address = "127.0.0.1:53"
[backend.syslog]
[backend.syslog.dns]
name = "syslog.service.consul."
port = 514
resolvers = ["127.0.0.1:8600", "10.0.0.53"]
timeout = "500ms"
max_servers = 8
`)
	dns, syslog := cfg.Frontend("dns"), cfg.Frontend("syslog")
	if dns.TimeoutUDP != 40*time.Second || dns.MaxFlows != 1000 || syslog.TimeoutUDP != 5*time.Second || syslog.MaxFlows != 0 {
		t.Errorf("frontends: dns %s/%d, syslog %s/%d", dns.TimeoutUDP, dns.MaxFlows, syslog.TimeoutUDP, syslog.MaxFlows)
	}
	if dns.MaxFlowsPerSource != conf.DefaultMaxFlowsPerSource || syslog.MaxFlowsPerSource != conf.DefaultMaxFlowsPerSource {
		t.Errorf("max_flows_per_source defaults: dns %d, syslog %d", dns.MaxFlowsPerSource, syslog.MaxFlowsPerSource)
	}
	if b := cfg.Backend("dns"); b.Responses != 1 || b.TimeoutUDP != 2*time.Second || b.Mode != "udp" {
		t.Errorf("backend dns = %+v", b)
	}
	want := conf.DNS{Name: "syslog.service.consul.", Port: 514, Resolvers: []string{"127.0.0.1:8600", "10.0.0.53:53"},
		Interval: conf.DefaultDNSInterval, Timeout: 500 * time.Millisecond, MaxServers: 8}
	if got := cfg.Backend("syslog").DNS; got == nil || !reflect.DeepEqual(*got, want) {
		t.Errorf("dns = %+v, want %+v", got, want)
	}
}

func TestUDPKeyProblems(t *testing.T) {
	errs := parseErrors(t, `[frontend.u]
mode = "udp"
bind = ["127.0.0.1:53"]
timeout_udp = "0s"
max_flows = -1
accept_proxy = true
default_backend = "b"
[backend.b]
responses = -2
[backend.b.dns]
port = 70000
resolvers = ["dns.google", "127.0.0.1:x"]
interval = "1ms"
timeout = "0s"
max_servers = 0
`)
	checkProblems(t, errs, []want{
		{4, "frontend.u.timeout_udp", "more than 0"},
		{5, "frontend.u.max_flows", "negative"},
		{6, "frontend.u.accept_proxy", "udp"},
		{9, "backend.b.responses", "negative"},
		{10, "backend.b.dns.name", "needs a name"},
		{11, "backend.b.dns.port", "not a port"},
		{12, "backend.b.dns.resolvers", "not an IP address"},
		{12, "backend.b.dns.resolvers", "bad port"},
		{13, "backend.b.dns.interval", "at least"},
		{14, "backend.b.dns.timeout", "more than 0"},
		{15, "backend.b.dns.max_servers", "at least 1"},
	})
}

func TestUDPMaxFlowsPerSource(t *testing.T) {
	cfg := mustParse(t, `[frontend.a]
mode = "udp"
bind = ["127.0.0.1:5353"]
max_flows_per_source = 8
default_backend = "b"
[frontend.off]
mode = "udp"
bind = ["127.0.0.1:5354"]
max_flows_per_source = 0
default_backend = "b"
[[backend.b.server]]
address = "127.0.0.1:53"
`)
	if a, off := cfg.Frontend("a").MaxFlowsPerSource, cfg.Frontend("off").MaxFlowsPerSource; a != 8 || off != 0 {
		t.Errorf("max_flows_per_source: a = %d, off = %d; want 8 and 0", a, off)
	}
	errs := parseErrors(t, `[frontend.u]
mode = "udp"
bind = ["127.0.0.1:53"]
max_flows_per_source = -1
default_backend = "b"
[frontend.t]
bind = ["127.0.0.1:80"]
max_flows_per_source = 4
default_backend = "t"
[[backend.b.server]]
address = "127.0.0.1:5300"
[[backend.t.server]]
address = "127.0.0.1:8000"
`)
	checkProblems(t, errs, []want{
		{4, "frontend.u.max_flows_per_source", "negative"},
		{8, "frontend.t.max_flows_per_source", "mode = \"udp\""},
	})
}

func TestUDPTemplateBind(t *testing.T) {
	if _, err := net.InterfaceByName("lo"); err != nil {
		t.Skip("no loopback interface named lo on this host")
	}
	cfg := mustParse(t, `[frontend.u]
mode = "udp"
bind = ['{{ GetInterfaceIP "lo" }}:5353']
default_backend = "b"
[[backend.b.server]]
address = "127.0.0.1:53"
`)
	if got := cfg.Frontend("u").Bind; !reflect.DeepEqual(got, []string{"127.0.0.1:5353"}) {
		t.Errorf("bind = %v", got)
	}
}

func TestUDPModeProblems(t *testing.T) {
	errs := parseErrors(t, `[frontend.u]
mode = "udp"
bind = ["127.0.0.1:53"]
default_backend = "u"
[frontend.t]
bind = ["127.0.0.1:80"]
default_backend = "t"
[backend.u]
send_proxy = "v1"
[[backend.u.server]]
address = "127.0.0.1:5300"
[backend.t]
responses = 1
[[backend.t.server]]
address = "127.0.0.1:8000"
`)
	checkProblems(t, errs, []want{
		{9, "backend.u.send_proxy", "TCP only"},
		{13, "backend.t.responses", "needs a udp backend"},
	})
}
