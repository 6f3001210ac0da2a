package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"sluice/engine"
	"sluice/internal/logbuf"
	"sluice/internal/testutil"
	"sluice/supervisor"
)

// pair is one backend server as the tests see it: an HTTP server (which
// also answers WebSocket upgrades by echoing) and a TCP server that sends
// its name and then echoes. Both answer with the server's name.
type pair struct {
	name     string
	http     string
	tcp      string
	requests atomic.Int64
	tcpB     *testutil.Backend
}

func startPair(t *testing.T, name string) *pair {
	t.Helper()
	p := &pair{name: name}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.http = ln.Addr().String()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.requests.Add(1)
		if strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			c, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			defer c.Close()
			brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n" + name + "\n")
			brw.Flush()
			io.Copy(c, brw)
			return
		}
		io.WriteString(w, name)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	p.tcpB = testutil.Serve(t, name, func(c net.Conn) {
		fmt.Fprintf(c, "%s\n", name)
		io.Copy(c, c)
	})
	p.tcp = p.tcpB.Addr
	return p
}

// lb is a sluice master started by a test.
type lb struct {
	t    *testing.T
	cmd  *exec.Cmd
	ctl  string // control socket
	file string
	logs *logbuf.Buffer
	done chan struct{}
}

// shortDir is a temporary directory with a short path: unix socket paths
// are limited to 108 bytes.
func shortDir(t *testing.T) string {
	d, err := os.MkdirTemp("", "sl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// startLB runs `bin run -f file args...` and waits until the master answers
// status with a ready worker.
func startLB(t *testing.T, bin, file, ctl string, args ...string) *lb {
	t.Helper()
	return startLBEnv(t, nil, bin, file, ctl, args...)
}

// startLBEnv is startLB with extra environment variables.
func startLBEnv(t *testing.T, env []string, bin, file, ctl string, args ...string) *lb {
	t.Helper()
	l := &lb{t: t, ctl: ctl, file: file, logs: &logbuf.Buffer{}, done: make(chan struct{})}
	l.cmd = exec.Command(bin, append([]string{"run", "-f", file}, args...)...)
	l.cmd.Stderr = l.logs
	l.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // its workers too, at the end
	if env != nil {
		l.cmd.Env = append(os.Environ(), env...)
	}
	if err := l.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { l.cmd.Wait(); close(l.done) }()
	t.Cleanup(func() {
		l.cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-l.done:
		case <-time.After(10 * time.Second):
			// A stop that hangs is a bug: SIGABRT makes the master and its
			// workers print every goroutine into the logs below, then the
			// whole group goes (an orphaned worker would hold the log pipe
			// and Wait forever).
			t.Errorf("%s did not stop within 10s of SIGQUIT", filepath.Base(file))
			syscall.Kill(-l.cmd.Process.Pid, syscall.SIGABRT)
			select {
			case <-l.done:
			case <-time.After(5 * time.Second):
			}
			syscall.Kill(-l.cmd.Process.Pid, syscall.SIGKILL)
			select {
			case <-l.done:
			case <-time.After(5 * time.Second):
				t.Errorf("%s: still not gone after SIGKILL to its process group", filepath.Base(file))
			}
		}
		if t.Failed() {
			t.Logf("logs of %s:\n%s", filepath.Base(file), l.logs.String())
		}
	})
	waitFor(t, 20*time.Second, "master ready", func() bool {
		r, _, err := supervisor.Control(ctl, map[string]any{"cmd": "status"}, 5*time.Second)
		return err == nil && r.OK && r.WorkerPID > 0
	})
	return l
}

func (l *lb) status() supervisor.Reply {
	l.t.Helper()
	r, _, err := supervisor.Control(l.ctl, map[string]any{"cmd": "status"}, 10*time.Second)
	if err != nil || !r.OK {
		l.t.Fatalf("status: %v %s", err, r.Error)
	}
	return r
}

// run runs a client command of the binary against this master.
func (l *lb) run(args ...string) (string, int) {
	cmd := exec.Command(binary, append(args, "-S", l.ctl)...)
	out, _ := cmd.CombinedOutput()
	return string(out), cmd.ProcessState.ExitCode()
}

func (l *lb) reload(src string) {
	l.t.Helper()
	if err := os.WriteFile(l.file, []byte(src), 0o644); err != nil {
		l.t.Fatal(err)
	}
	out, code := l.run("reload")
	if code != 0 {
		l.t.Fatalf("reload: exit %d\n%s", code, out)
	}
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// lbConfig is a configuration with an http frontend and a tcp frontend over
// the given servers.
func lbConfig(dir, web, raw string, servers []*pair) string {
	var b strings.Builder
	fmt.Fprintf(&b, `[global]
control_socket = %q
pid_file = %q
hard_stop_after = "60s"

[defaults]
timeout_connect = "2s"

[frontend.web]
mode = "http"
bind = [%q]
default_backend = "app"

[frontend.raw]
mode = "tcp"
bind = [%q]
default_backend = "rawb"

[backend.app.health]
check = "none"
[backend.rawb.health]
check = "none"
`, filepath.Join(dir, "ctl.sock"), filepath.Join(dir, "pid"), web, raw)
	for _, p := range servers {
		fmt.Fprintf(&b, "\n[[backend.app.server]]\nname = %q\naddress = %q\n", p.name, p.http)
		fmt.Fprintf(&b, "\n[[backend.rawb.server]]\nname = %q\naddress = %q\n", p.name, p.tcp)
	}
	return b.String()
}

// load drives keep-alive HTTP, new-connection HTTP and TCP clients until
// stopped, counting every failure. Each loop is bounded in count and time.
type load struct {
	web, raw string
	stop     chan struct{}
	wg       sync.WaitGroup
	ok       atomic.Int64
	failed   atomic.Int64
	mu       sync.Mutex
	errs     []string
	last     [3]atomic.Pointer[string] // last server seen by each kind
}

const (
	kindKeepAlive = iota
	kindNewConn
	kindTCP
)

var kindNames = [3]string{"keep-alive http", "new-connection http", "tcp"}

func startLoad(t *testing.T, web, raw string) *load {
	l := &load{web: web, raw: raw, stop: make(chan struct{})}
	deadline := time.Now().Add(3 * time.Minute)
	for i := 0; i < 2; i++ {
		l.wg.Add(3)
		go l.keepAlive(deadline)
		go l.loop(deadline, kindNewConn, l.newConn)
		go l.loop(deadline, kindTCP, l.tcp)
	}
	t.Cleanup(l.finish)
	return l
}

const maxIterations = 200000

func (l *load) stopped() bool {
	select {
	case <-l.stop:
		return true
	default:
		return false
	}
}

func (l *load) fail(kind int, err error) {
	l.failed.Add(1)
	l.mu.Lock()
	if len(l.errs) < 10 {
		l.errs = append(l.errs, kindNames[kind]+": "+err.Error())
	}
	l.mu.Unlock()
}

func (l *load) seen(kind int, name string) {
	l.ok.Add(1)
	l.last[kind].Store(&name)
}

func (l *load) loop(deadline time.Time, kind int, once func() (string, error)) {
	defer l.wg.Done()
	for i := 0; i < maxIterations && !l.stopped() && time.Now().Before(deadline); i++ {
		name, err := once()
		if err != nil {
			l.fail(kind, err)
			continue
		}
		l.seen(kind, name)
	}
}

func readHTTP(c net.Conn, br *bufio.Reader) (name string, closing bool, err error) {
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return "", false, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return "", false, err
	}
	if resp.StatusCode != 200 {
		return "", false, fmt.Errorf("status %d: %s", resp.StatusCode, body)
	}
	return string(body), resp.Close, nil
}

// keepAlive sends requests on one connection for as long as the server
// keeps it open, then opens another. A request is never retried.
func (l *load) keepAlive(deadline time.Time) {
	defer l.wg.Done()
	var c net.Conn
	var br *bufio.Reader
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	for i := 0; i < maxIterations && !l.stopped() && time.Now().Before(deadline); i++ {
		if c == nil {
			var err error
			if c, err = net.DialTimeout("tcp", l.web, 5*time.Second); err != nil {
				c = nil
				l.fail(kindKeepAlive, err)
				continue
			}
			br = bufio.NewReader(c)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		_, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: t\r\n\r\n")
		var name string
		var closing bool
		if err == nil {
			name, closing, err = readHTTP(c, br)
		}
		if err != nil {
			l.fail(kindKeepAlive, err)
			c.Close()
			c = nil
			continue
		}
		l.seen(kindKeepAlive, name)
		if closing {
			c.Close()
			c = nil
		}
	}
}

func (l *load) newConn() (string, error) { return httpOnce(l.web) }

func httpOnce(addr string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"); err != nil {
		return "", err
	}
	name, _, err := readHTTP(c, bufio.NewReader(c))
	return name, err
}

func (l *load) tcp() (string, error) { return tcpOnce(l.raw) }

// tcpOnce reads the server's name and checks one echoed line.
func tcpOnce(addr string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	name, err := r.ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("read name: %w", err)
	}
	if _, err := io.WriteString(c, "ping\n"); err != nil {
		return "", err
	}
	if echo, err := r.ReadString('\n'); err != nil || echo != "ping\n" {
		return "", fmt.Errorf("echo %q: %v", echo, err)
	}
	return strings.TrimSpace(name), nil
}

