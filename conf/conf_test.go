package conf_test

import (
	"errors"
	"net"
	"net/netip"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"sluice/conf"
)

// want is one expected problem: exact line and key, and words the message
// must contain.
type want struct {
	line int
	key  string
	msg  string
}

// parseErrors parses src and returns its problems, failing if it validates.
func parseErrors(t *testing.T, src string) conf.Errors {
	t.Helper()
	cfg, err := conf.Parse("t.toml", []byte(src))
	if err == nil {
		t.Fatalf("config validated, want errors (got %d frontends)", len(cfg.Frontends))
	}
	var errs conf.Errors
	if !errors.As(err, &errs) {
		t.Fatalf("error is %T, want conf.Errors: %v", err, err)
	}
	return errs
}

// checkProblems requires exactly the problems in ws, in any order.
func checkProblems(t *testing.T, errs conf.Errors, ws []want) {
	t.Helper()
	used := make([]bool, len(errs))
	for _, w := range ws {
		found := false
		for i, p := range errs {
			if !used[i] && p.Line == w.line && p.Key == w.key && strings.Contains(p.Msg, w.msg) {
				used[i], found = true, true
				break
			}
		}
		if !found {
			t.Errorf("missing problem line %d key %q msg containing %q", w.line, w.key, w.msg)
		}
	}
	for i, p := range errs {
		if p.File != "t.toml" {
			t.Errorf("problem %q has file %q, want t.toml", p.Error(), p.File)
		}
		if !used[i] {
			t.Errorf("unexpected problem: line %d key %q: %s", p.Line, p.Key, p.Msg)
		}
	}
}

// mustParse parses src and fails on any problem.
func mustParse(t *testing.T, src string) *conf.Config {
	t.Helper()
	cfg, err := conf.Parse("t.toml", []byte(src))
	if err != nil {
		t.Fatalf("config does not validate:\n%v", err)
	}
	return cfg
}

