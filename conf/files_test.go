package conf_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sluice/conf"
)

// writeKeyPair writes a self-signed certificate for name and its key in a
// temporary directory and returns their paths.
func writeKeyPair(t *testing.T, name string) (cert, key string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(365 * 24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cert, key = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+".key")
	if err := os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return cert, key
}

const filesBase = `
[frontend.web]
mode = "http"
bind = ["127.0.0.1:0"]
default_backend = "app"
access_log = true
%s
[[backend.app.server]]
address = "127.0.0.1:1"
`

// TestParseLoadsWhatRunLoads: what a worker reads at start (certificate and
// key, error pages, access-log file, system resolvers) is read or checked
// by Parse, which `sluice check` runs, and refused there with file, line
// and key; check creates nothing.
func TestParseLoadsWhatRunLoads(t *testing.T) {
	dir := t.TempDir()
	cert, key := writeKeyPair(t, "a.test")
	_, otherKey := writeKeyPair(t, "b.test")
	page := filepath.Join(dir, "503.html")
	os.WriteFile(page, []byte("busy\n"), 0o644)
	noResolv := filepath.Join(dir, "no-resolv.conf")
	for _, tc := range []struct {
		desc, extra string
		key, want   string // "" when the file is valid
	}{
		{"good files", "error_page_503 = \"" + page + "\"\naccess_log_file = \"" + filepath.Join(dir, "access.log") + "\"\n[[frontend.web.tls]]\ncert = \"" + cert + "\"\nkey = \"" + key + "\"\n", "", ""},
		{"missing certificate", "[[frontend.web.tls]]\ncert = \"" + filepath.Join(dir, "none.pem") + "\"\nkey = \"" + key + "\"\n",
			"frontend.web.tls.0.cert", filepath.Join(dir, "none.pem")},
		{"key of another certificate", "[[frontend.web.tls]]\ncert = \"" + cert + "\"\nkey = \"" + otherKey + "\"\n",
			"frontend.web.tls.0.cert", "private key does not match"},
		{"missing error page", "error_page_503 = \"" + filepath.Join(dir, "none.html") + "\"\n",
			"frontend.web.error_page_503", "none.html"},
		{"access log in a missing directory", "access_log_file = \"" + filepath.Join(dir, "nodir", "access.log") + "\"\n",
			"frontend.web.access_log_file", "nodir"},
		{"access log that is a directory", "access_log_file = \"" + dir + "\"\n",
			"frontend.web.access_log_file", "is a directory"},
		{"dns without resolvers and no resolv.conf", "[backend.d.dns]\nname = \"_x._tcp.example.\"\n",
			"backend.d.dns.resolvers", noResolv},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			old := conf.ResolvConf
			conf.ResolvConf = noResolv
			defer func() { conf.ResolvConf = old }()
			src := strings.Replace(filesBase, "%s", tc.extra, 1)
			if strings.Contains(tc.extra, "backend.d") {
				src = strings.Replace(src, "\n[backend.d.dns]", "\n[[frontend.web.route]]\npath_prefix = \"/d\"\nbackend = \"d\"\n[backend.d.dns]", 1)
			}
			cfg, err := conf.Parse(filepath.Join(dir, "t.toml"), []byte(src))
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				f := cfg.Frontend("web")
				if f.TLS[0].Pair == nil || string(f.ErrorBodies[503]) != "busy\n" {
					t.Errorf("files not loaded: %+v", f)
				}
				if _, err := os.Stat(f.AccessLogFile); !os.IsNotExist(err) {
					t.Errorf("Parse created the access log %s (err %v)", f.AccessLogFile, err)
				}
				return
			}
			errs, ok := err.(conf.Errors)
			if !ok {
				t.Fatalf("err = %v, want conf.Errors", err)
			}
			for _, p := range errs {
				if p.Key == tc.key && strings.Contains(p.Msg, tc.want) && p.Line > 0 {
					return
				}
			}
			t.Fatalf("no problem at %s naming %q in:\n%v", tc.key, tc.want, err)
		})
	}
}

// TestRelativePathsFromConfigDir: every path key is taken from the
// configuration file's directory, whatever directory sluice runs in, and
// errors show the resolved path.
func TestRelativePathsFromConfigDir(t *testing.T) {
	dir := t.TempDir()
	cert, key := writeKeyPair(t, "a.test")
	for name, from := range map[string]string{"c.pem": cert, "c.key": key} {
		b, _ := os.ReadFile(from)
		os.WriteFile(filepath.Join(dir, name), b, 0o600)
	}
	os.WriteFile(filepath.Join(dir, "503.html"), []byte("busy\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "token"), []byte("a-token-of-some-length\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "secret"), []byte("a secret of more than sixteen bytes\n"), 0o600)
	os.Mkdir(filepath.Join(dir, "logs"), 0o755)
	src := `
[global]
control_socket = "run/sluice.sock"
pid_file = "run/sluice.pid"
[stats]
admin_token_file = "token"
[peers]
bind = "127.0.0.1:7070"
secret_file = "secret"
[frontend.web]
mode = "http"
bind = ["127.0.0.1:0"]
default_backend = "app"
access_log = true
access_log_file = "logs/access.log"
error_page_503 = "503.html"
[[frontend.web.tls]]
cert = "c.pem"
key = "c.key"
[[backend.app.server]]
address = "127.0.0.1:1"
`
	file := filepath.Join(dir, "sluice.toml")
	os.WriteFile(file, []byte(src), 0o600)
	t.Chdir(t.TempDir()) // elsewhere: none of the files is here
	cfg, err := conf.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	f := cfg.Frontend("web")
	for got, want := range map[string]string{
		cfg.Global.ControlSocket:   "run/sluice.sock",
		cfg.Global.PIDFile:         "run/sluice.pid",
		cfg.Stats.AdminTokenFile:   "token",
		cfg.Peers.SecretFile:       "secret",
		f.AccessLogFile:            "logs/access.log",
		f.ErrorPages[503]:          "503.html",
		f.TLS[0].Cert:              "c.pem",
		f.TLS[0].Key:               "c.key",
		string(f.ErrorBodies[503]): "busy\n",
	} {
		if want == "busy\n" {
			if got != want {
				t.Errorf("error page body %q", got)
			}
			continue
		}
		if got != filepath.Join(dir, want) {
			t.Errorf("%s resolved to %q, want %q", want, got, filepath.Join(dir, want))
		}
	}
	if cfg.Stats.AdminToken != "a-token-of-some-length" || f.TLS[0].Pair == nil {
		t.Errorf("token %q, pair %v", cfg.Stats.AdminToken, f.TLS[0].Pair)
	}

	// A missing relative file is reported with the path it was looked for at.
	os.Remove(filepath.Join(dir, "c.pem"))
	_, err = conf.Load(file)
	if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "c.pem")) {
		t.Fatalf("error %v does not name %s", err, filepath.Join(dir, "c.pem"))
	}
}
