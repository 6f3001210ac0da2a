package conf_test

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"sluice/conf"
)

func pfx(s ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, x := range s {
		out = append(out, netip.MustParsePrefix(x))
	}
	return out
}

func boolp(b bool) *bool { return &b }

// TestPolicyParses: every key of the issue 21 contract lands in the
// frontend's Rules and RateLimit, with the defaults filled in.
func TestPolicyParses(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(secret, []byte("0123456789abcdef0123\n"), 0o600)
	cfg := mustParse(t, `[peers]
bind = "127.0.0.1:7070"
peers = ["127.0.0.2:7070"]
secret_file = "`+secret+`"

[frontend.web]
mode = "http"
bind = ["127.0.0.1:8080"]
default_backend = "app"

[[frontend.web.rule]]
src = ["192.0.2.0/24", "2001:db8::/32", "198.51.100.7"]
not_src = ["10.0.0.0/8", "::1"]
host = "old.example.com"
path_prefix = "/admin"
method = ["POST", "put"]
header = "x-debug"
tls = false
action = "deny"
status = 451

[[frontend.web.rule]]
header = "X-Canary:  1 "
action = "tarpit"

[[frontend.web.rule]]
tls = false
action = "redirect"
scheme = "https"
port = 8443
code = 301

[[frontend.web.rule]]
host = "*.old.example.com"
action = "redirect"
location = "https://example.com/new"

[[frontend.web.rule]]
action = "set_header"
name = "X-Request-Id"
value = "{request_id}"

[[frontend.web.rule]]
action = "add_header"
name = "X-Env"
value = "prod {frontend} {client_ip}:{client_port} {tls_sni}"
response = true

[[frontend.web.rule]]
path_prefix = "/"
action = "del_header"
name = "Server"
response = true

[[frontend.web.rule]]
src = ["127.0.0.1"]
action = "allow"

[[frontend.web.rule]]
action = "tarpit"
tarpit = "2s"
status = 429

[frontend.web.rate_limit]
requests = 100
period = "10s"
connections = 20
connection_rate = 50
action = "tarpit"
tarpit = "3s"
shared = true
table_size = 5000

[frontend.db]
bind = ["127.0.0.1:5432"]
default_backend = "db"
rule = [
  { not_src = ["10.0.0.0/8"], action = "deny" },
  { src = ["10.9.0.0/16"], tls = true, action = "tarpit" },
]
[frontend.db.rate_limit]
connections = 5

[backend.app]
[[backend.app.server]]
address = "127.0.0.1:9001"
[backend.db]
[[backend.db.server]]
address = "127.0.0.1:9002"
`)
	web := cfg.Frontend("web")
	wantRules := []conf.Rule{
		{Line: 11, Src: pfx("192.0.2.0/24", "2001:db8::/32", "198.51.100.7/32"), NotSrc: pfx("10.0.0.0/8", "::1/128"),
			Host: "old.example.com", PathPrefix: "/admin", Method: []string{"POST", "PUT"}, Header: "X-Debug",
			TLS: boolp(false), Action: conf.ActionDeny, Status: 451},
		{Line: 22, Header: "X-Canary", HeaderVal: "1", HasHeaderVal: true, Action: conf.ActionTarpit, Status: 403, Tarpit: conf.DefaultTarpit},
		{Line: 26, TLS: boolp(false), Action: conf.ActionRedirect, Scheme: "https", Port: 8443, Code: 301},
		{Line: 33, Host: "*.old.example.com", Action: conf.ActionRedirect, Location: "https://example.com/new", Code: 302},
		{Line: 38, Action: conf.ActionSetHeader, Name: "X-Request-Id", Value: "{request_id}"},
		{Line: 43, Action: conf.ActionAddHeader, Name: "X-Env", Value: "prod {frontend} {client_ip}:{client_port} {tls_sni}", Response: true},
		{Line: 49, PathPrefix: "/", Action: conf.ActionDelHeader, Name: "Server", Response: true},
		{Line: 55, Src: pfx("127.0.0.1/32"), Action: conf.ActionAllow},
		{Line: 59, Action: conf.ActionTarpit, Tarpit: 2 * time.Second, Status: 429},
	}
	if len(web.Rules) != len(wantRules) {
		t.Fatalf("web has %d rules, want %d: %+v", len(web.Rules), len(wantRules), web.Rules)
	}
	for i := range wantRules {
		if !reflect.DeepEqual(web.Rules[i], wantRules[i]) {
			t.Errorf("rule %d =\n %+v\nwant\n %+v", i, web.Rules[i], wantRules[i])
		}
	}
	wantRL := conf.RateLimit{Requests: 100, Period: 10 * time.Second, Connections: 20, ConnectionRate: 50,
		Action: conf.LimitTarpit, Tarpit: 3 * time.Second, Shared: true, TableSize: 5000}
	if web.RateLimit == nil || *web.RateLimit != wantRL {
		t.Errorf("web rate_limit = %+v, want %+v", web.RateLimit, wantRL)
	}

	db := cfg.Frontend("db")
	wantDB := []conf.Rule{
		{Line: 78, NotSrc: pfx("10.0.0.0/8"), Action: conf.ActionDeny, Status: 403},
		{Line: 79, Src: pfx("10.9.0.0/16"), TLS: boolp(true), Action: conf.ActionTarpit, Status: 403, Tarpit: conf.DefaultTarpit},
	}
	if !reflect.DeepEqual(db.Rules, wantDB) {
		t.Errorf("db rules =\n %+v\nwant\n %+v", db.Rules, wantDB)
	}
	wantDBRL := conf.RateLimit{Connections: 5, Period: conf.DefaultRateLimitPeriod, Action: conf.LimitDeny, TableSize: conf.DefaultRateTableSize}
	if db.RateLimit == nil || *db.RateLimit != wantDBRL {
		t.Errorf("db rate_limit = %+v, want %+v", db.RateLimit, wantDBRL)
	}
	if app := cfg.Frontend("web"); app.Rules == nil || cfg.Frontend("db").RateLimit.Shared {
		t.Error("rules or shared crossed frontends")
	}
}

