package main

import (
	byteorder "encoding/binary"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"sluice/supervisor"
)

// trackWatch counts the renames onto a track file (each write of the
// master is one) with inotify on its directory.
type trackWatch struct {
	fd   int
	name string
}

func watchTrack(t *testing.T, path string) *trackWatch {
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := unix.InotifyAddWatch(fd, filepath.Dir(path), unix.IN_MOVED_TO); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return &trackWatch{fd: fd, name: filepath.Base(path)}
}

// writes returns how many times the file was replaced since the last call.
func (w *trackWatch) writes() int {
	n := 0
	buf := make([]byte, 64<<10)
	for {
		k, err := unix.Read(w.fd, buf)
		if k <= 0 || err != nil {
			return n
		}
		for off := 0; off+unix.SizeofInotifyEvent <= k; {
			// struct inotify_event: wd, mask, cookie, len (uint32 each), name.
			nameLen := int(byteorder.NativeEndian.Uint32(buf[off+12:]))
			name := strings.TrimRight(string(buf[off+unix.SizeofInotifyEvent:off+unix.SizeofInotifyEvent+nameLen]), "\x00")
			if name == w.name {
				n++
			}
			off += unix.SizeofInotifyEvent + nameLen
		}
	}
}

func readTrack(t *testing.T, path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("track file: %v", err)
	}
	return strings.TrimSpace(string(b))
}

// TestTrackFile: the master keeps global.track_file at 0 while the node can
// serve; a reload writes nothing (no flap); maintenance is 1 (hand over) and
// survives a reload; a worker crash and a vital frontend without a server
// are 254 (fault) until they end; a stop writes 1 before the listeners
// close and keeps serving for stop_grace.
func TestTrackFile(t *testing.T) {
	dir := shortDir(t)
	ctl, track := filepath.Join(dir, "ctl.sock"), filepath.Join(dir, "node.track")
	be, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	beAddr := be.Addr().String()
	serve := func(l net.Listener) {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}
	go serve(be)
	wl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	web := wl.Addr().String()
	wl.Close()
	src := fmt.Sprintf(`[global]
control_socket = %q
vital_frontends = ["web"]
track_file = "node.track"
stop_grace = "300ms"

[frontend.web]
mode = "tcp"
bind = [%q]
default_backend = "app"

[backend.app.health]
check = "tcp"
interval = "20ms"
fall = 1
rise = 1

[[backend.app.server]]
name = "s1"
address = %q
`, ctl, web, beAddr)
	file := filepath.Join(dir, "sluice.toml")
	os.WriteFile(file, []byte(src), 0o644)
	w := watchTrack(t, track)
	l := startLB(t, binary, file, ctl)
	waitFor(t, 5*time.Second, "track file 0", func() bool { return readTrack(t, track) == "0" })
	w.writes()

	l.reload(src)
	if n, got := w.writes(), readTrack(t, track); n != 0 || got != "0" {
		t.Errorf("a reload wrote the track file %d times (now %q); want no write: a reload is not a fault", n, got)
	}

	ctlCmd := func(state string) {
		t.Helper()
		out, err := exec.Command(binary, "ctl", "-f", file, "set", "node", state).CombinedOutput()
		if err != nil {
			t.Fatalf("ctl set node %s: %v\n%s", state, err, out)
		}
	}
	ctlCmd("maint")
	// The master writes before it answers: no wait.
	if got := readTrack(t, track); got != "1" {
		t.Errorf("in maintenance the track file says %q, want 1", got)
	}
	if out, err := exec.Command(binary, "check", "--live", "-f", file).CombinedOutput(); err == nil || !strings.Contains(string(out), "maintenance") {
		t.Errorf("check --live in maintenance: %v %s; want a failure naming maintenance", err, out)
	}
	w.writes()
	l.reload(src)
	if r := l.status(); !r.NodeMaint || readTrack(t, track) != "1" || w.writes() != 0 {
		t.Errorf("after a reload in maintenance: node_maint %v, track %q; want maintenance kept, nothing written", r.NodeMaint, readTrack(t, track))
	}
	ctlCmd("ready")
	if got := readTrack(t, track); got != "0" {
		t.Errorf("out of maintenance the track file says %q, want 0", got)
	}

	// A worker crash is a fault until the restarted worker serves.
	w.writes()
	syscall.Kill(l.status().WorkerPID, syscall.SIGKILL)
	waitFor(t, 5*time.Second, "the crash written", func() bool { return w.writes() > 0 })
	waitFor(t, 10*time.Second, "track file 0 after the restart", func() bool { return readTrack(t, track) == "0" })
	if !strings.Contains(l.logs.String(), `reason="no worker running"`) {
		t.Errorf("the master did not say the node could not serve while no worker ran")
	}

	// The only server goes away: a fault at once (the health check's
	// event), back to 0 when it returns.
	be.Close()
	waitFor(t, 5*time.Second, "track file 254", func() bool { return readTrack(t, track) == "254" })
	be2, err := net.Listen("tcp", beAddr)
	if err != nil {
		t.Fatalf("listen again on %s: %v", beAddr, err)
	}
	defer be2.Close()
	go serve(be2)
	waitFor(t, 5*time.Second, "track file 0 again", func() bool { return readTrack(t, track) == "0" })

	// A stop: 1 first, and the frontend still accepts during stop_grace.
	l.cmd.Process.Signal(syscall.SIGTERM)
	waitFor(t, 5*time.Second, "track file 1 on stop", func() bool { return readTrack(t, track) == "1" })
	c, err := net.DialTimeout("tcp", web, time.Second)
	if err != nil {
		t.Errorf("the frontend refused a connection right after the track file said 1: %v; want it served for stop_grace", err)
	} else {
		c.Close()
	}
	select {
	case <-l.done:
	case <-time.After(10 * time.Second):
		t.Fatal("sluice did not stop")
	}
	// 254, not the 1 of "still serving": with weight -20 a 1 leaves this
	// node electable, and it would take the address with nothing behind it
	// should its peer fail.
	if got := readTrack(t, track); got != "254" {
		t.Errorf("after exit the track file says %q; want 254 (nothing serves)", got)
	}
	if _, _, err := supervisor.Control(ctl, map[string]any{"cmd": "status"}, time.Second); err == nil {
		t.Errorf("the master still answers after its stop")
	}
}