// finish stops the clients and waits for them.
func (l *load) finish() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.wg.Wait()
}

// check stops the load and fails the test on any failed request.
func (l *load) check(t *testing.T) {
	t.Helper()
	l.finish()
	t.Logf("load: %d requests ok, %d failed", l.ok.Load(), l.failed.Load())
	if n := l.failed.Load(); n > 0 {
		t.Errorf("%d failed requests or connections; first ones:\n%s", n, strings.Join(l.errs, "\n"))
	}
	if l.ok.Load() == 0 {
		t.Error("no request went through")
	}
}

// reachesSet waits until every kind of client has been served from set
// (server names starting with prefix).
func (l *load) reachesSet(t *testing.T, prefix string) {
	t.Helper()
	for k := range l.last {
		k := k
		l.last[k].Store(nil)
		waitFor(t, 15*time.Second, kindNames[k]+" traffic reaching servers "+prefix+"*", func() bool {
			p := l.last[k].Load()
			return p != nil && strings.HasPrefix(*p, prefix)
		})
	}
}

// freshReachesSet checks that a new connection made now goes to set: once
// a reload has returned, the old worker accepts nothing.
func freshReachesSet(t *testing.T, web, raw, prefix string) {
	t.Helper()
	if name, err := httpOnce(web); err != nil || !strings.HasPrefix(name, prefix) {
		t.Fatalf("new http connection after reload: got %q (%v), want a server %s*", name, err, prefix)
	}
	if name, err := tcpOnce(raw); err != nil || !strings.HasPrefix(name, prefix) {
		t.Fatalf("new tcp connection after reload: got %q (%v), want a server %s*", name, err, prefix)
	}
}

