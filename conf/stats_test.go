package conf_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"sluice/conf"
)

const statsTail = `
[frontend.f]
bind = ["127.0.0.1:0"]
default_backend = "b"
[[backend.b.server]]
address = "127.0.0.1:1"
`

func tokenFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "admin.token")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestStatsSection(t *testing.T) {
	long := tokenFile(t, "0123456789abcdef-long-enough\n")
	short := tokenFile(t, "short\n")
	for _, tc := range []struct {
		desc, src string
		bind      string // want, when it validates
		token     string
	}{
		{"no [stats] table: no listener", statsTail, "", ""},
		{"[stats] without bind listens on loopback", "[stats]\n" + statsTail, conf.DefaultStatsBind, ""},
		{"a token file alone implies the default bind", fmt.Sprintf("[stats]\nadmin_token_file = %q\n", long) + statsTail, conf.DefaultStatsBind, "0123456789abcdef-long-enough"},
		{"read-only on all interfaces is allowed", "[stats]\nbind = \"0.0.0.0:8404\"\n" + statsTail, "0.0.0.0:8404", ""},
		{"a short token on loopback is allowed", fmt.Sprintf("[stats]\nbind = \"127.0.0.1:9404\"\nadmin_token_file = %q\n", short) + statsTail, "127.0.0.1:9404", "short"},
		{"a long token on all interfaces is allowed", fmt.Sprintf("[stats]\nbind = \"0.0.0.0:8404\"\nadmin_token_file = %q\n", long) + statsTail, "0.0.0.0:8404", "0123456789abcdef-long-enough"},
		{"a template bind", "[stats]\nbind = '{{ GetInterfaceIP \"lo\" }}:8405'\n" + statsTail, "127.0.0.1:8405", ""},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			cfg := mustParse(t, tc.src)
			if cfg.Stats.Bind != tc.bind || cfg.Stats.AdminToken != tc.token {
				t.Errorf("bind %q token %q, want %q %q", cfg.Stats.Bind, cfg.Stats.AdminToken, tc.bind, tc.token)
			}
		})
	}
}

func TestStatsProblems(t *testing.T) {
	short := tokenFile(t, "short\n")
	empty := tokenFile(t, "\n")
	words := tokenFile(t, "two words\n")
	for _, tc := range []struct {
		desc, src string
		want      []want
	}{
		{"a short token on a non-loopback bind", fmt.Sprintf("[stats]\nbind = \"0.0.0.0:8404\"\nadmin_token_file = %q\n", short) + statsTail,
			[]want{{3, "stats.admin_token_file", "reachable from other hosts, so the admin token must be at least 16 characters"}}},
		{"a short token with a wildcard host", fmt.Sprintf("[stats]\nbind = \":8404\"\nadmin_token_file = %q\n", short) + statsTail,
			[]want{{3, "stats.admin_token_file", "at least 16 characters"}}},
		{"an empty token file", fmt.Sprintf("[stats]\nadmin_token_file = %q\n", empty) + statsTail,
			[]want{{2, "stats.admin_token_file", "is empty"}}},
		{"a token with spaces", fmt.Sprintf("[stats]\nadmin_token_file = %q\n", words) + statsTail,
			[]want{{2, "stats.admin_token_file", "more than one word"}}},
		{"a missing token file", "[stats]\nadmin_token_file = \"/nonexistent/token\"\n" + statsTail,
			[]want{{2, "stats.admin_token_file", "cannot read the admin token"}}},
		{"a bind that is not an address", "[stats]\nbind = \"localhost:8404\"\n" + statsTail,
			[]want{{2, "stats.bind", "not an IP address"}}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			checkProblems(t, parseErrors(t, tc.src), tc.want)
		})
	}
}

func TestIsLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:8404": true, "[::1]:8404": true, "127.0.0.2:1": true,
		"0.0.0.0:8404": false, ":8404": false, "[::]:8404": false, "10.1.2.3:8404": false, "bogus": false,
	} {
		if got := conf.IsLoopback(addr); got != want {
			t.Errorf("IsLoopback(%q) = %v, want %v", addr, got, want)
		}
	}
}
