package conf_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sluice/conf"
)

// secretsConfig writes a config with a relative admin_token_file and peers
// secret_file beside it, the files with the given modes, and loads it from
// another working directory.
func secretsConfig(t *testing.T, tokenMode, secretMode os.FileMode) (*conf.Config, string) {
	t.Helper()
	dir := t.TempDir()
	for name, mode := range map[string]os.FileMode{"admin.token": tokenMode, "peers.secret": secretMode} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("0123456789abcdef0123456789\n"), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // the umask may have masked it
			t.Fatal(err)
		}
	}
	file := filepath.Join(dir, "sluice.toml")
	src := `[stats]
admin_token_file = "admin.token"
[peers]
bind = "127.0.0.1:7070"
secret_file = "peers.secret"
[frontend.f]
bind = ["127.0.0.1:0"]
default_backend = "b"
[[backend.b.server]]
address = "127.0.0.1:1"
`
	if err := os.WriteFile(file, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Chdir(t.TempDir()) // the files are not in the working directory
	cfg, err := conf.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	return cfg, dir
}

// TestPeersSecretFileBesideConfig: a relative secret_file is taken from
// the config file's directory, as admin_token_file is, not from wherever
// sluice was started.
func TestPeersSecretFileBesideConfig(t *testing.T) {
	cfg, dir := secretsConfig(t, 0o600, 0o600)
	if want := filepath.Join(dir, "peers.secret"); cfg.Peers.SecretFile != want {
		t.Fatalf("peers.SecretFile = %q, want %q", cfg.Peers.SecretFile, want)
	}
	if _, err := conf.ReadPeerSecret(cfg.Peers.SecretFile); err != nil {
		t.Fatal(err)
	}
	if len(cfg.Warnings) != 0 {
		t.Fatalf("warnings for 0600 files: %v", cfg.Warnings)
	}
}

// TestSecretFilesOpenToOthersWarn: a token or secret that group or others
// may read is loaded, with a warning naming file, line and key and the fix.
func TestSecretFilesOpenToOthersWarn(t *testing.T) {
	cfg, dir := secretsConfig(t, 0o644, 0o640)
	want := map[string]string{
		"stats.admin_token_file": fmt.Sprintf("%s:2: stats.admin_token_file: %s is readable", filepath.Join(dir, "sluice.toml"), filepath.Join(dir, "admin.token")),
		"peers.secret_file":      fmt.Sprintf("%s:5: peers.secret_file: %s is readable", filepath.Join(dir, "sluice.toml"), filepath.Join(dir, "peers.secret")),
	}
	if len(cfg.Warnings) != len(want) {
		t.Fatalf("warnings %v, want %d", cfg.Warnings, len(want))
	}
	for _, w := range cfg.Warnings {
		prefix, ok := want[w.Key]
		if !ok || !strings.HasPrefix(w.Error(), prefix) || !strings.Contains(w.Msg, "chmod 600") {
			t.Errorf("warning %q, want it to start %q and say chmod 600", w.Error(), prefix)
		}
	}
}