// stream is a long-lived connection (TCP or WebSocket) that must survive
// reloads: each round trip echoes a line.
type stream struct {
	c net.Conn
	r *bufio.Reader
}

func openTCPStream(t *testing.T, addr string) *stream {
	c := testutil.Dial(t, addr)
	c.SetDeadline(time.Now().Add(3 * time.Minute))
	s := &stream{c: c, r: bufio.NewReader(c)}
	testutil.ReadLine(t, s.r) // the server's name
	return s
}

func openWebSocket(t *testing.T, addr string) *stream {
	c := testutil.Dial(t, addr)
	c.SetDeadline(time.Now().Add(3 * time.Minute))
	io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
	s := &stream{c: c, r: bufio.NewReader(c)}
	resp, err := http.ReadResponse(s.r, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("websocket upgrade: %v %v", resp, err)
	}
	testutil.ReadLine(t, s.r) // the server's name
	return s
}

func (s *stream) roundTrip(t *testing.T, what string, i int) {
	t.Helper()
	msg := fmt.Sprintf("%s message %d", what, i)
	fmt.Fprintln(s.c, msg)
	if got, err := s.r.ReadString('\n'); err != nil || strings.TrimSpace(got) != msg {
		t.Fatalf("%s after reload %d: got %q (%v)", what, i, got, err)
	}
}

