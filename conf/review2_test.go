package conf_test

import "testing"

// Review of issue 15: numbers the decoder takes that no operator means,
// each a way to hurt the running balancer, accepted by `sluice check`.
//   - retries = 1000000000: a client whose servers refuse makes the worker
//     dial them in a tight loop (a core at 98%, ~30k connects/s) for hours,
//     on after the client has gone (HAProxy waits 1s between retries).
//   - global.maxconn = 9223372036854775807: overflows the descriptor budget
//     (see internal/fdlimit), so no warning and UDP gets the whole limit.
func TestRefusedHugeNumbers(t *testing.T) {
	for _, tc := range []struct {
		desc string
		src  string
		want []want
	}{
		{"retries of a billion", `[defaults]
retries = 1000000000
[frontend.f]
bind = ["127.0.0.1:0"]
default_backend = "b"
[[backend.b.server]]
address = "127.0.0.1:1"
`, []want{{2, "defaults.retries", ""}}},
		{"backend retries of a billion", `[frontend.f]
bind = ["127.0.0.1:0"]
default_backend = "b"
[backend.b]
retries = 1000000000
[[backend.b.server]]
address = "127.0.0.1:1"
`, []want{{5, "backend.b.retries", ""}}},
		{"global.maxconn of 2^63-1", `[global]
maxconn = 9223372036854775807
[frontend.f]
bind = ["127.0.0.1:0"]
default_backend = "b"
[[backend.b.server]]
address = "127.0.0.1:1"
`, []want{{2, "global.maxconn", "at most 10000000"}}},
		{"retries just past the bound, counts past MaxCount", `[defaults]
retries = 101
[stats]
maxconn = 0
[frontend.f]
bind = ["127.0.0.1:0"]
maxconn = 10000001
default_backend = "b"
[[backend.b.server]]
address = "127.0.0.1:1"
maxconn = 9223372036854775807
`, []want{{2, "defaults.retries", "at most 100"}, {4, "stats.maxconn", "at least 1"}, {7, "frontend.f.maxconn", "at most"}, {11, "backend.b.server.0.maxconn", "at most"}}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			checkProblems(t, parseErrors(t, tc.src), tc.want)
		})
	}
}
