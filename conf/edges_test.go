package conf_test

import "testing"

// TestRefusedEdgeValues: values the decoder takes that mean nothing useful
// (issue 15), each refused at its own file, line and key.
func TestRefusedEdgeValues(t *testing.T) {
	const tail = `[[backend.b.server]]
address = "127.0.0.1:1"
`
	for _, tc := range []struct {
		desc string
		src  string
		want []want
	}{
		{"empty bind entry", `[frontend.f]
bind = [""]
default_backend = "b"
` + tail, []want{{2, "frontend.f.bind", "entry 1 is empty"}}},

		{"blank bind entry beside a good one", `[frontend.f]
bind = ["127.0.0.1:0", "  "]
default_backend = "b"
` + tail, []want{{2, "frontend.f.bind", "entry 2 is empty"}}},

		{"empty server name", `[frontend.f]
bind = ["127.0.0.1:0"]
default_backend = "b"
[[backend.b.server]]
address = "127.0.0.1:1"
[[backend.b.server]]
name = ""
address = "127.0.0.1:2"
`, []want{{7, "backend.b.server.1.name", "empty"}}},

		{"server name with a space", `[frontend.f]
bind = ["127.0.0.1:0"]
default_backend = "b"
[[backend.b.server]]
name = "web 1"
address = "127.0.0.1:1"
`, []want{{5, "backend.b.server.0.name", "spaces"}}},

		{"duplicate server names", `[frontend.f]
bind = ["127.0.0.1:0"]
default_backend = "b"
[[backend.b.server]]
name = "web"
address = "127.0.0.1:1"
[[backend.b.server]]
name = "web"
address = "127.0.0.1:2"
`, []want{{8, "backend.b.server.1.name", "used twice"}}},

		{"rise and fall of 2^31", `[frontend.f]
bind = ["127.0.0.1:0"]
default_backend = "b"
[backend.b.health]
check = "tcp"
rise = 2147483648
fall = 2147483648
` + tail, []want{{6, "backend.b.health.rise", "at most 1000"}, {7, "backend.b.health.fall", "at most 1000"}}},

		{"empty durations", `[global]
hard_stop_after = ""
[defaults]
timeout_client = ""
[frontend.f]
bind = ["127.0.0.1:0"]
default_backend = "b"
timeout_http_request = ""
[backend.b]
timeout_connect = ""
[backend.b.health]
check = "tcp"
timeout = ""
interval_down = ""
[peers]
flush_interval = ""
` + tail, []want{
			{2, "global.hard_stop_after", "empty"},
			{4, "defaults.timeout_client", "empty"},
			{8, "frontend.f.timeout_http_request", "empty"},
			{10, "backend.b.timeout_connect", "empty"},
			{13, "backend.b.health.timeout", "empty"},
			{14, "backend.b.health.interval_down", "empty"},
			{16, "peers.flush_interval", "empty"},
		}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			checkProblems(t, parseErrors(t, tc.src), tc.want)
		})
	}
}

// TestEdgeValuesStillAccepted: the largest rise and fall, and durations
// left out, still validate.
func TestEdgeValuesStillAccepted(t *testing.T) {
	cfg := mustParse(t, `[frontend.f]
bind = ["127.0.0.1:0"]
default_backend = "b"
[backend.b.health]
check = "tcp"
rise = 1000
fall = 1000
[[backend.b.server]]
name = "web-1.a_b"
address = "127.0.0.1:1"
`)
	if h := cfg.Backends[0].Health; h.Rise != 1000 || h.Fall != 1000 {
		t.Fatalf("rise %d fall %d, want 1000 1000", h.Rise, h.Fall)
	}
}