func TestProblemsAreLocated(t *testing.T) {
	for _, tc := range []struct {
		desc string
		src  string
		want []want
	}{
		{"unknown key at top level", `colour = "blue"
[frontend.f]
bind = ["127.0.0.1:0"]
default_backend = "b"
[[backend.b.server]]
address = "127.0.0.1:1"
`, []want{{1, "colour", "unknown key"}}},

		{"unknown section at top level is reported once, not per key", `[frontend.f]
bind = ["127.0.0.1:0"]
default_backend = "b"
[[backend.b.server]]
address = "127.0.0.1:1"

[globl]
maxconn = 10
hard_stop_after = "1s"
`, []want{{7, "globl", "unknown key"}}},

		{"unknown key in a frontend", `[frontend.f]
bind = ["127.0.0.1:0"]
default_backend = "b"
timeout_clinet = "5s"
[[backend.b.server]]
address = "127.0.0.1:1"
`, []want{{4, "frontend.f.timeout_clinet", "unknown key"}}},

		{"max_header_count out of range", `[frontend.f]
mode = "http"
bind = ["127.0.0.1:0"]
default_backend = "b"
max_header_count = 0
[[backend.b.server]]
address = "127.0.0.1:1"
`, []want{{5, "frontend.f.max_header_count", "between 1 and 10000"}}},

		{"unknown key in the second server", `[frontend.f]
bind = ["127.0.0.1:0"]
default_backend = "b"

[[backend.b.server]]
name = "one"
address = "127.0.0.1:1"
weight = 1

[[backend.b.server]]
name = "two"
address = "127.0.0.1:2"
wieght = 2
`, []want{{13, "backend.b.server.1.wieght", "unknown key"}}},

		{"the same unknown key in two servers is reported at each", `[frontend.f]
bind = ["127.0.0.1:0"]
default_backend = "b"
[[backend.b.server]]
address = "127.0.0.1:1"
wieght = 1
[[backend.b.server]]
address = "127.0.0.1:2"
[[backend.b.server]]
address = "127.0.0.1:3"
wieght = 3
`, []want{{6, "backend.b.server.0.wieght", "unknown key"}, {11, "backend.b.server.2.wieght", "unknown key"}}},

		{"unknown table inside a backend", `[frontend.f]
bind = ["127.0.0.1:0"]
default_backend = "b"
[[backend.b.server]]
address = "127.0.0.1:1"
[backend.b.helth]
check = "tcp"
`, []want{{6, "backend.b.helth", "unknown key"}}},

		{"several bad durations reported together", `[global]
hard_stop_after = "30"

[defaults]
timeout_connect = "5 s"

[frontend.f]
bind = ["127.0.0.1:0"]
default_backend = "b"
timeout_client = "fast"

[backend.b]
timeout_server = "-1s"

[backend.b.health]
interval = "2x"

[[backend.b.server]]
address = "127.0.0.1:1"
`, []want{
			{2, "global.hard_stop_after", `"30" is not a duration`},
			{5, "defaults.timeout_connect", `"5 s" is not a duration`},
			{10, "frontend.f.timeout_client", `"fast" is not a duration`},
			{13, "backend.b.timeout_server", "negative"},
			{16, "backend.b.health.interval", `"2x" is not a duration`},
		}},

		{"a duration written as a number", `[defaults]
timeout_connect = 5
`, []want{{2, "defaults.timeout_connect", "must be a string, not an integer"}}},

		{"a weight written as a string in the second server", `[frontend.f]
bind = ["127.0.0.1:0"]
default_backend = "b"
[[backend.b.server]]
address = "127.0.0.1:1"
[[backend.b.server]]
address = "127.0.0.1:2"
weight = "3"
`, []want{{8, "backend.b.server.1.weight", "must be an integer, not a string"}}},

		{"the same bind address in two frontends", `[frontend.web]
bind = ["127.0.0.1:8080"]
default_backend = "b"

[frontend.api]
bind = ["127.0.0.1:9090", "127.0.0.1:8080"]
default_backend = "b"

[[backend.b.server]]
address = "127.0.0.1:1"
`, []want{{6, "frontend.api.bind", "already bound by frontend.web.bind (line 2)"}}},

		{"a frontend binding the stats address", `[stats]
bind = "127.0.0.1:8404"
[frontend.f]
bind = ["127.0.0.1:8404"]
default_backend = "b"
[[backend.b.server]]
address = "127.0.0.1:1"
`, []want{{4, "frontend.f.bind", "already bound by stats.bind"}}},

		{"default_backend that does not exist", `[frontend.f]
bind = ["127.0.0.1:0"]
default_backend = "nope"
[[backend.b.server]]
address = "127.0.0.1:1"
`, []want{{3, "frontend.f.default_backend", `backend "nope" does not exist (defined: b)`}}},

		{"route to a backend that does not exist", `[frontend.f]
mode = "http"
bind = ["127.0.0.1:0"]
default_backend = "b"
[[frontend.f.route]]
host = "a.example"
backend = "b"
[[frontend.f.route]]
path_prefix = "/x/"
backend = "x"
[[backend.b.server]]
address = "127.0.0.1:1"
`, []want{{10, "frontend.f.route.1.backend", `backend "x" does not exist`}}},

		{"weights outside 0..256", `[frontend.f]
bind = ["127.0.0.1:0"]
default_backend = "b"
[[backend.b.server]]
address = "127.0.0.1:1"
weight = 0
[[backend.b.server]]
address = "127.0.0.1:2"
weight = 256
[[backend.b.server]]
address = "127.0.0.1:3"
weight = 257
[[backend.b.server]]
address = "127.0.0.1:4"
weight = -1
`, []want{
			{12, "backend.b.server.2.weight", "weight 257 is outside 0..256"},
			{15, "backend.b.server.3.weight", "weight -1 is outside 0..256"},
		}},

		{"frontends of different modes share a backend", `[frontend.plain]
mode = "tcp"
bind = ["127.0.0.1:0"]
default_backend = "b"

[frontend.web]
mode = "http"
bind = ["127.0.0.1:1"]
default_backend = "b"

[[backend.b.server]]
address = "127.0.0.1:1"
`, []want{{9, "frontend.web.default_backend", `backend b is mode "tcp" (set by frontend.plain.default_backend, line 4)`}}},

		{"backend whose mode differs from its frontend", `[frontend.f]
bind = ["127.0.0.1:0"]
default_backend = "b"

[backend.b]
mode = "http"

[[backend.b.server]]
address = "127.0.0.1:1"
`, []want{{3, "frontend.f.default_backend", `frontend f is mode "tcp" but backend b is mode "http" (set by backend.b.mode, line 6)`}}},

		{"backend without servers", `[frontend.f]
bind = ["127.0.0.1:0"]
default_backend = "b"

[backend.b]
balance = "leastconn"
`, []want{{5, "backend.b", "has no servers; add [[backend.b.server]]"}}},

		{"backend only named by its health table", `[frontend.f]
bind = ["127.0.0.1:0"]
default_backend = "b"

[backend.b.health]
check = "tcp"
`, []want{{5, "backend.b", "has no servers"}}},

		{"TOML syntax error: unterminated string", `[frontend.f]
bind = ["127.0.0.1:0"]
default_backend = "b
[[backend.b.server]]
address = "127.0.0.1:1"
`, []want{{3, "frontend.f.default_backend", "TOML syntax"}}},

		{"TOML syntax error: key defined twice", `[frontend.f]
bind = ["127.0.0.1:0"]
default_backend = "b"
[[backend.b.server]]
address = "127.0.0.1:1"
address = "127.0.0.1:2"
`, []want{{6, "backend.b.server.address", "already been defined"}}},

		{"duplicate server names", `[frontend.f]
bind = ["127.0.0.1:0"]
default_backend = "b"
[[backend.b.server]]
name = "app"
address = "127.0.0.1:1"
[[backend.b.server]]
name = "app"
address = "127.0.0.1:2"
`, []want{{8, "backend.b.server.1.name", `server name "app" is used twice in backend b`}}},

		{"sticky cookie on a tcp backend", `[frontend.f]
bind = ["127.0.0.1:0"]
default_backend = "b"
[backend.b]
sticky = "cookie"
[[backend.b.server]]
address = "127.0.0.1:1"
`, []want{{5, "backend.b.sticky", `use "source" for tcp`}}},

		// The locator: lines of keys the simple cases do not reach.
		{"key in an inline table", `[frontend.f]
bind = ["127.0.0.1:0"]
default_backend = "b"
[backend.b]
balance = "roundrobin"
health = { check = "tcp", interval = "2x", rise = 0 }
[[backend.b.server]]
address = "127.0.0.1:1"
`, []want{
			{6, "backend.b.health.interval", "not a duration"},
			{6, "backend.b.health.rise", "at least 1"},
		}},

		{"servers as a multi-line array of inline tables", `[frontend.f]
bind = ["127.0.0.1:0"]
default_backend = "b"
[backend.b]
server = [
  { name = "a", address = "127.0.0.1:1" },
  { name = "b", address = "127.0.0.1:2", weight = 999 },
  { name = "c", address = "127.0.0.1:3", wieght = 2 },
]
`, []want{
			{7, "backend.b.server.1.weight", "outside 0..256"},
			{8, "backend.b.server.2.wieght", "unknown key"},
		}},

		{"quoted keys and quoted table names", `["frontend"."f"]
bind = ["127.0.0.1:0"]
"default_backend" = "b"
'timeout_client' = "soon"
[backend."b"]
"sticky" = "cookie"
[[backend.'b'.server]]
address = "127.0.0.1:1"
`, []want{
			{4, "frontend.f.timeout_client", "not a duration"},
			{6, "backend.b.sticky", "needs an http backend"},
		}},

		{"health table after the server tables", `[frontend.f]
bind = ["127.0.0.1:0"]
default_backend = "b"
[backend.b]
balance = "leastconn"
[[backend.b.server]]
address = "127.0.0.1:1"
[[backend.b.server]]
address = "127.0.0.1:2"
[backend.b.health]
check = "tcp"
fall = 0
timeout = "1q"
`, []want{
			{12, "backend.b.health.fall", "at least 1"},
			{13, "backend.b.health.timeout", "not a duration"},
		}},

		{"dotted keys", `[frontend.f]
bind = ["127.0.0.1:0"]
default_backend = "b"
[backend.b]
health.check = "tcp"
health.rise = -1
[[backend.b.server]]
address = "127.0.0.1:1"
`, []want{{6, "backend.b.health.rise", "at least 1"}}},

		{"strings that look like tables or keys", `[stats]
admin_token_file = """
[frontend.f]
retries = 1
"""
[frontend.f]
bind = [
  "127.0.0.1:0", # a comment with = and [brackets]
]
default_backend = "b" # retries = 5
[[frontend.f.tls]]
cert = "a [b] = c"
key = 'x.key'
[[backend.b.server]]
address = "127.0.0.1:1"
weight = 300
`, []want{
			{2, "stats.admin_token_file", "cannot read the admin token"},
			{11, "frontend.f.tls", "needs mode = \"http\""},
			{12, "frontend.f.tls.0.cert", "cannot read the certificate"},
			{16, "backend.b.server.0.weight", "outside"},
		}},

		{"windows line endings", "[frontend.f]\r\nbind = [\"127.0.0.1:0\"]\r\ndefault_backend = \"b\"\r\n[[backend.b.server]]\r\naddress = \"127.0.0.1:1\"\r\nweight = 999\r\n",
			[]want{{6, "backend.b.server.0.weight", "outside"}}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			checkProblems(t, parseErrors(t, tc.src), tc.want)
		})
	}
}

