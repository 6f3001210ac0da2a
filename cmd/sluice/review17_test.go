package main

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"sluice/internal/testutil"
)

// TestCheckRefusesUnreachableSyslog: `run` refuses to start when
// global.log_target = "syslog" cannot be reached (no /dev/log, no listener
// on log_syslog_address), so `check` — which the shipped unit's
// ExecStartPre runs — must refuse the same file with the same reason, and
// accept it once something listens there.
func TestCheckRefusesUnreachableSyslog(t *testing.T) {
	dir := shortDir(t)
	sock := filepath.Join(dir, "log.sock")
	file := filepath.Join(dir, "sluice.toml")
	os.WriteFile(file, []byte(`[global]
log_target = "syslog"
log_syslog_address = "unixgram:`+sock+`"
[frontend.f]
bind = ["`+testutil.FreeAddr(t)+`"]
default_backend = "b"
[[backend.b.server]]
address = "127.0.0.1:1"
`), 0o644)
	want := `global.log_target = "syslog": cannot reach unixgram:` + sock

	cmd := exec.Command(binary, "run", "-f", file)
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), want) {
		t.Fatalf("run: %v\n%s\nwant %q", err, out, want)
	}
	var stdout, stderr bytes.Buffer
	if code := Main([]string{"check", "-f", file}, &stdout, &stderr); code != 1 || !strings.Contains(stderr.String(), want) {
		t.Fatalf("check accepts what run refuses: exit %d\nstdout:\n%s\nstderr:\n%s\nwant %q", code, stdout.String(), stderr.String(), want)
	}

	pc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	stdout.Reset()
	stderr.Reset()
	if code := Main([]string{"check", "-f", file}, &stdout, &stderr); code != 0 {
		t.Fatalf("check with a syslog listener: exit %d\n%s%s", code, stdout.String(), stderr.String())
	}
}

// TestReloadOfAnotherFileIsRefused: a reload always re-reads the file the
// master was started with. `reload -n -f OTHER` used to print "no change"
// for the master's file and exit 0, and `reload -f OTHER` to reload the
// master's file and say "reload done": an operator who named OTHER believed
// it checked or applied. Both must refuse, name both files and leave the
// worker alone. The master's file named relatively (from its own
// directory) is the same file and is accepted.
func TestReloadOfAnotherFileIsRefused(t *testing.T) {
	set := []*pair{startPair(t, "a1")}
	dir := shortDir(t)
	web, raw := testutil.FreeAddr(t), testutil.FreeAddr(t)
	file := filepath.Join(dir, "sluice.toml")
	src := lbConfig(dir, web, raw, set)
	os.WriteFile(file, []byte(src), 0o644)
	l := startLB(t, binary, file, filepath.Join(dir, "ctl.sock"))
	before := l.status()

	other := filepath.Join(dir, "other.toml")
	os.WriteFile(other, []byte(strings.Replace(src, "[defaults]\n", "[defaults]\ntimeout_client = \"7s\"\n", 1)), 0o644)
	for _, args := range [][]string{{"reload", "-n", "-f", other}, {"reload", "-f", other}, {"reload", "--diff", "-f", other}} {
		cmd := exec.Command(binary, args...)
		out, _ := cmd.CombinedOutput()
		code := cmd.ProcessState.ExitCode()
		if code != 1 || !strings.Contains(string(out), "runs "+file+", not "+other) {
			t.Errorf("%v: exit %d, output:\n%s\nwant exit 1 naming both files", args, code, out)
		}
	}
	if st := l.status(); st.WorkerPID != before.WorkerPID {
		t.Fatalf("a reload naming another file replaced the worker (%d -> %d)", before.WorkerPID, st.WorkerPID)
	}

	cmd := exec.Command(binary, "reload", "-n", "-f", "sluice.toml")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "no change from the running configuration") {
		t.Errorf("reload -n -f sluice.toml from the file's directory: %v\n%s", err, out)
	}
}
