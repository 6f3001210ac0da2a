package conf_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sluice/conf"
)

const tlsBackendBase = `
[frontend.f]
mode = "%s"
bind = ["127.0.0.1:0"]
default_backend = "app"

[[backend.app.server]]
address = "127.0.0.1:1"

[backend.app.tls]
`

// TestBackendTLS: [backend.NAME.tls] is read at Parse (CA file into Roots,
// the client pair loaded) and each mistake is refused at its line and key.
func TestBackendTLS(t *testing.T) {
	cert, key := writeKeyPair(t, "client.test")
	dir := t.TempDir()
	noCert := filepath.Join(dir, "empty.pem")
	os.WriteFile(noCert, []byte("not a certificate\n"), 0o600)

	cfg := mustParse(t, strings.Replace(tlsBackendBase, "%s", "http", 1)+
		"ca_file = \""+cert+"\"\nserver_name = \"api.internal\"\ncert = \""+cert+"\"\nkey = \""+key+"\"\nalpn = [\"h2\", \"http/1.1\"]\n")
	bt := cfg.Backend("app").TLS
	if bt == nil || bt.Verify != conf.VerifyRequired || bt.Roots == nil || bt.Pair == nil || bt.ServerName != "api.internal" {
		t.Fatalf("tls = %+v", bt)
	}
	if !cfg.Backend("app").HTTP2() {
		t.Error("alpn with h2 first: not an HTTP/2 backend")
	}
	if cfg := mustParse(t, strings.Replace(tlsBackendBase, "%s", "tcp", 1)+"verify = \"none\"\n"); cfg.Backend("app").TLS.Verify != conf.VerifyNone {
		t.Error("verify none not kept")
	}
	if cfg := mustParse(t, strings.Replace(tlsBackendBase, "%s", "http", 1)+"alpn = [\"http/1.1\", \"h2\"]\n"); cfg.Backend("app").HTTP2() {
		t.Error("alpn with http/1.1 first: taken as HTTP/2")
	}

	for _, tc := range []struct {
		mode, body, key, msg string
	}{
		{"tcp", "verify = \"optional\"\n", "backend.app.tls.verify", "client certificates"},
		{"tcp", "verify = \"maybe\"\n", "backend.app.tls.verify", "not one of"},
		{"tcp", "ca_file = \"" + noCert + "\"\n", "backend.app.tls.ca_file", "holds no PEM certificate"},
		{"tcp", "ca_file = \"" + filepath.Join(dir, "missing.pem") + "\"\n", "backend.app.tls.ca_file", "cannot read"},
		{"tcp", "cert = \"" + cert + "\"\n", "backend.app.tls.key", "needs both"},
		{"tcp", "key = \"" + key + "\"\n", "backend.app.tls.cert", "needs both"},
		{"tcp", "cert = \"" + cert + "\"\nkey = \"" + noCert + "\"\n", "backend.app.tls.cert", "certificate"},
		{"tcp", "alpn = [\"h2\"]\n", "backend.app.tls.alpn", "needs an http backend"},
		{"http", "alpn = [\"h3\"]\n", "backend.app.tls.alpn", "\"h3\" is not a protocol"},
		{"http", "alpn = [\"h2\", \"h2\"]\n", "backend.app.tls.alpn", "twice"},
		{"http", "server_name = \"a b\"\n", "backend.app.tls.server_name", "not a host name"},
		{"udp", "verify = \"none\"\n", "backend.app.tls", "udp"},
	} {
		src := strings.Replace(tlsBackendBase, "%s", tc.mode, 1) + tc.body
		errs := parseErrors(t, src)
		found := false
		for _, p := range errs {
			if p.Key == tc.key && strings.Contains(p.Msg, tc.msg) && p.Line > 0 {
				found = true
			}
		}
		if !found {
			t.Errorf("%s %q: want %s: ...%s..., got %v", tc.mode, tc.body, tc.key, tc.msg, errs)
		}
	}
	// proto = "h2c" is HTTP/2 without TLS.
	src := strings.Replace(tlsBackendBase, "%s", "http", 1)
	src = strings.Replace(src, "[backend.app.tls]\n", "[backend.app]\nproto = \"h2c\"\n[backend.app.tls]\nverify = \"none\"\n", 1)
	errs := parseErrors(t, src)
	if len(errs) != 1 || errs[0].Key != "backend.app.proto" || !strings.Contains(errs[0].Msg, "alpn") {
		t.Errorf("proto h2c with tls: %v", errs)
	}
}