func TestAllProblemsAtOnce(t *testing.T) {
	src := `[global]
maxconn = 0
vital_frontends = ["ghost"]

[defaults]
timeout_client = "1 minute"

[frontend.f]
bind = ["127.0.0.1:0", "nowhere"]
default_backend = "missing"
colour = "blue"

[frontend.g]
mode = "udp"
bind = ["127.0.0.1:0"]
default_backend = "empty"

[backend.empty]
balance = "fastest"

[backend.b]
sticky = "cookie"
send_proxy = "v3"

[[backend.b.server]]
address = "127.0.0.1"
weight = 1000
`
	errs := parseErrors(t, src)
	checkProblems(t, errs, []want{
		{2, "global.maxconn", "at least 1"},
		{3, "global.vital_frontends", `frontend "ghost" does not exist`},
		{6, "defaults.timeout_client", "not a duration"},
		{9, "frontend.f.bind", `"nowhere" is not an address`},
		{10, "frontend.f.default_backend", `backend "missing" does not exist`},
		{11, "frontend.f.colour", "unknown key"},
		{18, "backend.empty", "has no servers"},
		{19, "backend.empty.balance", `"fastest" is not one of`},
		{22, "backend.b.sticky", "needs an http backend"},
		{23, "backend.b.send_proxy", `"v3" is not one of`},
		{26, "backend.b.server.0.address", "is not host:port"},
		{27, "backend.b.server.0.weight", "outside"},
	})
	for i := 1; i < len(errs); i++ {
		if errs[i].Line < errs[i-1].Line {
			t.Errorf("problems not in line order: %d after %d", errs[i].Line, errs[i-1].Line)
		}
	}
	// One line per problem, each "file:line: key: message".
	text := errs.Error()
	if n := strings.Count(text, "\n") + 1; n != len(errs) {
		t.Errorf("Error() has %d lines for %d problems:\n%s", n, len(errs), text)
	}
	if !strings.Contains(text, "t.toml:27: backend.b.server.0.weight: weight 1000 is outside 0..256") {
		t.Errorf("Error() lacks the located weight problem:\n%s", text)
	}
}

