// Package netlab is the shared harness of the tests that build networks of
// namespaces (test/ha, test/bgp): processes started inside a namespace with
// their logs in the lab's directory, and a teardown that kills every
// process of the lab's namespaces before deleting them. Test-only.
package netlab

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Lab is one test's namespaces and processes.
type Lab struct {
	T   *testing.T
	Dir string            // scratch directory: configurations and logs
	NS  map[string]string // the test's short names -> namespace names
	// LogLines is how much of each process's log a failed test shows;
	// OnFail, when set, logs more (a daemon's own log file, say).
	LogLines int
	OnFail   func()

	mu    sync.Mutex
	procs []*Proc
}

// Proc is a process started in a namespace.
type Proc struct {
	Name string
	Cmd  *exec.Cmd
	Log  string        // its output
	Done chan struct{} // closed when it has ended
}

// IP runs `ip args...`, failing the test on an error.
func (l *Lab) IP(args ...string) string {
	l.T.Helper()
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		l.T.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Start runs bin in namespace ns (a short name), logging to a file in the
// lab directory.
func (l *Lab) Start(name, ns, bin string, env []string, args ...string) *Proc {
	l.T.Helper()
	p := &Proc{Name: name, Log: filepath.Join(l.Dir, name+".log"), Done: make(chan struct{})}
	f, err := os.OpenFile(p.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		l.T.Fatal(err)
	}
	p.Cmd = exec.Command("ip", append([]string{"netns", "exec", l.NS[ns], bin}, args...)...)
	p.Cmd.Env = append(os.Environ(), env...)
	p.Cmd.Stdout, p.Cmd.Stderr = f, f
	if err := p.Cmd.Start(); err != nil {
		l.T.Fatalf("start %s: %v", name, err)
	}
	go func() { p.Cmd.Wait(); f.Close(); close(p.Done) }()
	l.mu.Lock()
	l.procs = append(l.procs, p)
	l.mu.Unlock()
	return p
}

// Kill ends p and waits for it (5 s at most).
func (p *Proc) Kill() {
	p.Cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-p.Done:
	case <-time.After(5 * time.Second):
	}
}

// Exited reports whether p has ended, waiting at most d.
func (p *Proc) Exited(d time.Duration) bool {
	select {
	case <-p.Done:
		return true
	case <-time.After(d):
		return false
	}
}

// Write writes a file into the lab directory and returns its path.
func (l *Lab) Write(name, content string) string {
	p := filepath.Join(l.Dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		l.T.Fatal(err)
	}
	return p
}

// WaitFor polls cond until it holds, failing the test after d; it returns
// how long it took.
func (l *Lab) WaitFor(what string, d time.Duration, cond func() bool) time.Duration {
	l.T.Helper()
	start := time.Now()
	deadline := start.Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			l.T.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

// Teardown kills every process started in the lab's namespaces (the ones
// started here and their children, such as keepalived's VRRP process and
// scripts), then deletes the namespaces, which takes their links along.
func (l *Lab) Teardown() {
	l.mu.Lock()
	procs := l.procs
	l.mu.Unlock()
	if l.T.Failed() {
		n := l.LogLines
		if n == 0 {
			n = 40
		}
		for _, p := range procs {
			b, _ := os.ReadFile(p.Log)
			l.T.Logf("---- %s log ----\n%s", p.Name, Tail(string(b), n))
		}
		if l.OnFail != nil {
			l.OnFail()
		}
	}
	for _, p := range procs {
		p.Kill()
	}
	for _, ns := range l.NS {
		if out, err := exec.Command("ip", "netns", "pids", ns).Output(); err == nil {
			for _, f := range strings.Fields(string(out)) {
				if pid, err := strconv.Atoi(f); err == nil {
					syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
	}
	for _, ns := range l.NS {
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
			l.T.Logf("ip netns del %s: %v %s", ns, err, out)
		}
	}
}

// Tail is the last n lines of s.
func Tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// New makes a lab whose namespaces are named prefix, 6 random hex digits,
// "-" and each of names (lo up in each); the test is skipped where
// namespaces cannot be made. Teardown runs at the test's end, even after a
// t.Fatal half-way.
func New(t *testing.T, prefix string, names ...string) *Lab {
	var rb [3]byte
	rand.Read(rb[:])
	prefix += hex.EncodeToString(rb[:])
	l := &Lab{T: t, Dir: t.TempDir(), NS: map[string]string{}}
	t.Cleanup(l.Teardown)
	probe := prefix + "-probe"
	if out, err := exec.Command("ip", "netns", "add", probe).CombinedOutput(); err != nil {
		t.Skipf("cannot create network namespaces here (%v: %s)", err, strings.TrimSpace(string(out)))
	}
	exec.Command("ip", "netns", "del", probe).Run()
	for _, n := range names {
		l.NS[n] = prefix + "-" + n
		l.IP("netns", "add", l.NS[n])
		l.IP("-n", l.NS[n], "link", "set", "lo", "up")
	}
	return l
}

// BuildSluice builds the sluice binary into the lab directory.
func (l *Lab) BuildSluice() string {
	l.T.Helper()
	bin := filepath.Join(l.Dir, "sluice")
	if out, err := exec.Command("go", "build", "-o", bin, "sluice/cmd/sluice").CombinedOutput(); err != nil {
		l.T.Fatalf("build sluice: %v\n%s", err, out)
	}
	return bin
}

// Adopt registers a command the caller started itself (to read its
// output), so that Teardown kills it; the caller closes its Done once it
// has waited for it.
func (l *Lab) Adopt(name string, cmd *exec.Cmd) *Proc {
	p := &Proc{Name: name, Cmd: cmd, Log: os.DevNull, Done: make(chan struct{})}
	l.mu.Lock()
	l.procs = append(l.procs, p)
	l.mu.Unlock()
	return p
}
