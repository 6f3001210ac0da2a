package conf

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

const diffBase = `[global]
maxconn = 1000

[frontend.web]
mode = "http"
bind = ["127.0.0.1:8080"]
default_backend = "app"
[[frontend.web.route]]
host = "api.example"
backend = "api"
[[frontend.web.route]]
path_prefix = "/static/"
backend = "static"

[frontend.raw]
mode = "tcp"
bind = ["127.0.0.1:9000"]
default_backend = "db"

[backend.app]
[[backend.app.server]]
name = "s1"
address = "127.0.0.1:9001"
[[backend.app.server]]
name = "s2"
address = "127.0.0.1:9002"

[backend.api]
[[backend.api.server]]
name = "a1"
address = "127.0.0.1:9101"

[backend.static]
[[backend.static.server]]
name = "st1"
address = "127.0.0.1:9201"

[backend.db]
mode = "tcp"
[[backend.db.server]]
name = "d1"
address = "127.0.0.1:9301"
`

// edit applies old->new replacements to diffBase, failing if one does not apply.
func edit(t *testing.T, pairs ...string) string {
	t.Helper()
	s := diffBase
	for i := 0; i < len(pairs); i += 2 {
		if !strings.Contains(s, pairs[i]) {
			t.Fatalf("edit: %q not in the base", pairs[i])
		}
		s = strings.Replace(s, pairs[i], pairs[i+1], 1)
	}
	return s
}