func TestDefaults(t *testing.T) {
	t.Run("built-in defaults when nothing is set", func(t *testing.T) {
		cfg := mustParse(t, `[frontend.f]
bind = ["127.0.0.1:0"]
default_backend = "b"
[[backend.b.server]]
address = "127.0.0.1:1"
`)
		g := cfg.Global
		if g.MaxConn != 50000 || g.HardStopAfter != 30*time.Second {
			t.Errorf("global = %+v, want maxconn 50000, hard_stop_after 30s", g)
		}
		f, b := cfg.Frontend("f"), cfg.Backend("b")
		for _, c := range []struct {
			name      string
			got, want any
		}{
			{"frontend mode", f.Mode, conf.ModeTCP},
			{"frontend timeout_client", f.TimeoutClient, 50 * time.Second},
			{"frontend timeout_http_request", f.TimeoutHTTPRequest, 10 * time.Second},
			{"frontend maxconn", f.MaxConn, 0},
			{"frontend max_header_count", f.MaxHeaderCount, 100},
			{"backend mode", b.Mode, conf.ModeTCP},
			{"backend timeout_connect", b.TimeoutConnect, 5 * time.Second},
			{"backend timeout_server", b.TimeoutServer, 50 * time.Second},
			{"backend retries", b.Retries, 2},
			{"backend balance", b.Balance, conf.BalanceRoundRobin},
			{"backend health check", b.Health.Check, conf.CheckNone},
			{"server name", b.Servers[0].Name, "s1"},
			{"server weight", b.Servers[0].Weight, 1},
		} {
			if !reflect.DeepEqual(c.got, c.want) {
				t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
			}
		}
	})

	t.Run("[defaults] inherited and overridden per section", func(t *testing.T) {
		cfg := mustParse(t, `[global]
maxconn = 1000
hard_stop_after = "5s"

[defaults]
timeout_connect = "1s"
timeout_client = "2s"
timeout_server = "3s"
timeout_http_request = "4s"
retries = 5
maxconn = 100

[frontend.inherit]
bind = ["127.0.0.1:0"]
default_backend = "inherit"

[frontend.override]
bind = ["127.0.0.1:1"]
default_backend = "override"
timeout_client = "20s"
timeout_http_request = "40s"
maxconn = 7

[[backend.inherit.server]]
address = "127.0.0.1:1"

[backend.override]
timeout_connect = "10s"
timeout_server = "30s"
retries = 0

[[backend.override.server]]
address = "127.0.0.1:1"
`)
		if cfg.Global.MaxConn != 1000 || cfg.Global.HardStopAfter != 5*time.Second {
			t.Errorf("global = %+v", cfg.Global)
		}
		fi, fo := cfg.Frontend("inherit"), cfg.Frontend("override")
		bi, bo := cfg.Backend("inherit"), cfg.Backend("override")
		for _, c := range []struct {
			name      string
			got, want any
		}{
			{"inherited timeout_client", fi.TimeoutClient, 2 * time.Second},
			{"inherited timeout_http_request", fi.TimeoutHTTPRequest, 4 * time.Second},
			{"inherited maxconn", fi.MaxConn, 100},
			{"overridden timeout_client", fo.TimeoutClient, 20 * time.Second},
			{"overridden timeout_http_request", fo.TimeoutHTTPRequest, 40 * time.Second},
			{"overridden maxconn", fo.MaxConn, 7},
			{"inherited timeout_connect", bi.TimeoutConnect, time.Second},
			{"inherited timeout_server", bi.TimeoutServer, 3 * time.Second},
			{"inherited retries", bi.Retries, 5},
			{"overridden timeout_connect", bo.TimeoutConnect, 10 * time.Second},
			{"overridden timeout_server", bo.TimeoutServer, 30 * time.Second},
			{"overridden retries (to zero)", bo.Retries, 0},
		} {
			if !reflect.DeepEqual(c.got, c.want) {
				t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
			}
		}
		// Sorted by name whatever the file order.
		if cfg.Frontends[0].Name != "inherit" || cfg.Frontends[1].Name != "override" {
			t.Errorf("frontends not sorted by name: %s, %s", cfg.Frontends[0].Name, cfg.Frontends[1].Name)
		}
	})
}

