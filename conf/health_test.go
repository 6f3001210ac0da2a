package conf_test

import (
	"testing"
	"time"

	"github.com/miekg/dns"

	"sluice/conf"
)

const healthHead = `[frontend.f]
bind = ["127.0.0.1:0"]
default_backend = "b"

[[backend.b.server]]
address = "127.0.0.1:1"

[backend.b.health]
`

func TestHealthKeys(t *testing.T) {
	cfg := mustParse(t, healthHead+`check = "http"
method = "HEAD"
path = "/healthz"
host = "app.example.com"
expect = "200,204, 300-302"
expect_body = "ok"
check_port = 9000
interval = "500ms"
interval_down = "5s"
timeout = "250ms"
rise = 1
fall = 4
slowstart = "30s"
observe = true
observe_errors = 3
init_state = "down"
`)
	h := cfg.Backend("b").Health
	if h.Check != "http" || h.Method != "HEAD" || h.Path != "/healthz" || h.Host != "app.example.com" ||
		h.ExpectBody != "ok" || h.CheckPort != 9000 || h.Interval != 500*time.Millisecond ||
		h.IntervalDown != 5*time.Second || h.Timeout != 250*time.Millisecond || h.Rise != 1 || h.Fall != 4 ||
		h.SlowStart != 30*time.Second || !h.Observe || h.ObserveErrors != 3 || h.InitState != "down" {
		t.Errorf("health = %+v", h)
	}
	for code, in := range map[int]bool{200: true, 204: true, 300: true, 302: true, 201: false, 303: false, 500: false} {
		if h.ExpectStatus.Has(code) != in {
			t.Errorf("expect has %d = %v, want %v", code, !in, in)
		}
	}

	cfg = mustParse(t, healthHead+`check = "dns"
query_name = "example.com"
query_type = "soa"
`)
	if h := cfg.Backend("b").Health; h.QueryName != "example.com." || h.QueryType != dns.TypeSOA || h.IntervalDown != h.Interval {
		t.Errorf("dns health = %+v", h)
	}
	cfg = mustParse(t, healthHead+`check = "agent"
agent_port = 7777
`)
	if h := cfg.Backend("b").Health; h.AgentPort != 7777 {
		t.Errorf("agent health = %+v", h)
	}
	cfg = mustParse(t, healthHead+`check = "udp"
send = "ping"
expect_body = "pong"
`)
	if h := cfg.Backend("b").Health; h.Send != "ping" || h.ExpectBody != "pong" {
		t.Errorf("udp health = %+v", h)
	}
	cfg = mustParse(t, healthHead)
	if h := cfg.Backend("b").Health; h.Check != conf.CheckNone || h.InitState != "up" || h.Observe || h.SlowStart != 0 {
		t.Errorf("default health = %+v", h)
	}
}

func TestHealthProblems(t *testing.T) {
	for _, tc := range []struct {
		desc string
		src  string
		want []want
	}{
		{"unknown kind", `check = "icmp"`, []want{{9, "backend.b.health.check", `"icmp" is not one of`}}},
		{"bad expect", `check = "http"
expect = "200-abc"`, []want{{10, "backend.b.health.expect", `"200-abc" is not a status code`}}},
		{"reversed range", `check = "http"
expect = "399-200"`, []want{{10, "backend.b.health.expect", "not a status code"}}},
		{"bad method and path", `check = "http"
method = "GE T"
path = "healthz"`, []want{
			{10, "backend.b.health.method", "not an HTTP method"},
			{11, "backend.b.health.path", `must start with "/"`},
		}},
		{"key of another kind", `check = "tcp"
path = "/x"
query_type = "A"
agent_port = 1`, []want{
			{10, "backend.b.health.path", `only applies to check = "http"`},
			{11, "backend.b.health.query_type", `only applies to check = "dns"`},
			{12, "backend.b.health.agent_port", `only applies to check = "agent"`},
		}},
		{"bad dns type and name", `check = "dns"
query_type = "BOGUS"
query_name = "a..b"`, []want{
			{10, "backend.b.health.query_type", "not a DNS record type"},
			{11, "backend.b.health.query_name", "not a domain name"},
		}},
		{"ports out of range", `check = "agent"
agent_port = 0
check_port = 70000`, []want{
			{10, "backend.b.health.agent_port", "1..65535"},
			{11, "backend.b.health.check_port", "1..65535"},
		}},
		{"timings", `check = "tcp"
interval = "1ms"
interval_down = "x"
timeout = "0s"
slowstart = "-1s"
rise = 0
fall = 0`, []want{
			{10, "backend.b.health.interval", "at least 10ms"},
			{11, "backend.b.health.interval_down", "not a duration"},
			{12, "backend.b.health.timeout", "more than 0"},
			{13, "backend.b.health.slowstart", "negative"},
			{14, "backend.b.health.rise", "at least 1"},
			{15, "backend.b.health.fall", "at least 1"},
		}},
		{"observe without a check", `observe = true
init_state = "down"`, []want{
			{9, "backend.b.health.observe", "needs an active check"},
			{10, "backend.b.health.init_state", "needs an active check"},
		}},
		{"observe_errors alone or zero", `check = "tcp"
observe_errors = 0`, []want{
			{10, "backend.b.health.observe_errors", "at least 1"},
			{10, "backend.b.health.observe_errors", "without observe = true"},
		}},
		{"bad init_state", `check = "tcp"
init_state = "sideways"`, []want{{10, "backend.b.health.init_state", `"sideways" is not one of "up", "down"`}}},
		{"misspelt key", `check = "tcp"
intervall = "1s"`, []want{{10, "backend.b.health.intervall", "unknown key"}}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			checkProblems(t, parseErrors(t, healthHead+tc.src+"\n"), tc.want)
		})
	}
}

func TestParseStatusSet(t *testing.T) {
	for _, tc := range []struct {
		spec string
		in   []int
		out  []int
		bad  bool
	}{
		{spec: "200-399", in: []int{200, 301, 399}, out: []int{199, 400, 500}},
		{spec: "200,204", in: []int{200, 204}, out: []int{201, 203, 205}},
		{spec: "599", in: []int{599}, out: []int{598}},
		{spec: "", bad: true},
		{spec: "99", bad: true},
		{spec: "200-600", bad: true},
		{spec: "2xx", bad: true},
	} {
		s, err := conf.ParseStatusSet(tc.spec)
		if (err != nil) != tc.bad {
			t.Errorf("%q: err = %v, want bad = %v", tc.spec, err, tc.bad)
			continue
		}
		for _, c := range tc.in {
			if !s.Has(c) {
				t.Errorf("%q lacks %d", tc.spec, c)
			}
		}
		for _, c := range tc.out {
			if s.Has(c) {
				t.Errorf("%q has %d", tc.spec, c)
			}
		}
	}
}
