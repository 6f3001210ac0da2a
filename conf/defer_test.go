package conf_test

import "testing"

// defer_accept defaults to on for every http frontend (plain, TLS, h2c,
// PROXY: the client speaks first) and off for tcp (a server may speak
// first); either can be set, and udp refuses it, even set to false.
func TestDeferAcceptDefaultsAndRefusal(t *testing.T) {
	cfg := mustParse(t, `[frontend.h]
mode = "http"
bind = ["127.0.0.1:1"]
default_backend = "b"

[frontend.hp]
mode = "http"
bind = ["127.0.0.1:2"]
accept_proxy = true
h2c = true
default_backend = "b"

[frontend.hoff]
mode = "http"
bind = ["127.0.0.1:3"]
defer_accept = false
default_backend = "b"

[frontend.t]
bind = ["127.0.0.1:4"]
default_backend = "tb"

[frontend.ton]
mode = "tcp"
bind = ["127.0.0.1:5"]
defer_accept = true
default_backend = "tb"

[[backend.b.server]]
address = "127.0.0.1:9"
[[backend.tb.server]]
address = "127.0.0.1:9"
`)
	for name, want := range map[string]bool{"h": true, "hp": true, "hoff": false, "t": false, "ton": true} {
		if got := cfg.Frontend(name).DeferAccept; got != want {
			t.Errorf("frontend %s: DeferAccept %v, want %v", name, got, want)
		}
	}
	for _, v := range []string{"true", "false"} {
		errs := parseErrors(t, `[frontend.u]
mode = "udp"
bind = ["127.0.0.1:53"]
defer_accept = `+v+`
default_backend = "b"

[[backend.b.server]]
address = "127.0.0.1:9"
`)
		checkProblems(t, errs, []want{{4, "frontend.u.defer_accept", "remove it"}})
	}
}
