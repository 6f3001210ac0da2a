package conf_test

import (
	"strings"
	"testing"

	"sluice/conf"
)

// TestEveryProblemAtOnce: values of the wrong type no longer stop the
// decoder at the first; each is reported with line and key, next to the
// other problems of the file, and a misspelt key gets the nearest valid
// key of its section.
func TestEveryProblemAtOnce(t *testing.T) {
	src := `[global]
maxconn = "lots"

[defaults]
timout_connect = "5s"

[frontend.web]
bind = "x"
default_backend = "app"
maxconn = 1.5

[backend.app]
balance = 3
[backend.app.health]
intervall = "2s"
[[backend.app.server]]
address = "127.0.0.1:8080"
weight = "3"
[[backend.app.server]]
address = "127.0.0.1:8081"
weight = 999
[backend.app.dns]
name = "_x._tcp.example."
resolvers = ["127.0.0.1:53", 53]
`
	_, err := conf.Parse("t.toml", []byte(src))
	errs, ok := err.(conf.Errors)
	if !ok {
		t.Fatalf("err = %v", err)
	}
	want := []struct {
		line      int
		key, text string
	}{
		{2, "global.maxconn", "must be an integer, not a string"},
		{5, "defaults.timout_connect", "did you mean timeout_connect?"},
		{8, "frontend.web.bind", `must be an array, not a string (a list of one: ["x"])`},
		{10, "frontend.web.maxconn", "must be an integer, not a number"},
		{13, "backend.app.balance", "must be a string, not an integer"},
		{15, "backend.app.health.intervall", "did you mean interval?"},
		{18, "backend.app.server.0.weight", "must be an integer, not a string"},
		{21, "backend.app.server.1.weight", "outside 0..256"},
		{24, "backend.app.dns.resolvers", "entry 2 must be a string, not an integer"},
	}
	if len(errs) != len(want) {
		t.Errorf("%d problems, want %d:\n%v", len(errs), len(want), err)
	}
	for _, w := range want {
		found := false
		for _, p := range errs {
			found = found || (p.Line == w.line && p.Key == w.key && strings.Contains(p.Msg, w.text))
		}
		if !found {
			t.Errorf("no problem at line %d %s %q in:\n%v", w.line, w.key, w.text, err)
		}
	}
}

// TestUnusedBackendWarns: a backend no frontend names is a warning.
func TestUnusedBackendWarns(t *testing.T) {
	cfg, err := conf.Parse("t.toml", []byte(`[frontend.f]
bind = ["127.0.0.1:0"]
default_backend = "a"
[[backend.a.server]]
address = "127.0.0.1:1"
[[backend.spare.server]]
address = "127.0.0.1:2"
`))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Warnings) != 1 || cfg.Warnings[0].Key != "backend.spare" || cfg.Warnings[0].Line != 6 ||
		!strings.Contains(cfg.Warnings[0].Msg, "not used by any frontend") {
		t.Fatalf("warnings = %v", cfg.Warnings)
	}
}

// TestKeysAreLowerCase: the TOML decoder matches keys regardless of case,
// so "Mode" worked as mode; each key has one spelling (HAProxy refuses
// "Mode" too), and a key or section written otherwise is refused at its
// line, naming the spelling to use. Names the operator chooses (a
// frontend's, a backend's) keep their case.
func TestKeysAreLowerCase(t *testing.T) {
	src := `[frontend.Web]
Mode = "http"
bind = ["127.0.0.1:8080"]
default_backend = "App"

[backend.App]
[[backend.App.Server]]
address = "127.0.0.1:8081"
[[backend.App.server]]
address = "127.0.0.1:8082"
[Stats]
bind = "127.0.0.1:8404"
`
	_, err := conf.Parse("t.toml", []byte(src))
	errs, ok := err.(conf.Errors)
	if !ok {
		t.Fatalf("err = %v", err)
	}
	want := map[string]int{ // key: line
		"frontend.Web.Mode":  2,
		"backend.App.Server": 7,
		"Stats":              11,
	}
	for _, p := range errs {
		line, ok := want[p.Key]
		if !ok {
			continue
		}
		if p.Line != line || !strings.Contains(p.Msg, "lower case") {
			t.Errorf("%s: line %d %q, want line %d and the lower-case spelling", p.Key, p.Line, p.Msg, line)
		}
		delete(want, p.Key)
	}
	for k := range want {
		t.Errorf("%s accepted, want it refused:\n%v", k, err)
	}
	// The same file in lower case, names kept, is valid.
	fixed := strings.NewReplacer("Mode", "mode", "Server", "server", "[Stats]", "[stats]").Replace(src)
	if _, err := conf.Parse("t.toml", []byte(fixed)); err != nil {
		t.Fatalf("lower-case keys with capitalised names: %v", err)
	}
}