// end half-closes and expects the server to finish normally.
func (s *stream) end(t *testing.T, what string) {
	t.Helper()
	s.c.(*net.TCPConn).CloseWrite()
	if rest, err := io.ReadAll(s.r); err != nil || len(rest) != 0 {
		t.Fatalf("%s did not end normally: %q %v", what, rest, err)
	}
}

func TestReloadUnderLoad(t *testing.T) {
	setA := []*pair{startPair(t, "a1"), startPair(t, "a2")}
	setB := []*pair{startPair(t, "b1"), startPair(t, "b2")}
	dir := shortDir(t)
	web, raw := testutil.FreeAddr(t), testutil.FreeAddr(t)
	cfgA, cfgB := lbConfig(dir, web, raw, setA), lbConfig(dir, web, raw, setB)
	file := filepath.Join(dir, "sluice.toml")
	os.WriteFile(file, []byte(cfgA), 0o644)
	l := startLB(t, binary, file, filepath.Join(dir, "ctl.sock"))
	pid := l.cmd.Process.Pid

	tcpStream := openTCPStream(t, raw)
	ws := openWebSocket(t, web)
	ld := startLoad(t, web, raw)
	ld.reachesSet(t, "a")
	for i := 1; i <= 20; i++ {
		cfg, want := cfgB, "b"
		if i%2 == 0 {
			cfg, want = cfgA, "a"
		}
		l.reload(cfg)
		freshReachesSet(t, web, raw, want)
		ld.reachesSet(t, want)
		tcpStream.roundTrip(t, "tcp stream", i)
		ws.roundTrip(t, "websocket", i)
	}
	ld.check(t)
	tcpStream.end(t, "tcp stream")
	ws.end(t, "websocket")
	if st := l.status(); st.PID != pid || st.Generation != 21 {
		t.Errorf("status after 20 reloads: pid %d generation %d, want pid %d generation 21", st.PID, st.Generation, pid)
	}
}

func TestReloadRefusesInvalidConfig(t *testing.T) {
	setA := []*pair{startPair(t, "a1")}
	setB := []*pair{startPair(t, "b1")}
	dir := shortDir(t)
	web, raw := testutil.FreeAddr(t), testutil.FreeAddr(t)
	file := filepath.Join(dir, "sluice.toml")
	os.WriteFile(file, []byte(lbConfig(dir, web, raw, setA)), 0o644)
	l := startLB(t, binary, file, filepath.Join(dir, "ctl.sock"))
	before := l.status()
	ld := startLoad(t, web, raw)
	ld.reachesSet(t, "a")

	for _, tc := range []struct {
		desc, src, want string
	}{
		{"unknown backend", strings.Replace(lbConfig(dir, web, raw, setB), `default_backend = "app"`, `default_backend = "nope"`, 1),
			`frontend.web.default_backend: backend "nope" does not exist`},
		{"broken TOML", lbConfig(dir, web, raw, setB) + "\nthis is not toml\n", "TOML syntax"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			os.WriteFile(file, []byte(tc.src), 0o644)
			out, code := l.run("reload")
			if code == 0 || !strings.Contains(out, tc.want) {
				t.Fatalf("reload of an invalid file: exit %d, want non-zero with %q:\n%s", code, tc.want, out)
			}
			if st := l.status(); st.WorkerPID != before.WorkerPID {
				t.Fatalf("worker replaced (%d -> %d) by a refused reload", before.WorkerPID, st.WorkerPID)
			}
			freshReachesSet(t, web, raw, "a")
		})
	}
	l.reload(lbConfig(dir, web, raw, setB))
	freshReachesSet(t, web, raw, "b")
	ld.reachesSet(t, "b")
	ld.check(t)
}

