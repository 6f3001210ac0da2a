package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// clkTck is USER_HZ, the unit of utime/stime in /proc/PID/stat; it is 100 on
// every Linux architecture Go supports.
const clkTck = 100

// proc is one child process the benchmark started.
type proc struct {
	name    string
	cmd     *exec.Cmd
	done    chan struct{} // closed when the process has exited
	closers []io.Closer   // closed before the process is signalled
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// registry owns every child so that all of them are stopped on the way out,
// whether the run ends normally, on an error or on Ctrl-C.
type registry struct {
	mu    sync.Mutex
	procs []*proc
}

// start runs cmd in its own process group (a terminal's Ctrl-C reaches only
// the driver, which then stops the children in order) and asks the kernel to
// kill it should the driver die without cleaning up.
func (r *registry) start(name string, cmd *exec.Cmd) (*proc, error) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	r.mu.Lock()
	r.procs = append(r.procs, p)
	r.mu.Unlock()
	go func() {
		cmd.Wait()
		close(p.done)
		r.forget(p)
	}()
	return p, nil
}

// forget drops a process that has exited on its own (each wrk run does).
func (r *registry) forget(p *proc) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, q := range r.procs {
		if q == p {
			r.procs = append(r.procs[:i], r.procs[i+1:]...)
			return
		}
	}
}

// stop ends one process: SIGTERM to its group, SIGKILL after a grace period.
func (p *proc) stop(grace time.Duration) {
	for _, c := range p.closers {
		c.Close()
	}
	if p.exited() {
		return
	}
	syscall.Kill(-p.pid(), syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		syscall.Kill(-p.pid(), syscall.SIGKILL)
		<-p.done
	}
}

// stopAll stops the children in reverse start order (balancers before the
// backends they talk to).
func (r *registry) stopAll() {
	r.mu.Lock()
	procs := r.procs
	r.procs = nil
	r.mu.Unlock()
	for i := len(procs) - 1; i >= 0; i-- {
		procs[i].stop(2 * time.Second)
	}
}

// usage is what /proc says about a process tree at one moment.
type usage struct {
	cpuTicks int64 // utime+stime summed over the tree
	hwmKiB   int64 // VmHWM summed over the tree
}

// treePIDs returns root and its descendants, so that a balancer that forks
// workers (HAProxy master-worker, sluice's planned master) is counted whole.
func treePIDs(root int) []int {
	children := map[int][]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if f := statFields(pid); len(f) > 1 {
			ppid, _ := strconv.Atoi(f[1])
			children[ppid] = append(children[ppid], pid)
		}
	}
	out := []int{root}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i]]...)
	}
	return out
}

// statFields returns /proc/PID/stat's fields after the command name, which
// may itself hold spaces and parentheses: field 0 is the state (stat(5)
// field 3), so utime and stime (fields 14 and 15) are at 11 and 12.
func statFields(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(string(b[i+1:]))
}

func readUsage(root int) usage {
	var u usage
	for _, pid := range treePIDs(root) {
		if f := statFields(pid); len(f) > 12 {
			ut, _ := strconv.ParseInt(f[11], 10, 64)
			st, _ := strconv.ParseInt(f[12], 10, 64)
			u.cpuTicks += ut + st
		}
		u.hwmKiB += statusKiB(pid, "VmHWM:")
	}
	return u
}

func statusKiB(pid int, key string) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), key); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

// resetPeakRSS makes VmHWM restart from the current RSS, so each run reports
// its own peak rather than the process's lifetime peak.
func resetPeakRSS(root int) {
	for _, pid := range treePIDs(root) {
		os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
	}
}