// TestTrackFileTakeover: `sluice run -x` hands one node's sockets from one
// master to another with the same track_file. The new master must not say
// fault while the old one serves (not at its start, nor when it fails to
// start), and the old master's stop after the hand-over must not leave its
// 1 over the new master's 0: the file follows whoever serves.
func TestTrackFileTakeover(t *testing.T) {
	t.Run("old master stops", func(t *testing.T) { trackFileTakeover(t, false) })
	t.Run("old master killed", func(t *testing.T) { trackFileTakeover(t, true) })
}

func trackFileTakeover(t *testing.T, killOld bool) {
	dir := shortDir(t)
	track := filepath.Join(dir, "node.track")
	be, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	go func() {
		for {
			c, err := be.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	wl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	web := wl.Addr().String()
	wl.Close()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	config := func(name, extraBind string) (file, ctl string) {
		ctl = filepath.Join(dir, name+".sock")
		extra := ""
		if extraBind != "" {
			extra = fmt.Sprintf("\n[frontend.extra]\nmode = \"tcp\"\nbind = [%q]\ndefault_backend = \"app\"\n", extraBind)
		}
		src := fmt.Sprintf(`[global]
control_socket = %q
vital_frontends = ["web"]
track_file = "node.track"

[frontend.web]
mode = "tcp"
bind = [%q]
default_backend = "app"
%s
[[backend.app.server]]
name = "s1"
address = %q
`, ctl, web, extra, be.Addr().String())
		file = filepath.Join(dir, name+".toml")
		if err := os.WriteFile(file, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		return file, ctl
	}
	fileA, ctlA := config("a", "")
	a := startLB(t, binary, fileA, ctlA)
	waitFor(t, 5*time.Second, "track file 0", func() bool { return readTrack(t, track) == "0" })

	// A takeover that fails (its extra frontend's address is taken): the
	// old master still serves, so the file must still say 0.
	w := watchTrack(t, track)
	fileB, _ := config("b", busy.Addr().String())
	if out, err := exec.Command(binary, "run", "-f", fileB, "-x", ctlA).CombinedOutput(); err == nil {
		t.Fatalf("the takeover with a busy address started: %s", out)
	}
	if n, got := w.writes(), readTrack(t, track); n != 0 || got != "0" {
		t.Errorf("a failed takeover wrote the track file %d times, now %q, while the old master serves; want no write, 0", n, got)
	}

	// A takeover that works, then the old master drains and exits.
	fileC, ctlC := config("c", "")
	startLB(t, binary, fileC, ctlC, "-x", ctlA)
	if got := readTrack(t, track); got != "0" {
		t.Errorf("with the new master serving, the track file says %q; want 0", got)
	}
	if killOld {
		// The old master dies instead: its worker, orphaned, must not
		// write "cannot serve" over the new master's verdict.
		oldWorker := a.status().WorkerPID
		a.cmd.Process.Signal(syscall.SIGKILL)
		<-a.done
		waitFor(t, 10*time.Second, "the orphaned worker to exit", func() bool {
			return syscall.Kill(oldWorker, 0) != nil
		})
	} else {
		if out, err := exec.Command(binary, "stop", "-drain", "-S", ctlA).CombinedOutput(); err != nil {
			t.Fatalf("stop the old master: %v\n%s", err, out)
		}
		select {
		case <-a.done:
		case <-time.After(10 * time.Second):
			t.Fatal("the old master did not stop")
		}
	}
	if got := readTrack(t, track); got != "0" {
		t.Errorf("after the old master's stop the track file says %q while the new master serves; want 0", got)
	}
	if out, err := exec.Command(binary, "check", "--live", "-f", fileC).CombinedOutput(); err != nil {
		t.Errorf("check --live on the new master: %v %s; want live, as the track file", err, out)
	}
}

// TestLiveWhileFileBroken: a configuration file half edited on disk does
// not make `check --live` fail on a node that serves (keepalived would move
// the VIP for nothing): the running master answers for the configuration
// it runs. With the master gone the broken file fails as before.
func TestLiveWhileFileBroken(t *testing.T) {
	dir := shortDir(t)
	be, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	ctl := filepath.Join(dir, "m.sock")
	file := filepath.Join(dir, "m.toml")
	src := fmt.Sprintf(`[global]
control_socket = %q

[frontend.web]
mode = "tcp"
bind = ["127.0.0.1:0"]
default_backend = "app"

[[backend.app.server]]
name = "s1"
address = %q
`, ctl, be.Addr().String())
	if err := os.WriteFile(file, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	l := startLB(t, binary, file, ctl)
	if err := os.WriteFile(file, []byte(src+"\n[frontend.half\nmode = \n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(binary, "check", "--live", "-f", file).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "live") {
		t.Fatalf("check --live with a broken file and a serving master: %v\n%s\nwant live (with a warning)", err, out)
	}
	l.cmd.Process.Signal(syscall.SIGQUIT)
	<-l.done
	if out, err := exec.Command(binary, "check", "--live", "-f", file).CombinedOutput(); err == nil {
		t.Fatalf("check --live with a broken file and no master passed:\n%s", out)
	}
}
