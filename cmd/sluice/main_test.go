package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"sluice/internal/testutil"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "sluice-bin")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "sluice")
	if out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCheckCommand(t *testing.T) {
	good := writeFile(t, "good.toml", `
[frontend.f]
bind = ["127.0.0.1:0"]
default_backend = "b"
[[backend.b.server]]
address = "127.0.0.1:1"
`)
	bad := writeFile(t, "bad.toml", `
[frontend.f]
bind = ["127.0.0.1:0"]
default_backend = "nope"
colour = "blue"
[[backend.b.server]]
address = "127.0.0.1:1"
weight = 999
`)
	for _, tc := range []struct {
		desc     string
		file     string
		wantCode int
		want     []string
	}{
		{"valid file", good, 0, []string{"valid"}},
		{"every problem listed", bad, 1, []string{
			"bad.toml:4: frontend.f.default_backend: backend \"nope\" does not exist",
			"bad.toml:5: frontend.f.colour: unknown key",
			"bad.toml:8: backend.b.server.0.weight: weight 999 is outside 0..256",
		}},
		{"missing file", filepath.Join(t.TempDir(), "none.toml"), 1, []string{"no such file"}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			cmd := exec.Command(binary, "check", "-f", tc.file)
			out, _ := cmd.CombinedOutput()
			if code := cmd.ProcessState.ExitCode(); code != tc.wantCode {
				t.Fatalf("exit %d, want %d\n%s", code, tc.wantCode, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}
}

// startProcess runs `sluice run` on src and waits until it listens on front.
func startProcess(t *testing.T, src, front string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(binary, "run", "-f", writeFile(t, "sluice.toml", src))
	var logs bytes.Buffer
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("sluice logs:\n%s", logs.String())
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", front)
		if err == nil {
			c.Close()
			return cmd
		}
		if time.Now().After(deadline) {
			t.Fatalf("sluice did not listen on %s: %v", front, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestSigtermDrainsThenExits(t *testing.T) {
	srv := testutil.Serve(t, "s", testutil.Echo)
	front := testutil.FreeAddr(t)
	cmd := startProcess(t, fmt.Sprintf(`
[global]
hard_stop_after = "20s"
[frontend.f]
bind = [%q]
default_backend = "b"
[[backend.b.server]]
address = %q
`, front, srv.Addr), front)

	c := testutil.Dial(t, front)
	r := bufio.NewReader(c)
	fmt.Fprintln(c, "before")
	if got := testutil.ReadLine(t, r); got != "before" {
		t.Fatal(got)
	}
	exited := make(chan error, 1)
	cmd.Process.Signal(syscall.SIGTERM)
	go func() { exited <- cmd.Wait() }()

	// Wait until the listener is gone, then use the live connection.
	deadline := time.Now().Add(5 * time.Second)
	for {
		nc, err := net.Dial("tcp", front)
		if err != nil {
			break
		}
		nc.Close()
		if time.Now().After(deadline) {
			t.Fatal("still accepting after SIGTERM")
		}
		time.Sleep(10 * time.Millisecond)
	}
	fmt.Fprintln(c, "during")
	if got := testutil.ReadLine(t, r); got != "during" {
		t.Fatalf("live connection broken by SIGTERM: %q", got)
	}
	select {
	case err := <-exited:
		t.Fatalf("exited (%v) with a connection still open", err)
	default:
	}
	c.CloseWrite()
	if _, err := io.ReadAll(r); err != nil {
		t.Fatal(err)
	}
	c.Close()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("did not exit after the last connection closed")
	}
}
