package main

import (
	"bufio"
	"fmt"
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
	for _, want := range []string{"valid", "warning: global.maxconn = 50000 needs 100257 file descriptors beside the reserve of 256 and 1 for 1 listeners", "but the limit is 1024", "set global.maxconn to 383"} {
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
		return strings.Contains(logs.String(), "global.maxconn not set: 383 connections")
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

// Review of issue 15: health checks in flight and listeners were outside
// the budget, so 300 checked servers at a limit of 600 ended in EMFILE.
// They now come off the limit: `check` warns about a maxconn set past what
// is left, and `run` with maxconn unset shrinks it to (600-256-302)/2.
func TestChecksAndListenersInBudget(t *testing.T) {
	limited := func(args ...string) *exec.Cmd {
		return exec.Command("bash", append([]string{"-c", `ulimit -n 600 && exec "$@"`, "sh", binary}, args...)...)
	}
	be := testutil.Serve(t, "be", testutil.Namer("be"))
	front, st := testutil.FreeAddr(t), testutil.FreeAddr(t)
	var b strings.Builder
	b.WriteString("[stats]\nbind = \"" + st + "\"\nmaxconn = 1\n[frontend.f]\nbind = [\"" + front + "\"]\ndefault_backend = \"b\"\n[backend.b.health]\ncheck = \"tcp\"\n")
	for i := range 300 {
		fmt.Fprintf(&b, "[[backend.b.server]]\nname = \"s%d\"\naddress = %q\n", i, be.Addr)
	}
	out, err := limited("check", "-f", writeFile(t, "set.toml", "[global]\nmaxconn = 150\n"+b.String())).CombinedOutput()
	if err != nil {
		t.Fatalf("check: %v\n%s", err, out)
	}
	for _, want := range []string{"warning: global.maxconn = 150 needs 859 file descriptors beside the reserve of 256 and 303 for 2 listeners, 300 checked servers, 1 stats connections", "set global.maxconn to 20"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("check output lacks %q:\n%s", want, out)
		}
	}
	cmd := limited("run", "-f", writeFile(t, "unset.toml", b.String()))
	var logs logbuf.Buffer
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	testutil.WaitFor(t, "the fitted maxconn in the log", 10*time.Second, func() bool {
		return strings.Contains(logs.String(), "global.maxconn not set: 20 connections")
	})
}