func TestFrontendsSortedByName(t *testing.T) {
	cfg := mustParse(t, `[frontend.zeta]
bind = ["127.0.0.1:0"]
default_backend = "b"
[frontend.alpha]
bind = ["127.0.0.1:1"]
default_backend = "b"
[frontend.mid]
mode = "udp"
bind = ["127.0.0.1:1"]
default_backend = "u"
[[backend.b.server]]
address = "127.0.0.1:1"
[[backend.u.server]]
address = "127.0.0.1:1"
`)
	var names []string
	for _, f := range cfg.Frontends {
		names = append(names, f.Name)
	}
	if strings.Join(names, ",") != "alpha,mid,zeta" {
		t.Errorf("frontends = %v, want alpha,mid,zeta", names)
	}
	// TCP and UDP on the same address do not conflict.
	if cfg.Frontend("mid").Bind[0] != cfg.Frontend("alpha").Bind[0] {
		t.Errorf("udp and tcp frontends should share 127.0.0.1:1")
	}
}

func TestTemplateBinds(t *testing.T) {
	if _, err := net.InterfaceByName("lo"); err != nil {
		t.Skip("no loopback interface named lo on this host")
	}
	t.Run("GetInterfaceIP of lo", func(t *testing.T) {
		cfg := mustParse(t, `[stats]
bind = '{{ GetInterfaceIP "lo" }}:8404'
[frontend.f]
bind = ['{{ GetInterfaceIP "lo" }}:8080', '{{ GetAllInterfaces | include "name" "^lo$" | include "type" "IPv4" | join "address" " " }}:8081']
default_backend = "b"
[[backend.b.server]]
address = "127.0.0.1:1"
`)
		if got, want := cfg.Frontend("f").Bind, []string{"127.0.0.1:8080", "127.0.0.1:8081"}; !reflect.DeepEqual(got, want) {
			t.Errorf("bind = %v, want %v", got, want)
		}
		if cfg.Stats.Bind != "127.0.0.1:8404" {
			t.Errorf("stats bind = %q, want 127.0.0.1:8404", cfg.Stats.Bind)
		}
	})
	for _, tc := range []struct {
		desc string
		bind string
		msg  string
	}{
		{"interface that does not exist", `{{ GetInterfaceIP "nonexistent0" }}:80`, "yields no address on this host"},
		{"template yielding nothing at all", `{{ GetInterfaceIP "nonexistent0" }}`, "yields no address on this host"},
		{"malformed template", `{{ GetInterfaceIP "lo" :80`, "does not work"},
		{"unknown template function", `{{ GetInterfaceAddress "lo" }}:80`, "does not work"},
		{"template giving a bad port", `{{ GetInterfaceIP "lo" }}:99999`, "bad port"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			src := `[frontend.f]
bind = ['127.0.0.1:0',
  '` + tc.bind + `']
default_backend = "b"
[[backend.b.server]]
address = "127.0.0.1:1"
`
			checkProblems(t, parseErrors(t, src), []want{{2, "frontend.f.bind", tc.msg}})
		})
	}
}