// TestPolicyWithoutKeys: a frontend without the keys has no rules and no
// rate limit (package policy then compiles nothing).
func TestPolicyWithoutKeys(t *testing.T) {
	f := mustParse(t, policyCase("http", "")).Frontend("web")
	if f.Rules != nil || f.RateLimit != nil {
		t.Fatalf("rules %+v, rate limit %+v", f.Rules, f.RateLimit)
	}
}

// The frontends the refusal cases add their keys to: line 1 is the
// frontend's table, the case's text starts on line 6.
const (
	policyHTTP = `[frontend.web]
mode = "http"
bind = ["127.0.0.1:8080"]
default_backend = "app"
# the case's keys follow
`
	policyBackend = `
[[backend.app.server]]
address = "127.0.0.1:9001"
`
)

func policyCase(mode, keys string) string {
	return strings.Replace(policyHTTP, `mode = "http"`, `mode = "`+mode+`"`, 1) + keys + policyBackend
}

// TestPolicyRefusals: each mistake is reported at its line and key with
// what to write instead.
func TestPolicyRefusals(t *testing.T) {
	many := ""
	for i := 0; i < conf.MaxRules+1; i++ {
		many += "[[frontend.web.rule]]\naction = \"allow\"\n"
	}
	for _, tc := range []struct {
		desc, mode, keys string
		want             []want
	}{
		{"bad cidr", "http", `[[frontend.web.rule]]
src = ["192.0.2.0/33", "10.0.0.1"]
not_src = ["nowhere"]
action = "deny"
`, []want{{7, "frontend.web.rule.0.src", `"192.0.2.0/33" is not an address or CIDR prefix; write one like`},
			{8, "frontend.web.rule.0.not_src", `"nowhere" is not an address or CIDR prefix`}}},
		{"empty src", "http", `[[frontend.web.rule]]
src = []
action = "deny"
`, []want{{7, "frontend.web.rule.0.src", "is an empty list"}}},
		{"unknown action", "http", `[[frontend.web.rule]]
action = "drop"
`, []want{{7, "frontend.web.rule.0.action", `"drop" is not one of "deny", "allow", "redirect", "tarpit", "set_header", "add_header", "del_header"`}}},
		{"no action", "http", `[[frontend.web.rule]]
src = ["10.0.0.0/8"]
`, []want{{6, "frontend.web.rule.0.action", "a rule needs an action"}}},
		{"redirect without target", "http", `[[frontend.web.rule]]
action = "redirect"
`, []want{{7, "frontend.web.rule.0.action", "needs location"}}},
		{"redirect with both", "http", `[[frontend.web.rule]]
action = "redirect"
location = "https://example.com/"
scheme = "https"
`, []want{{9, "frontend.web.rule.0.scheme", "location or scheme, not both"}}},
		{"relative location", "http", `[[frontend.web.rule]]
action = "redirect"
location = "/new"
`, []want{{8, "frontend.web.rule.0.location", `"/new" is not an absolute URL; write it with scheme and host`}}},
		{"location with a line break", "http", `[[frontend.web.rule]]
action = "redirect"
location = "https://example.com/\r\nSet-Cookie: a=b"
`, []want{{8, "frontend.web.rule.0.location", "control characters"}}},
		{"bad scheme", "http", `[[frontend.web.rule]]
action = "redirect"
scheme = "ftp"
`, []want{{8, "frontend.web.rule.0.scheme", `"ftp" is not "http" or "https"`}}},
		{"port with location", "http", `[[frontend.web.rule]]
action = "redirect"
location = "https://example.com/"
port = 443
`, []want{{9, "frontend.web.rule.0.port", "goes with scheme"}}},
		{"bad port", "http", `[[frontend.web.rule]]
action = "redirect"
scheme = "https"
port = 70000
`, []want{{9, "frontend.web.rule.0.port", "70000 is not a port"}}},
		{"bad code", "http", `[[frontend.web.rule]]
action = "redirect"
scheme = "https"
code = 200
`, []want{{9, "frontend.web.rule.0.code", "200 is not a redirect code; use 301, 302, 303, 307 or 308"}}},
		{"bad status", "http", `[[frontend.web.rule]]
action = "deny"
status = 302
`, []want{{8, "frontend.web.rule.0.status", "302 is not an error status; use 400..599"}}},
		{"bad tarpit status", "http", `[[frontend.web.rule]]
action = "tarpit"
status = 600
`, []want{{8, "frontend.web.rule.0.status", "600 is not an error status"}}},
		{"tarpit zero and long", "http", `[[frontend.web.rule]]
action = "tarpit"
tarpit = "0s"
[[frontend.web.rule]]
action = "tarpit"
tarpit = "2h"
`, []want{{8, "frontend.web.rule.0.tarpit", "is 0"}, {11, "frontend.web.rule.1.tarpit", "longer than 1m0s"}}},
		{"keys of another action", "http", `[[frontend.web.rule]]
action = "deny"
location = "https://example.com/"
name = "X-A"
tarpit = "1s"
[[frontend.web.rule]]
action = "del_header"
name = "X-A"
value = "b"
`, []want{{8, "frontend.web.rule.0.location", `belongs to action = "redirect", not "deny"`},
			{9, "frontend.web.rule.0.name", `belongs to action = "set_header" or "add_header" or "del_header"`},
			{10, "frontend.web.rule.0.tarpit", `belongs to action = "tarpit"`},
			{14, "frontend.web.rule.1.value", `belongs to action = "set_header" or "add_header", not "del_header"`}}},
		{"header action without name or value", "http", `[[frontend.web.rule]]
action = "set_header"
[[frontend.web.rule]]
action = "add_header"
name = "X-A"
`, []want{{6, "frontend.web.rule.0.name", "needs name"}, {6, "frontend.web.rule.0.value", "needs value"},
			{8, "frontend.web.rule.1.value", "needs value"}}},
		{"bad header names", "http", `[[frontend.web.rule]]
action = "del_header"
name = "X A"
[[frontend.web.rule]]
action = "set_header"
name = "content-length"
value = "0"
[[frontend.web.rule]]
action = "set_header"
name = "X-Forwarded-For"
value = "1.2.3.4"
[[frontend.web.rule]]
action = "del_header"
name = "Host"
`, []want{{8, "frontend.web.rule.0.name", `"X A" is not a header name`},
			{11, "frontend.web.rule.1.name", "Content-Length is written by sluice itself"},
			{15, "frontend.web.rule.2.name", "X-Forwarded-For is written by sluice itself"},
			{19, "frontend.web.rule.3.name", "Host is written by sluice itself"}}},
		{"bad values", "http", `[[frontend.web.rule]]
action = "set_header"
name = "X-A"
value = "a\r\nX-Evil: 1"
[[frontend.web.rule]]
action = "add_header"
name = "X-A"
value = "{client_ip} {host}"
[[frontend.web.rule]]
action = "add_header"
name = "X-A"
value = "{client_ip"
[[frontend.web.rule]]
action = "add_header"
name = "X-A"
value = "a\u0000b"
`, []want{{9, "frontend.web.rule.0.value", "CR, LF, NUL"},
			{13, "frontend.web.rule.1.value", "uses {host}, which is not a variable; the variables are {client_ip} {client_port} {frontend} {tls_sni} {request_id}"},
			{17, "frontend.web.rule.2.value", `without its "}"`},
			{21, "frontend.web.rule.3.value", "CR, LF, NUL"}}},
		{"bad conditions", "http", `[[frontend.web.rule]]
host = "example.com:80"
path_prefix = "admin"
method = ["GET POST"]
header = "X Debug: 1"
action = "deny"
[[frontend.web.rule]]
host = "a.*.example.com"
method = []
header = "X-A: a\u0000"
action = "deny"
`, []want{{7, "frontend.web.rule.0.host", "has a port"},
			{8, "frontend.web.rule.0.path_prefix", `does not start with "/"`},
			{9, "frontend.web.rule.0.method", `"GET POST" is not a method name`},
			{10, "frontend.web.rule.0.header", `"X Debug" is not a header name`},
			{13, "frontend.web.rule.1.host", `"*" elsewhere`},
			{14, "frontend.web.rule.1.method", "is empty"},
			{15, "frontend.web.rule.1.header", "control character"}}},
		{"tcp mode", "tcp", `[[frontend.web.rule]]
host = "example.com"
path_prefix = "/a"
method = ["GET"]
header = "X-A"
action = "deny"
status = 403
[[frontend.web.rule]]
action = "redirect"
scheme = "https"
[[frontend.web.rule]]
action = "set_header"
name = "X-A"
value = "b"
[[frontend.web.rule]]
src = ["10.0.0.0/8"]
tls = true
action = "tarpit"
`, []want{{7, "frontend.web.rule.0.host", `needs mode = "http"`},
			{8, "frontend.web.rule.0.path_prefix", `needs mode = "http"`},
			{9, "frontend.web.rule.0.method", `needs mode = "http"`},
			{10, "frontend.web.rule.0.header", `needs mode = "http"`},
			{12, "frontend.web.rule.0.status", "closes a denied connection"},
			{14, "frontend.web.rule.1.action", `"redirect" needs mode = "http"`},
			{17, "frontend.web.rule.2.action", `"set_header" needs mode = "http"`}}},
		{"udp mode", "udp", `[[frontend.web.rule]]
action = "deny"
[frontend.web.rate_limit]
connections = 1
`, []want{{6, "frontend.web.rule", "a udp frontend takes no rules"},
			{8, "frontend.web.rate_limit", "a udp frontend takes no rate_limit"}}},
		{"too many rules", "http", many, []want{{6 + 2*conf.MaxRules, fmt.Sprintf("frontend.web.rule.%d", conf.MaxRules), "at most 64 rules"}}},
		{"unknown rule key", "http", `[[frontend.web.rule]]
action = "deny"
stauts = 403
`, []want{{8, "frontend.web.rule.0.stauts", "did you mean status?"}}},
		{"wrong type", "http", `[[frontend.web.rule]]
action = "deny"
status = "403"
`, []want{{8, "frontend.web.rule.0.status", "must be an integer"}}},
		{"rate limit nothing", "http", `[frontend.web.rate_limit]
period = "1s"
`, []want{{6, "frontend.web.rate_limit", "limits nothing"}}},
		{"rate limit bounds", "http", `[frontend.web.rate_limit]
requests = -1
connections = 20000000
connection_rate = 5
period = "2h"
table_size = 0
action = "block"
`, []want{{7, "frontend.web.rate_limit.requests", "must not be negative"},
			{8, "frontend.web.rate_limit.connections", "must be at most 10000000"},
			{10, "frontend.web.rate_limit.period", "longer than 1h0m0s"},
			{11, "frontend.web.rate_limit.table_size", "must be at least 1"},
			{12, "frontend.web.rate_limit.action", `"block" is not one of "deny", "tarpit"`}}},
		{"rate limit period zero", "http", `[frontend.web.rate_limit]
requests = 10
period = "0s"
`, []want{{8, "frontend.web.rate_limit.period", "is 0"}}},
		{"rate limit tarpit with deny", "http", `[frontend.web.rate_limit]
requests = 10
tarpit = "1s"
`, []want{{8, "frontend.web.rate_limit.tarpit", `belongs to action = "tarpit"`}}},
		{"rate limit requests in tcp", "tcp", `[frontend.web.rate_limit]
requests = 10
connections = 2
`, []want{{7, "frontend.web.rate_limit.requests", `needs mode = "http"`}}},
		{"shared without peers", "http", `[frontend.web.rate_limit]
requests = 10
shared = true
`, []want{{8, "frontend.web.rate_limit.shared", "add [peers]"}}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			checkProblems(t, parseErrors(t, policyCase(tc.mode, tc.keys)), tc.want)
		})
	}
}