func TestUpgradeUnderLoad(t *testing.T) {
	// The master runs from a copy of the binary; the upgrade replaces the
	// file with a build of another version, as a package manager would.
	bindir := shortDir(t)
	exe := filepath.Join(bindir, "sluice")
	if out, err := exec.Command("cp", binary, exe).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	next := filepath.Join(bindir, "sluice.next")
	if out, err := exec.Command("go", "build", "-ldflags", "-X main.Version=upgraded", "-o", next, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	setA := []*pair{startPair(t, "a1"), startPair(t, "a2")}
	dir := shortDir(t)
	web, raw := testutil.FreeAddr(t), testutil.FreeAddr(t)
	file := filepath.Join(dir, "sluice.toml")
	os.WriteFile(file, []byte(lbConfig(dir, web, raw, setA)), 0o644)
	l := startLB(t, exe, file, filepath.Join(dir, "ctl.sock"))
	before := l.status()
	tcpStream := openTCPStream(t, raw)
	ld := startLoad(t, web, raw)
	ld.reachesSet(t, "a")

	if err := os.Rename(next, exe); err != nil {
		t.Fatal(err)
	}
	out, code := l.run("upgrade")
	if code != 0 {
		t.Fatalf("upgrade: exit %d\n%s", code, out)
	}
	after := l.status()
	if after.PID != before.PID || after.PID != l.cmd.Process.Pid {
		t.Errorf("master PID changed: %d -> %d", before.PID, after.PID)
	}
	if after.Version != "upgraded" || after.WorkerPID == before.WorkerPID {
		t.Errorf("after upgrade: version %q worker %d (was %d), want the new binary on a new worker", after.Version, after.WorkerPID, before.WorkerPID)
	}
	freshReachesSet(t, web, raw, "a")
	ld.reachesSet(t, "a")
	tcpStream.roundTrip(t, "tcp stream", 1)
	// A reload after the upgrade still works (the new image owns everything).
	l.reload(lbConfig(dir, web, raw, []*pair{startPair(t, "b1")}))
	freshReachesSet(t, web, raw, "b")
	ld.reachesSet(t, "b")
	tcpStream.roundTrip(t, "tcp stream", 2)
	ld.check(t)
	tcpStream.end(t, "tcp stream")
}

func TestTakeoverUnderLoad(t *testing.T) {
	setA := []*pair{startPair(t, "a1")}
	setB := []*pair{startPair(t, "b1")}
	dirA, dirB := shortDir(t), shortDir(t)
	web, raw := testutil.FreeAddr(t), testutil.FreeAddr(t)
	fileA, fileB := filepath.Join(dirA, "a.toml"), filepath.Join(dirB, "b.toml")
	os.WriteFile(fileA, []byte(lbConfig(dirA, web, raw, setA)), 0o644)
	os.WriteFile(fileB, []byte(lbConfig(dirB, web, raw, setB)), 0o644)
	a := startLB(t, binary, fileA, filepath.Join(dirA, "ctl.sock"))
	// Server state travels with the sockets: the new master's worker starts
	// with the server the old one had in maintenance.
	drained := startPair(t, "b-maint")
	os.WriteFile(fileB, []byte(lbConfig(dirB, web, raw, append(setB, drained))), 0o644)
	os.WriteFile(fileA, []byte(lbConfig(dirA, web, raw, append(setA, drained))), 0o644)
	a.reload(lbConfig(dirA, web, raw, append(setA, drained)))
	for _, be := range []string{"app", "rawb"} {
		if r, _, err := supervisor.Control(a.ctl, supervisor.Request{Cmd: "set-server-state", Backend: be, Server: "b-maint", Admin: "maint"}, 10*time.Second); err != nil || !r.OK {
			t.Fatalf("set-server-state: %v %s", err, r.Error)
		}
	}
	ld := startLoad(t, web, raw)
	ld.reachesSet(t, "a")

	b := startLB(t, binary, fileB, filepath.Join(dirB, "ctl.sock"), "-x", a.ctl)
	if b.status().PID == a.status().PID {
		t.Fatal("same master")
	}
	out, code := a.run("stop", "-drain")
	if code != 0 {
		t.Fatalf("stop -drain: exit %d\n%s", code, out)
	}
	select {
	case <-a.done:
	case <-time.After(20 * time.Second):
		t.Fatal("old master did not exit after stop -drain")
	}
	freshReachesSet(t, web, raw, "b")
	ld.reachesSet(t, "b")
	ld.check(t)
	if n, c := drained.requests.Load(), drained.tcpB.Accepted.Load(); n+c > 0 {
		t.Errorf("the server in maintenance got %d http requests and %d tcp connections", n, c)
	}
}

func TestReloadKeepsServerState(t *testing.T) {
	ready, drained, down, maint := startPair(t, "s-ready"), startPair(t, "s-drained"), startPair(t, "s-down"), startPair(t, "s-maint")
	dir := shortDir(t)
	web, raw := testutil.FreeAddr(t), testutil.FreeAddr(t)
	file := filepath.Join(dir, "sluice.toml")
	all := []*pair{ready, drained, down, maint}
	os.WriteFile(file, []byte(lbConfig(dir, web, raw, all)), 0o644)
	l := startLB(t, binary, file, filepath.Join(dir, "ctl.sock"))

	// Set the state before any traffic, on both backends (http and tcp).
	f := false
	for _, be := range []string{"app", "rawb"} {
		for _, req := range []supervisor.Request{
			{Cmd: "set-server-state", Backend: be, Server: "s-drained", Admin: "drain"},
			{Cmd: "set-server-state", Backend: be, Server: "s-maint", Admin: "maint"},
			{Cmd: "set-server-state", Backend: be, Server: "s-down", Up: &f},
		} {
			if r, _, err := supervisor.Control(l.ctl, req, 10*time.Second); err != nil || !r.OK {
				t.Fatalf("%+v: %v %s", req, err, r.Error)
			}
		}
	}
	before, _, err := supervisor.Control(l.ctl, map[string]any{"cmd": "show-servers"}, 10*time.Second)
	if err != nil || !before.OK {
		t.Fatalf("show-servers: %v %s", err, before.Error)
	}
	lastChange := map[string]int64{}
	for _, s := range before.Servers {
		lastChange[s.Backend+"/"+s.Server] = s.LastChange
	}
	// A new server joins on reload; the others keep their state.
	newcomer := startPair(t, "s-new")
	l.reload(lbConfig(dir, web, raw, append(all, newcomer)))
	l.reload(lbConfig(dir, web, raw, append(all, newcomer))) // and once more
	r, _, err := supervisor.Control(l.ctl, map[string]any{"cmd": "show-servers"}, 10*time.Second)
	if err != nil || !r.OK {
		t.Fatalf("show-servers: %v %s", err, r.Error)
	}
	want := map[string]string{"s-ready": "ready/up", "s-drained": "drain/up", "s-maint": "maint/up", "s-down": "ready/down", "s-new": "ready/up"}
	for _, s := range r.Servers {
		health := "up"
		if !s.Up {
			health = "down"
		}
		if got := s.Admin + "/" + health; got != want[s.Server] {
			t.Errorf("%s/%s after reload: %s, want %s", s.Backend, s.Server, got, want[s.Server])
		}
		// lastchg on the stats page counts from the last real change.
		if b, ok := lastChange[s.Backend+"/"+s.Server]; ok && s.LastChange != b {
			t.Errorf("%s/%s: last change %d after reload, was %d", s.Backend, s.Server, s.LastChange, b)
		}
	}
	seen := map[string]int{}
	for i := 0; i < 20; i++ {
		name, err := httpOnce(web)
		if err != nil {
			t.Fatal(err)
		}
		seen[name]++
		if name, err = tcpOnce(raw); err != nil {
			t.Fatal(err)
		}
		seen[name]++
	}
	if seen["s-ready"] == 0 || seen["s-new"] == 0 || len(seen) != 2 {
		t.Errorf("servers reached: %v, want only s-ready and s-new", seen)
	}
	for _, p := range []*pair{drained, down, maint} {
		if n, c := p.requests.Load(), p.tcpB.Accepted.Load(); n+c > 0 {
			t.Errorf("%s got %d http requests and %d tcp connections", p.name, n, c)
		}
	}
}

func TestWorkerRestartedAfterCrash(t *testing.T) {
	dir := shortDir(t)
	web, raw := testutil.FreeAddr(t), testutil.FreeAddr(t)
	file := filepath.Join(dir, "sluice.toml")
	os.WriteFile(file, []byte(lbConfig(dir, web, raw, []*pair{startPair(t, "a1")})), 0o644)
	l := startLB(t, binary, file, filepath.Join(dir, "ctl.sock"))
	before := l.status()
	syscall.Kill(before.WorkerPID, syscall.SIGKILL)
	waitFor(t, 20*time.Second, "a new worker", func() bool {
		r, _, err := supervisor.Control(l.ctl, map[string]any{"cmd": "status"}, 5*time.Second)
		return err == nil && r.WorkerPID > 0 && r.WorkerPID != before.WorkerPID
	})
	freshReachesSet(t, web, raw, "a")
	if !strings.Contains(l.logs.String(), "worker died") {
		t.Errorf("the crash was not logged:\n%s", l.logs.String())
	}
}

func TestSystemdNotify(t *testing.T) {
	dir := shortDir(t)
	notify := filepath.Join(dir, "notify")
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notify, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	web, raw := testutil.FreeAddr(t), testutil.FreeAddr(t)
	file := filepath.Join(dir, "sluice.toml")
	src := lbConfig(dir, web, raw, []*pair{startPair(t, "a1")})
	os.WriteFile(file, []byte(src), 0o644)
	l := startLBEnv(t, []string{"NOTIFY_SOCKET=" + notify}, binary, file, filepath.Join(dir, "ctl.sock"))
	next := func() string {
		ln.SetReadDeadline(time.Now().Add(20 * time.Second))
		buf := make([]byte, 4096)
		n, err := ln.Read(buf)
		if err != nil {
			t.Fatalf("no notification: %v", err)
		}
		return string(buf[:n])
	}
	mainpid := fmt.Sprintf("MAINPID=%d\n", l.cmd.Process.Pid)
	if got := next(); !strings.Contains(got, "READY=1\n") || !strings.Contains(got, mainpid) {
		t.Fatalf("first notification %q, want READY=1 and %s", got, mainpid)
	}
	l.cmd.Process.Signal(syscall.SIGHUP)
	if got := next(); !strings.Contains(got, "RELOADING=1\n") || !strings.Contains(got, "MONOTONIC_USEC=") {
		t.Fatalf("notification on SIGHUP %q, want RELOADING=1", got)
	}
	if got := next(); !strings.Contains(got, "READY=1\n") || !strings.Contains(got, mainpid) {
		t.Fatalf("notification after reload %q, want READY=1 and %s", got, mainpid)
	}
	l.cmd.Process.Signal(syscall.SIGTERM)
	if got := next(); !strings.Contains(got, "STOPPING=1\n") {
		t.Fatalf("notification on SIGTERM %q, want STOPPING=1", got)
	}
}

// TestWorkerRestartKeepsServerState: a worker killed with SIGKILL is
// restarted with the server state the master last heard from it, set
// through the admin API (which the master never sees) as through the
// control socket: maintenance, weights, health down and the time of the
// last health change all survive, and no traffic reaches the servers kept
// out of it.
func TestWorkerRestartKeepsServerState(t *testing.T) {
	ready, maint, zero, down, heavy := startPair(t, "s-ready"), startPair(t, "s-maint"), startPair(t, "s-zero"), startPair(t, "s-down"), startPair(t, "s-heavy")
	dir := shortDir(t)
	web, raw, statsAddr := testutil.FreeAddr(t), testutil.FreeAddr(t), testutil.FreeAddr(t)
	file := filepath.Join(dir, "sluice.toml")
	token := filepath.Join(dir, "token")
	os.WriteFile(token, []byte("sekret\n"), 0o600)
	src := lbConfig(dir, web, raw, []*pair{ready, maint, zero, down, heavy}) +
		fmt.Sprintf("\n[stats]\nbind = %q\nadmin_token_file = %q\n", statsAddr, token)
	os.WriteFile(file, []byte(src), 0o644)
	l := startLB(t, binary, file, filepath.Join(dir, "ctl.sock"))

	// Through the stats admin API, inside the worker.
	admin := func(path, form string) {
		t.Helper()
		req, _ := http.NewRequest("POST", "http://"+statsAddr+path, strings.NewReader(form))
		req.Header.Set("Authorization", "Bearer sekret")
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("POST %s %s: %d %s", path, form, resp.StatusCode, body)
		}
	}
	// Through the control socket, by way of the master.
	f, three := false, 3
	for _, be := range []string{"app", "rawb"} {
		admin("/api/servers/"+be+"/s-maint/state", "state=maint")
		admin("/api/servers/"+be+"/s-zero/weight", "weight=0")
		for _, req := range []supervisor.Request{
			{Cmd: "set-server-state", Backend: be, Server: "s-down", Up: &f},
			{Cmd: "set-server-state", Backend: be, Server: "s-heavy", Weight: &three},
		} {
			if r, _, err := supervisor.Control(l.ctl, req, 10*time.Second); err != nil || !r.OK {
				t.Fatalf("%+v: %v %s", req, err, r.Error)
			}
		}
	}
	want := map[string]string{"s-ready": "ready/up/1", "s-maint": "maint/up/1", "s-zero": "ready/up/0", "s-down": "ready/down/1", "s-heavy": "ready/up/3"}
	describe := func(s engine.ServerState) string {
		health := "up"
		if !s.Up {
			health = "down"
		}
		return fmt.Sprintf("%s/%s/%d", s.Admin, health, s.Weight)
	}
	// The worker pushes changes made behind the master's back within a
	// moment; wait until the master has them all.
	var before map[string]int64 // last change by backend/server
	waitFor(t, 10*time.Second, "the master to know the state set through the admin API", func() bool {
		r, _, err := supervisor.Control(l.ctl, map[string]any{"cmd": "show-servers", "known": true}, 5*time.Second)
		if err != nil || !r.OK || len(r.Servers) != 10 {
			return false
		}
		before = map[string]int64{}
		for _, s := range r.Servers {
			if describe(s) != want[s.Server] {
				return false
			}
			before[s.Backend+"/"+s.Server] = s.LastChange
		}
		return true
	})

	old := l.status()
	syscall.Kill(old.WorkerPID, syscall.SIGKILL)
	waitFor(t, 20*time.Second, "a new worker", func() bool {
		r, _, err := supervisor.Control(l.ctl, map[string]any{"cmd": "status"}, 5*time.Second)
		return err == nil && r.WorkerPID > 0 && r.WorkerPID != old.WorkerPID
	})

	r, _, err := supervisor.Control(l.ctl, map[string]any{"cmd": "show-servers"}, 10*time.Second)
	if err != nil || !r.OK || len(r.Servers) != 10 {
		t.Fatalf("show-servers from the new worker: %v %s (%d servers)", err, r.Error, len(r.Servers))
	}
	for _, s := range r.Servers {
		if got := describe(s); got != want[s.Server] {
			t.Errorf("%s/%s after the crash: %s, want %s", s.Backend, s.Server, got, want[s.Server])
		}
		if b := before[s.Backend+"/"+s.Server]; s.LastChange != b {
			t.Errorf("%s/%s: last change %s after the crash, was %s", s.Backend, s.Server,
				time.Unix(0, s.LastChange).Format(time.RFC3339Nano), time.Unix(0, b).Format(time.RFC3339Nano))
		}
	}
	seen := map[string]int{}
	for i := 0; i < 20; i++ {
		name, err := httpOnce(web)
		if err != nil {
			t.Fatal(err)
		}
		seen[name]++
		if name, err = tcpOnce(raw); err != nil {
			t.Fatal(err)
		}
		seen[name]++
	}
	if seen["s-ready"] == 0 || seen["s-heavy"] == 0 || len(seen) != 2 {
		t.Errorf("servers reached after the crash: %v, want only s-ready and s-heavy", seen)
	}
	for _, p := range []*pair{maint, zero, down} {
		if n, c := p.requests.Load(), p.tcpB.Accepted.Load(); n+c > 0 {
			t.Errorf("%s got %d http requests and %d tcp connections", p.name, n, c)
		}
	}
	if !strings.Contains(l.logs.String(), "servers_restored=10") {
		t.Errorf("the restart does not tell that it restored the state:\n%s", l.logs.String())
	}
}
