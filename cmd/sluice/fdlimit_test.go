package main

import (
	"bufio"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"sluice/internal/logbuf"
	"sluice/internal/testutil"
)

// Under a descriptor limit of 1024: `check` warns about a maxconn the file
// sets too high and says what to do; `run` with maxconn unset fits the cap
// to the limit, as HAProxy derives its maxconn, and serves.
func TestMaxconnFitsDescriptorLimit(t *testing.T) {
	limited := func(args ...string) *exec.Cmd {
		return exec.Command("bash", append([]string{"-c", `ulimit -n 1024 && exec "$@"`, "sh", binary}, args...)...)
	}
	be := testutil.Serve(t, "be", testutil.Namer("be"))
	front := testutil.FreeAddr(t)
	body := "[frontend.f]\nbind = [\"" + front + "\"]\ndefault_backend = \"b\"\n[[backend.b.server]]\naddress = \"" + be.Addr + "\"\n"

	set := writeFile(t, "set.toml", "[global]\nmaxconn = 50000\n"+body)
	out, err := limited("check", "-f", set).CombinedOutput()
	if err != nil {
		t.Fatalf("check: %v\n%s", err, out)
	}
	for _, want := range []string{"valid", "warning: global.maxconn = 50000 needs 100256 file descriptors but the limit is 1024", "set global.maxconn to 384"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("check output lacks %q:\n%s", want, out)
		}
	}

	cmd := limited("run", "-f", writeFile(t, "unset.toml", body))
	var logs logbuf.Buffer
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	testutil.WaitFor(t, "the fitted maxconn in the log", 10*time.Second, func() bool {
		return strings.Contains(logs.String(), "global.maxconn not set: 384 connections")
	})
	testutil.WaitFor(t, "sluice to listen", 10*time.Second, func() bool {
		c, err := net.Dial("tcp", front)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	c := testutil.Dial(t, front)
	defer c.Close()
	if got := testutil.ReadLine(t, bufio.NewReader(c)); got != "be" {
		t.Fatalf("through sluice: %q, want be", got)
	}
}