// TestPolicyDiff: a reload's diff names added, removed and reordered rules
// and the changed keys of the rate limit.
func TestPolicyDiff(t *testing.T) {
	base := `[[frontend.web.rule]]
src = ["10.0.0.0/8"]
action = "deny"
[[frontend.web.rule]]
action = "redirect"
scheme = "https"
[frontend.web.rate_limit]
requests = 10
`
	old := mustParse(t, policyCase("http", base))
	same := mustParse(t, policyCase("http", "\n\n"+base))
	if d := conf.Diff(old, same); len(d) != 0 {
		t.Errorf("the same rules on other lines: diff %v, want none", d)
	}
	reordered := mustParse(t, policyCase("http", `[[frontend.web.rule]]
action = "redirect"
scheme = "https"
[[frontend.web.rule]]
src = ["10.0.0.0/8"]
action = "deny"
status = 404
[frontend.web.rate_limit]
requests = 20
`))
	got := map[string]bool{}
	for _, c := range conf.Diff(old, reordered) {
		got[c.String()] = true
	}
	for _, w := range []string{
		`- frontend web: rule src [10.0.0.0/8] -> deny 403`,
		`+ frontend web: rule src [10.0.0.0/8] -> deny 404`,
		`~ frontend web: rate_limit.requests 10 -> 20`,
	} {
		if !got[w] {
			t.Errorf("diff lacks %q; got %v", w, got)
		}
	}
	swapped := mustParse(t, policyCase("http", `[[frontend.web.rule]]
action = "redirect"
scheme = "https"
[[frontend.web.rule]]
src = ["10.0.0.0/8"]
action = "deny"
[frontend.web.rate_limit]
requests = 10
`))
	d := conf.Diff(old, swapped)
	if len(d) != 1 || !strings.HasPrefix(d[0].String(), "~ frontend web: rule order") {
		t.Errorf("swapped rules: diff %v, want one rule order change", d)
	}
	none := mustParse(t, policyCase("http", ""))
	got = map[string]bool{}
	for _, c := range conf.Diff(old, none) {
		got[c.String()] = true
	}
	if !got["- frontend web: rate_limit"] {
		t.Errorf("rate limit removed: diff %v", got)
	}
}

// TestEdgeExample: examples/edge.toml shows what issue 21 asks of it: an
// HTTPS redirect by scheme, a header set, an admin path limited to a
// network and a rate limit.
func TestEdgeExample(t *testing.T) {
	cfg, err := conf.Load("../examples/edge.toml")
	if err != nil {
		t.Fatal(err)
	}
	var redirect, setHeader, admin bool
	for _, f := range cfg.Frontends {
		for _, r := range f.Rules {
			redirect = redirect || r.Action == conf.ActionRedirect && r.Scheme == "https"
			setHeader = setHeader || r.Action == conf.ActionSetHeader && r.Name != ""
			admin = admin || r.Action == conf.ActionDeny && r.PathPrefix == "/admin" && len(r.NotSrc) > 0
		}
	}
	https := cfg.Frontend("https")
	if !redirect || !setHeader || !admin || https == nil || https.RateLimit == nil || https.RateLimit.Requests == 0 {
		t.Errorf("edge.toml: redirect %v, set_header %v, admin deny %v, rate limit %+v", redirect, setHeader, admin, https)
	}
}
