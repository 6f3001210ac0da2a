package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"sluice/internal/testutil"
)

// TestCheckLiveAgainstRealMaster: `check --live` passes while a master and
// its worker run, and fails with a reason once the master is gone.
func TestCheckLiveAgainstRealMaster(t *testing.T) {
	dir := shortDir(t)
	web, raw := testutil.FreeAddr(t), testutil.FreeAddr(t)
	file := filepath.Join(dir, "sluice.toml")
	src := lbConfig(dir, web, raw, []*pair{startPair(t, "a1")})
	src = strings.Replace(src, "[global]\n", "[global]\nvital_frontends = [\"web\"]\n", 1)
	os.WriteFile(file, []byte(src), 0o644)
	l := startLB(t, binary, file, filepath.Join(dir, "ctl.sock"))

	live := func() (string, int) {
		cmd := exec.Command(binary, "check", "--live", "-f", file)
		out, _ := cmd.CombinedOutput()
		return string(out), cmd.ProcessState.ExitCode()
	}
	if out, code := live(); code != 0 {
		t.Fatalf("check --live with a running master: exit %d\n%s", code, out)
	}
	l.cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-l.done:
	case <-time.After(10 * time.Second):
		t.Fatal("master did not stop")
	}
	out, code := live()
	if code == 0 || !strings.Contains(out, "master not answering") && !strings.Contains(out, "not accepting") {
		t.Fatalf("check --live after the master stopped: exit %d, want non-zero with a reason\n%s", code, out)
	}
}
