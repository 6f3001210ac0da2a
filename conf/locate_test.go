package conf

import (
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

// FuzzLocator checks that the locator never panics or hangs, and that on
// any document the TOML decoder accepts it finds every key the decoder saw.
func FuzzLocator(f *testing.F) {
	for _, seed := range []string{
		"a = 1\n[b]\nc = 'x'\n",
		"[[a.b]]\nc = 1\n[[a.b]]\nc = 2\n[a.b.d]\ne = 3\n[[a.b.f]]\ng = 4\n",
		"x = { y = { z = 1 }, w = [1, 2] }\n",
		"s = [\n  { a = 1 },\n  { b = \"]\" , c = '}' },\n]\n",
		"\"q.k\" = 1\n'l' = 2\n[\"t\" . u]\nv.w = 3\n",
		"m = \"\"\"\n[not.a.table]\nk = 1\n\"\"\"\nn = '''\nx = ''''\n",
		"e = \"a \\\" [b] = c\" # d = e\n",
		"[t]\r\nk = 1\r\n",
		"[0]#00000",
		"[[a]]\n[a.1]\nb = 2\n",
		designExampleSeed,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, src string) {
		l := newLocator([]byte(src))
		var doc map[string]any
		md, err := toml.Decode(src, &doc)
		if err != nil {
			return
		}
		for _, k := range md.Keys() {
			key := strings.Join(k, ".")
			if strings.Contains("."+key+".", "..") {
				continue // empty key names are legal TOML but not worth locating
			}
			if len(l.plain[key]) == 0 {
				t.Errorf("key %q not located in:\n%s", key, src)
			}
		}
	})
}

const designExampleSeed = `[global]
vital_frontends = ["www"]         # what ` + "`sluice check --live`" + ` needs
[frontend.www]
bind = ["0.0.0.0:80"]
[[frontend.www.tls]]             # TLS termination; several entries = SNI selection
cert = "/etc/sluice/www.pem"
[[frontend.www.route]]
header = { "X-Canary" = "1" }
[backend.app.health]
check = "http"
[[backend.app.server]]
name = "app1"
[backend.api.dns]
name = "_http._tcp.api.service.consul."   # SRV
`