// designExample is the example configuration of sluice's design notes, with an api
// backend (its dns section was already there) so that the route resolves.
const designExample = `[global]
maxconn = 50000                  # process-wide cap; accept pauses at the cap
hard_stop_after = "30s"          # longest drain of an old worker on reload or stop
control_socket = "/run/sluice/sluice.sock"
pid_file = "/run/sluice/sluice.pid"
vital_frontends = ["www"]         # what ` + "`sluice check --live`" + ` and /healthz require to have a server up

[defaults]                       # inherited by every frontend and backend
timeout_connect = "5s"
timeout_client = "50s"           # client-side inactivity
timeout_server = "50s"           # server-side inactivity
timeout_http_request = "10s"     # the whole request head must arrive within this
retries = 2                      # connect retries, on another server where one exists

[stats]
bind = "127.0.0.1:8404"          # HTML at /, CSV at /;csv, JSON at /api/stats, Prometheus at /metrics
admin_token_file = ""            # admin API (drain, maint, weight) needs this bearer token

[frontend.www]
mode = "http"                    # "tcp" | "udp" | "http"
bind = ["0.0.0.0:80"]
accept_proxy = false             # expect a PROXY v1/v2 header first
proxy_trusted = ["10.0.0.0/8"]   # peers allowed to send one; others are refused
freebind = false                 # allow binding an address this host does not hold yet (VIP)
maxconn = 10000
default_backend = "app"

[[frontend.www.tls]]             # TLS termination; several entries = SNI selection
cert = "/etc/sluice/www.pem"
key = "/etc/sluice/www.key"

[[frontend.www.route]]           # http only, first match wins
host = "api.example.com"
path_prefix = "/v1/"
backend = "api"

[backend.app]
balance = "roundrobin"           # "roundrobin" | "leastconn" | "iphash"
sticky = ""                      # "" | "cookie" (http) | "source" (any mode)
sticky_cookie = "SLUICE"
sticky_ttl = "30m"
send_proxy = ""                  # "" | "v1" | "v2"

[backend.app.health]
check = "http"                   # "tcp" | "http" | "dns" | "agent" | "none"
path = "/healthz"
expect = "200-399"
interval = "2s"
timeout = "1s"
rise = 2
fall = 3

[[backend.app.server]]
name = "app1"
address = "10.0.0.11:8080"
weight = 1
backup = false

[backend.api]
balance = "leastconn"

[backend.api.dns]                # servers discovered from DNS (miekg/dns) instead of listed
name = "_http._tcp.api.service.consul."   # SRV, or A/AAAA with ` + "`port`" + `
resolvers = ["127.0.0.1:8600"]
interval = "10s"
`