func TestDiff(t *testing.T) {
	page := filepath.Join(t.TempDir(), "503.http")
	if err := os.WriteFile(page, []byte("HTTP/1.1 503 Busy\r\n\r\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		src  string
		want []string
	}{
		{"no change", diffBase, nil},
		{"binds added and removed", edit(t, `bind = ["127.0.0.1:8080"]`, `bind = ["127.0.0.1:8081", "127.0.0.1:8082"]`), []string{
			"- frontend web: bind 127.0.0.1:8080",
			"+ frontend web: bind 127.0.0.1:8081",
			"+ frontend web: bind 127.0.0.1:8082",
		}},
		{"servers added, removed, reweighted, moved", edit(t,
			"name = \"s1\"\naddress = \"127.0.0.1:9001\"\n", "name = \"s1\"\naddress = \"127.0.0.1:9001\"\nweight = 3\n",
			"name = \"s2\"\naddress = \"127.0.0.1:9002\"\n", "name = \"s3\"\naddress = \"127.0.0.1:9003\"\nbackup = true\n",
			`address = "127.0.0.1:9301"`, `address = "127.0.0.2:9301"`), []string{
			"~ backend app: server s1 weight 1 -> 3",
			"- backend app: server s2",
			"+ backend app: server s3 (address 127.0.0.1:9003, weight 1, backup)",
			`~ backend db: server d1 address "127.0.0.1:9301" -> "127.0.0.2:9301"`,
		}},
		{"route changed", edit(t, `host = "api.example"`, `host = "api2.example"`), []string{
			`- frontend web: route host "api.example" -> api`,
			`+ frontend web: route host "api2.example" -> api`,
		}},
		{"routes reordered", edit(t,
			"host = \"api.example\"\nbackend = \"api\"\n[[frontend.web.route]]\npath_prefix = \"/static/\"\nbackend = \"static\"\n",
			"path_prefix = \"/static/\"\nbackend = \"static\"\n[[frontend.web.route]]\nhost = \"api.example\"\nbackend = \"api\"\n"), []string{
			`~ frontend web: route order (the first route that matches wins) host "api.example" -> api; path_prefix "/static/" -> static -> path_prefix "/static/" -> static; host "api.example" -> api`,
		}},
		{"sections added and removed", edit(t,
			"[frontend.raw]\nmode = \"tcp\"\nbind = [\"127.0.0.1:9000\"]\ndefault_backend = \"db\"\n",
			"[frontend.raw2]\nmode = \"tcp\"\nbind = [\"127.0.0.1:9000\"]\ndefault_backend = \"db\"\n"), []string{
			"- frontend raw",
			`+ frontend raw2 (mode tcp, bind ["127.0.0.1:9000"])`,
		}},
		{"keys of every section", edit(t,
			"maxconn = 1000\n", "maxconn = 2000\nlog_format = \"json\"\n\n[defaults]\ntimeout_client = \"7s\"\n",
			"[backend.app]\n", "[backend.app]\nbalance = \"leastconn\"\n[backend.app.health]\ninterval = \"3s\"\n",
			"default_backend = \"app\"\n", "default_backend = \"app\"\nerror_page_503 = \""+page+"\"\n"), []string{
			"~ global: maxconn 1000 -> 2000",
			`~ global: log_format "text" -> "json"`,
			"~ frontend raw: timeout_client 50s -> 7s",
			"~ frontend web: timeout_client 50s -> 7s",
			"+ frontend web: error_page_503 (" + page + ")",
			`~ backend app: balance "roundrobin" -> "leastconn"`,
			"~ backend app: health.interval 2s -> 3s",
			"~ backend app: health.interval_down 2s -> 3s", // it defaults to interval: what runs changes too
		}},
		{"backend added", diffBase + "\n[backend.spare]\n[[backend.spare.server]]\nname = \"x\"\naddress = \"127.0.0.1:9401\"\n", []string{
			`+ backend spare (mode tcp, balance roundrobin, 1 servers)`,
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			old, err := Parse("t.toml", []byte(diffBase))
			if err != nil {
				t.Fatal(err)
			}
			cur, err := Parse("t.toml", []byte(tc.src))
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, c := range Diff(old, cur) {
				got = append(got, c.String())
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("diff:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}

// TestDiffCoversEveryField: each field of the configuration is compared
// under the name of a key the decoder accepts, or is one Diff compares
// itself or that is derived from other keys. A new field that matches no
// key of its raw struct fails here instead of silently missing from diffs.
func TestDiffCoversEveryField(t *testing.T) {
	keys := acceptedKeys()
	handled := map[string]bool{ // compared by Diff itself, or derived
		"Global.MaxConnSet": true, "Stats.AdminToken": true, "Frontend.Name": true,
		"Frontend.Routes": true, "Frontend.Rules": true, "Frontend.ErrorPages": true, "Backend.Name": true,
		"Backend.Servers": true, "Health.ExpectStatus": true,
		"Frontend.ErrorBodies": true, "TLS.Pair": true, "TLS.OCSPStaple": true, "ACME.Roots": true, // contents of the files, compared by Diff
		"Backend.used":    true,                          // derived: some frontend or route names it
		"ClientAuth.Pool": true, "ClientAuth.CRLs": true, // contents of the files, compared by Diff
		"BackendTLS.Roots": true, "BackendTLS.Pair": true, // read from ca_file, cert and key
	}
	for _, tc := range []struct {
		prefix string
		typ    reflect.Type
		raw    reflect.Type
	}{
		{"global.", reflect.TypeFor[Global](), reflect.TypeFor[rawGlobal]()},
		{"global.", reflect.TypeFor[Logging](), reflect.TypeFor[rawGlobal]()},
		{"stats.", reflect.TypeFor[Stats](), reflect.TypeFor[rawStats]()},
		{"peers.", reflect.TypeFor[Peers](), reflect.TypeFor[rawPeers]()},
		{"acme.", reflect.TypeFor[ACME](), reflect.TypeFor[rawACME]()},
		{"frontend.NAME.", reflect.TypeFor[Frontend](), reflect.TypeFor[rawFrontend]()},
		{"frontend.NAME.tls.", reflect.TypeFor[TLS](), reflect.TypeFor[rawTLS]()},
		{"frontend.NAME.client_auth.", reflect.TypeFor[ClientAuth](), reflect.TypeFor[rawClientAuth]()},
		{"frontend.NAME.route.", reflect.TypeFor[Route](), reflect.TypeFor[rawRoute]()},
		{"frontend.NAME.rate_limit.", reflect.TypeFor[RateLimit](), reflect.TypeFor[rawRateLimit]()},
		{"backend.NAME.", reflect.TypeFor[Backend](), reflect.TypeFor[rawBackend]()},
		{"backend.NAME.server.", reflect.TypeFor[Server](), reflect.TypeFor[rawServer]()},
		{"backend.NAME.health.", reflect.TypeFor[Health](), reflect.TypeFor[rawHealth]()},
		{"backend.NAME.dns.", reflect.TypeFor[DNS](), reflect.TypeFor[rawDNS]()},
		{"backend.NAME.tls.", reflect.TypeFor[BackendTLS](), reflect.TypeFor[rawBackendTLS]()},
	} {
		for i := 0; i < tc.typ.NumField(); i++ {
			f := tc.typ.Field(i)
			id := tc.typ.Name() + "." + f.Name
			if f.Anonymous || handled[id] {
				continue
			}
			key, rt, ok := rawKey(tc.raw, f.Name)
			if ok && rt.Kind() == reflect.Struct {
				continue // a table: its own row above checks its keys
			}
			if !ok {
				t.Errorf("%s matches no field of %s: give it the raw field's name, or compare it in Diff and list it here", id, tc.raw.Name())
				continue
			}
			if !keys[tc.prefix+key] {
				t.Errorf("%s is shown as %s%s, which the decoder does not accept", id, tc.prefix, key)
			}
		}
	}
}

// An error page whose file changed at the same path is a change: the
// reload reads it again.
func TestDiffErrorPageContent(t *testing.T) {
	dir := t.TempDir()
	page := filepath.Join(dir, "503.html")
	write := func(body string) *Config {
		t.Helper()
		if err := os.WriteFile(page, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(dir, "s.toml")
		src := strings.Replace(diffBase, "default_backend = \"app\"\n", "default_backend = \"app\"\nerror_page_503 = \"503.html\"\n", 1)
		if err := os.WriteFile(f, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		cfg, err := Load(f)
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	old := write("<p>busy</p>")
	cur := write("<p>back soon</p>")
	var got []string
	for _, c := range Diff(old, cur) {
		got = append(got, c.String())
	}
	if len(got) != 1 || !strings.Contains(got[0], "error_page_503 content") {
		t.Fatalf("Diff = %q, want one change of error_page_503's content", got)
	}
}
