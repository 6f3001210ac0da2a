package conf_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sluice/conf"
)

// [acme] and [[frontend.NAME.tls]] acme: what is accepted, the defaults,
// and each refusal located at its file, line and key.
func TestACMESection(t *testing.T) {
	dir := t.TempDir()
	storage := filepath.Join(dir, "acme-store") // created by Parse
	roots, _ := writeKeyPair(t, "ca.example")   // a PEM certificate will do as a root
	notPEM := filepath.Join(dir, "not.pem")
	os.WriteFile(notPEM, []byte("hello\n"), 0o644)
	const tail = `
[backend.b]
mode = "http"
[[backend.b.server]]
address = "127.0.0.1:1"
`
	good := `[acme]
directory = "https://acme.example/directory"
email = "ops@example.com"
storage = "` + storage + `"
ca_file = "` + roots + `"

[frontend.web]
mode = "http"
bind = ["127.0.0.1:8443"]
default_backend = "b"
[[frontend.web.tls]]
acme = ["WWW.example.com.", "api.example.com"]
` + tail
	cfg := mustParse(t, good)
	a := cfg.ACME
	if a == nil || a.Directory != "https://acme.example/directory" || a.Storage != storage || a.Challenge != conf.ChallengeTLSALPN || a.Roots == nil {
		t.Fatalf("acme = %+v", a)
	}
	if st, err := os.Stat(storage); err != nil || !st.IsDir() {
		t.Fatalf("storage not created: %v", err)
	}
	if got := strings.Join(cfg.Frontend("web").TLS[0].ACME, ","); got != "www.example.com,api.example.com" {
		t.Errorf("names = %s", got)
	}
	if got := strings.Join(cfg.ACMENames(), ","); got != "www.example.com,api.example.com" {
		t.Errorf("ACMENames = %s", got)
	}

	for _, tc := range []struct {
		desc string
		src  string
		want []want
	}{
		{"acme names without [acme]", `[frontend.web]
mode = "http"
bind = ["127.0.0.1:8443"]
default_backend = "b"
[[frontend.web.tls]]
acme = ["www.example.com"]
`, []want{{6, "frontend.web.tls.0.acme", "need an [acme] section"}}},
		{"bad directory, email, challenge, ca_file", `[acme]
directory = "http://acme.example/directory"
email = "ops"
storage = "` + storage + `"
ca_file = "` + notPEM + `"
challenge = "dns-01"
[frontend.web]
mode = "http"
bind = ["127.0.0.1:8443"]
default_backend = "b"
[[frontend.web.tls]]
acme = ["www.example.com"]
`, []want{
			{2, "acme.directory", "not an https URL"},
			{3, "acme.email", "not an e-mail address"},
			{5, "acme.ca_file", "no PEM certificate"},
			{6, "acme.challenge", "not a challenge sluice answers"},
		}},
		{"no directory", `[acme]
storage = "` + storage + `"
[frontend.web]
mode = "http"
bind = ["127.0.0.1:8443"]
default_backend = "b"
[[frontend.web.tls]]
acme = ["www.example.com"]
`, []want{{1, "acme", "acme.directory is required"}}},
		{"storage not writable", `[acme]
directory = "https://acme.example/directory"
storage = "` + filepath.Join(notPEM, "sub") + `"
[frontend.web]
mode = "http"
bind = ["127.0.0.1:8443"]
default_backend = "b"
[[frontend.web.tls]]
acme = ["www.example.com"]
`, []want{{3, "acme.storage", "set acme.storage to a directory"}}},
		{"names: wildcard, IP, bad, with cert, empty", `[acme]
directory = "https://acme.example/directory"
storage = "` + storage + `"
[frontend.web]
mode = "http"
bind = ["127.0.0.1:8443"]
default_backend = "b"
[[frontend.web.tls]]
acme = ["*.example.com", "10.0.0.1", "localhost", "a_b.example.com"]
[[frontend.web.tls]]
acme = ["www.example.com"]
cert = "x.pem"
[[frontend.web.tls]]
acme = []
`, []want{
			{9, "frontend.web.tls.0.acme", "dns-01"},
			{9, "frontend.web.tls.0.acme", "IP address"},
			{9, "frontend.web.tls.0.acme", "fully qualified"},
			{9, "frontend.web.tls.0.acme", "letters, digits"},
			{11, "frontend.web.tls.1.acme", "not both"},
			{14, "frontend.web.tls.2.acme", "lists no names"},
		}},
		{"http-01 without a plain http frontend", `[acme]
directory = "https://acme.example/directory"
storage = "` + storage + `"
challenge = "http-01"
[frontend.web]
mode = "http"
bind = ["127.0.0.1:8443"]
default_backend = "b"
[[frontend.web.tls]]
acme = ["www.example.com"]
`, []want{{4, "acme.challenge", "has none"}}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			checkProblems(t, parseErrors(t, tc.src+tail), tc.want)
		})
	}

	// http-01 with a plain frontend off port 80: accepted, with a warning.
	src := strings.Replace(good, `ca_file = "`+roots+`"`, `challenge = "http-01"`, 1) + `
[frontend.plain]
mode = "http"
bind = ["127.0.0.1:8080"]
default_backend = "b"
`
	cfg = mustParse(t, src)
	if len(cfg.Warnings) != 1 || cfg.Warnings[0].Key != "acme.challenge" || !strings.Contains(cfg.Warnings[0].Msg, "port 80") {
		t.Errorf("warnings = %+v, want one about port 80", cfg.Warnings)
	}
}

// A change of [acme] or of a frontend's acme names is in the reload's diff.
func TestACMEDiff(t *testing.T) {
	storage := t.TempDir()
	src := `[acme]
directory = "https://acme.example/directory"
storage = "` + storage + `"
[frontend.web]
mode = "http"
bind = ["127.0.0.1:8443"]
default_backend = "b"
[[frontend.web.tls]]
acme = ["www.example.com"]
[backend.b]
mode = "http"
[[backend.b.server]]
address = "127.0.0.1:1"
`
	old := mustParse(t, src)
	cur := mustParse(t, strings.Replace(strings.Replace(src, "acme.example", "acme2.example", 1), `["www.example.com"]`, `["www.example.com", "api.example.com"]`, 1))
	var got []string
	for _, c := range conf.Diff(old, cur) {
		got = append(got, c.String())
	}
	s := strings.Join(got, "\n")
	if !strings.Contains(s, "acme") || !strings.Contains(s, "directory") || !strings.Contains(s, "api.example.com") {
		t.Errorf("Diff =\n%s", s)
	}
}