func TestDesignExample(t *testing.T) {
	// The example's certificate paths, made to exist: Parse reads them.
	cert, key := writeKeyPair(t, "www.example.com")
	src := strings.NewReplacer("/etc/sluice/www.pem", cert, "/etc/sluice/www.key", key).Replace(designExample)
	cfg := mustParse(t, src)
	if cfg.File != "t.toml" {
		t.Errorf("File = %q", cfg.File)
	}
	if !reflect.DeepEqual(cfg.Global, conf.Global{MaxConn: 50000, MaxConnSet: true, HardStopAfter: 30 * time.Second,
		ControlSocket: "/run/sluice/sluice.sock", PIDFile: "/run/sluice/sluice.pid", VitalFrontends: []string{"www"},
		GCHeapFloor: conf.DefaultGCHeapFloor,
		Logging:     conf.Logging{LogFormat: conf.LogText, LogTarget: conf.LogStderr, LogSyslogFacility: "daemon", LogSyslogTag: "sluice"}}) {
		t.Errorf("global = %+v", cfg.Global)
	}
	if cfg.Stats.Bind != "127.0.0.1:8404" {
		t.Errorf("stats bind = %q", cfg.Stats.Bind)
	}
	www := cfg.Frontend("www")
	if www == nil {
		t.Fatal("no frontend www")
	}
	if www.Mode != "http" || !reflect.DeepEqual(www.Bind, []string{"0.0.0.0:80"}) || www.MaxConn != 10000 ||
		www.DefaultBackend != "app" || www.TimeoutClient != 50*time.Second || www.TimeoutHTTPRequest != 10*time.Second {
		t.Errorf("www = %+v", www)
	}
	if !reflect.DeepEqual(www.ProxyTrusted, []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}) {
		t.Errorf("proxy_trusted = %v", www.ProxyTrusted)
	}
	if len(www.TLS) != 1 || www.TLS[0].Cert != cert || www.TLS[0].Key != key || www.TLS[0].Pair == nil {
		t.Errorf("tls = %+v", www.TLS)
	}
	if !reflect.DeepEqual(www.Routes, []conf.Route{{Host: "api.example.com", PathPrefix: "/v1/", Backend: "api"}}) {
		t.Errorf("routes = %+v", www.Routes)
	}
	app, api := cfg.Backend("app"), cfg.Backend("api")
	if app == nil || api == nil {
		t.Fatalf("backends = %v", cfg.Backends)
	}
	if app.Mode != "http" || api.Mode != "http" {
		t.Errorf("backend modes = %q, %q, want both http (from frontend www)", app.Mode, api.Mode)
	}
	if app.Balance != "roundrobin" || app.StickyCookie != "SLUICE" || app.StickyTTL != 30*time.Minute ||
		app.TimeoutConnect != 5*time.Second || app.TimeoutServer != 50*time.Second || app.Retries != 2 {
		t.Errorf("app = %+v", app)
	}
	if h := app.Health; h.Check != "http" || h.Path != "/healthz" || h.Expect != "200-399" || h.Interval != 2*time.Second ||
		h.Timeout != time.Second || h.Rise != 2 || h.Fall != 3 || h.Method != "GET" || h.IntervalDown != 2*time.Second ||
		h.InitState != "up" || !h.ExpectStatus.Has(200) || !h.ExpectStatus.Has(399) || h.ExpectStatus.Has(400) {
		t.Errorf("app health = %+v", app.Health)
	}
	if want := []conf.Server{{Name: "app1", Address: "10.0.0.11:8080", Weight: 1}}; !reflect.DeepEqual(app.Servers, want) {
		t.Errorf("app servers = %+v", app.Servers)
	}
	if api.Balance != "leastconn" || len(api.Servers) != 0 || api.DNS == nil {
		t.Fatalf("api = %+v", api)
	}
	if want := (conf.DNS{Name: "_http._tcp.api.service.consul.", Resolvers: []string{"127.0.0.1:8600"}, Interval: 10 * time.Second, Timeout: conf.DefaultDNSTimeout, MaxServers: conf.DefaultDNSMaxServers}); !reflect.DeepEqual(*api.DNS, want) {
		t.Errorf("api dns = %+v, want %+v", *api.DNS, want)
	}
}

