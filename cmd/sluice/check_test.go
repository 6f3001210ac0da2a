package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestCheckShippedExamples: every shipped example passes `sluice check`
// run from another directory (relative paths in them are taken from the
// file's directory), with no warning beyond a checkout's file modes.
func TestCheckShippedExamples(t *testing.T) {
	files, _ := filepath.Glob("../../examples/*.toml")
	nodes, _ := filepath.Glob("../../examples/*/*/sluice.toml")
	files = append(files, nodes...)
	if len(files) < 5 {
		t.Fatalf("found only %v", files)
	}
	for _, f := range files {
		abs, _ := filepath.Abs(f)
		abs = withoutRunDir(t, abs)
		cmd := exec.Command(binary, "check", "-f", abs)
		cmd.Dir = t.TempDir()
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("check %s: %v\n%s", f, err, out)
			continue
		}
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if strings.Contains(line, "warning") && !strings.Contains(line, "readable or writable by group or others") {
				t.Errorf("check %s: %s", f, line)
			}
		}
	}
}

// TestCheckRefusesWhatRunRefuses: a certificate that does not exist is
// refused by check with the same located problem run refuses it with,
// before anything is bound.
func TestCheckRefusesWhatRunRefuses(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "sluice.toml")
	os.WriteFile(file, []byte(`[frontend.web]
mode = "http"
bind = ["127.0.0.1:0"]
default_backend = "app"
[[frontend.web.tls]]
cert = "missing.pem"
key = "missing.key"
[[backend.app.server]]
address = "127.0.0.1:1"
`), 0o644)
	want := file + ":6: frontend.web.tls.0.cert: cannot read the certificate: open " + filepath.Join(dir, "missing.pem")
	var stdout, stderr bytes.Buffer
	if code := Main([]string{"check", "-f", file}, &stdout, &stderr); code != 1 || !strings.Contains(stderr.String(), want) {
		t.Fatalf("check: exit %d, stderr:\n%s\nwant %q", code, stderr.String(), want)
	}
	cmd := exec.Command(binary, "run", "-f", file)
	cmd.Dir = t.TempDir()
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), want) {
		t.Fatalf("run: %v\n%s\nwant %q", err, out, want)
	}
}

// TestSubcommandHelp: each command prints its own usage and flags.
func TestSubcommandHelp(t *testing.T) {
	for _, tc := range []struct {
		args      []string
		want, not []string
	}{
		{[]string{"help", "run"}, []string{"usage: sluice run", "-x", "-debug"}, []string{"commands:"}},
		{[]string{"run", "-h"}, []string{"usage: sluice run", "-x"}, []string{"commands:"}},
		{[]string{"reload", "-h"}, []string{"usage: sluice reload", "-S", "-timeout"}, []string{"-drain"}},
		{[]string{"help", "stop"}, []string{"usage: sluice stop", "-drain"}, nil},
		{[]string{"help", "check"}, []string{"usage: sluice check", "-live", "/etc/sluice/sluice.toml"}, nil},
		{[]string{"help"}, []string{"commands:", "sluice help COMMAND"}, nil},
		{[]string{"help", "-h"}, []string{"commands:", "sluice help COMMAND"}, nil},
	} {
		var stdout, stderr bytes.Buffer
		code := Main(tc.args, &stdout, &stderr)
		out := stdout.String() + stderr.String()
		if code != 0 {
			t.Errorf("%v: exit %d\n%s", tc.args, code, out)
		}
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Errorf("%v: no %q in:\n%s", tc.args, w, out)
			}
		}
		for _, n := range tc.not {
			if strings.Contains(out, n) {
				t.Errorf("%v: %q in:\n%s", tc.args, n, out)
			}
		}
	}
}

// TestCheckWithoutFileNamesTheDefault: check without -f says which file it
// looked for and how to name another.
func TestCheckWithoutFileNamesTheDefault(t *testing.T) {
	old := defaultConfig
	defaultConfig = filepath.Join(t.TempDir(), "sluice.toml")
	defer func() { defaultConfig = old }()
	var stdout, stderr bytes.Buffer
	code := Main([]string{"check"}, &stdout, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), defaultConfig) || !strings.Contains(stderr.String(), "-f FILE") {
		t.Fatalf("exit %d, stderr %q", code, stderr.String())
	}
}

// withoutRunDir returns file, or, when it names the track file in
// /run/sluice (which the service's RuntimeDirectory creates, and a test
// machine has not), a copy in a temporary directory with that path moved
// there and its peers secret named by its absolute path.
func withoutRunDir(t *testing.T, file string) string {
	src, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	const track = `"/run/sluice/keepalived.track"`
	if !strings.Contains(string(src), track) {
		return file
	}
	dir := t.TempDir()
	s := strings.ReplaceAll(string(src), track, strconv.Quote(filepath.Join(dir, "keepalived.track")))
	s = strings.ReplaceAll(s, `"peers.secret"`, strconv.Quote(filepath.Join(filepath.Dir(file), "peers.secret")))
	out := filepath.Join(dir, "sluice.toml")
	if err := os.WriteFile(out, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	return out
}