func TestExamplesValidate(t *testing.T) {
	files, err := filepath.Glob("../examples/*.toml")
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, f := range files {
		if filepath.Base(f) == "tcp.toml" {
			found = true
		}
		t.Run(filepath.Base(f), func(t *testing.T) {
			cfg, err := conf.Load(f)
			if err != nil {
				t.Fatalf("%v", err)
			}
			if len(cfg.Frontends) == 0 || len(cfg.Backends) == 0 {
				t.Errorf("%d frontends, %d backends; an example should have both", len(cfg.Frontends), len(cfg.Backends))
			}
		})
	}
	if !found {
		t.Fatal("examples/tcp.toml is missing")
	}
	t.Run("tcp.toml contents", func(t *testing.T) {
		cfg, err := conf.Load("../examples/tcp.toml")
		if err != nil {
			t.Fatal(err)
		}
		f := cfg.Frontend("tcp_in")
		if f == nil || f.Mode != "tcp" || !reflect.DeepEqual(f.Bind, []string{"127.0.0.1:8080"}) {
			t.Fatalf("frontend = %+v", f)
		}
		b := cfg.Backend(f.DefaultBackend)
		if b == nil || len(b.Servers) != 2 || b.Servers[0].Address != "127.0.0.1:9001" || b.Servers[1].Address != "127.0.0.1:9002" {
			t.Fatalf("backend = %+v", b)
		}
		if b.Servers[0].Weight != 2 || b.Servers[1].Weight != 1 {
			t.Errorf("weights = %d, %d", b.Servers[0].Weight, b.Servers[1].Weight)
		}
	})
}

func TestLoadErrors(t *testing.T) {
	_, err := conf.Load(filepath.Join(t.TempDir(), "none.toml"))
	if err == nil || errors.As(err, &conf.Errors{}) {
		t.Fatalf("missing file: err = %v, want a plain I/O error", err)
	}
	if !strings.Contains(err.Error(), "no such file") {
		t.Errorf("missing file: %v", err)
	}
}

// An unset global.maxconn is the default and says so: it is fitted to the
// descriptor limit at start, a set one is not.
func TestMaxConnSet(t *testing.T) {
	const rest = "[frontend.f]\nbind = [\"127.0.0.1:1\"]\ndefault_backend = \"b\"\n[[backend.b.server]]\naddress = \"127.0.0.1:2\"\n"
	if g := mustParse(t, rest).Global; g.MaxConn != conf.DefaultMaxConn || g.MaxConnSet {
		t.Errorf("unset: %+v", g)
	}
	if g := mustParse(t, "[global]\nmaxconn = 7\n"+rest).Global; g.MaxConn != 7 || !g.MaxConnSet {
		t.Errorf("set: %+v", g)
	}
}

// A server address is refused at its line when its host is no IP address
// and no DNS name, or its port is not 1..65535: a typo there would
// otherwise be found only as connect errors (503s).
func TestServerAddressChecked(t *testing.T) {
	for _, tc := range []struct{ addr, want string }{
		{"not a host:80", "neither an IP address nor a DNS name"},
		{"app_1.internal-:80", "neither an IP address nor a DNS name"},
		{"a..b:80", "neither an IP address nor a DNS name"},
		{"127.0.0.1:0", "bad port"},
		{"127.0.0.1:65536", "bad port"},
		{"127.0.0.1", "is not host:port"},
	} {
		t.Run(tc.addr, func(t *testing.T) {
			src := "[frontend.f]\nbind = [\"127.0.0.1:0\"]\ndefault_backend = \"b\"\n[[backend.b.server]]\naddress = \"" + tc.addr + "\"\n"
			checkProblems(t, parseErrors(t, src), []want{{5, "backend.b.server.0.address", tc.want}})
		})
	}
	for _, ok := range []string{"10.0.0.11:8080", "[2001:db8::11]:8080", "[fe80::1%eth0]:80", "app1.internal:8080", "app_1.example.com.:443", "localhost:1"} {
		mustParse(t, "[frontend.f]\nbind = [\"127.0.0.1:0\"]\ndefault_backend = \"b\"\n[[backend.b.server]]\naddress = \""+ok+"\"\n")
	}
}
