package supervisor

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"sluice/conf"
	"sluice/engine"
	"sluice/internal/sdnotify"
	"sluice/internal/sockets"
)

// upgrade re-executes the binary at m.exe in this process (same PID),
// handing it every listener, the control socket, the workers' pipes and the
// pending request (call, may be nil) through descriptors that survive exec
// and a manifest in a memfd. The new image adopts the workers and reloads
// onto a worker of the new binary. upgrade returns only on failure.
func (m *master) upgrade(call *ctlCall) error {
	sdnotify.Reloading("upgrading: checking " + m.exe)
	defer sdnotify.Ready(m.status()) // reached only on failure
	if err := checkBinary(m.exe, m.file); err != nil {
		return err
	}
	st := upgradeState{File: m.file, Config: m.src, Debug: m.debug, Gen: m.gen, Reply: -1, NodeMaint: m.nodeMaint()}
	var fds []int
	defer func() { // reached only on failure: exec replaced us otherwise
		for _, fd := range fds {
			syscall.Close(fd)
		}
	}()
	inherit := func(f *os.File, err error) (int, error) {
		if err != nil {
			return -1, err
		}
		defer f.Close()
		fd, err := sockets.Inheritable(f)
		if err != nil {
			return -1, err
		}
		fds = append(fds, fd)
		return fd, nil
	}
	for _, k := range sortedKeys(m.socks) {
		fd, err := inherit(m.socks[k].File())
		if err != nil {
			return fmt.Errorf("socket %s: %w", k, err)
		}
		st.Sockets = append(st.Sockets, sockets.Entry{Network: k.Network, Addr: k.Addr, Role: m.roles[k], FD: fd})
	}
	if m.ctl != nil {
		fd, err := inherit(m.ctl.File())
		if err != nil {
			return fmt.Errorf("control socket: %w", err)
		}
		st.Sockets = append(st.Sockets, sockets.Entry{Network: "unix", Addr: m.ctlPath, Role: sockets.RoleControl, FD: fd})
	}
	workers := []*worker{}
	if m.cur != nil {
		workers = append(workers, m.cur)
	}
	for w := range m.old {
		workers = append(workers, w)
	}
	for _, w := range workers {
		fd, err := inherit(w.conn.File())
		if err != nil {
			return fmt.Errorf("worker %d: %w", w.pid, err)
		}
		st.Workers = append(st.Workers, adoptWorker{PID: w.pid, FD: fd, Gen: w.gen, Current: w == m.cur})
	}
	if call != nil {
		fd, err := inherit(call.conn.File())
		if err != nil {
			return err
		}
		st.Reply = fd
	}
	mfd, err := unix.MemfdCreate("sluice-upgrade", 0) // no MFD_CLOEXEC: the new image reads it
	if err != nil {
		return fmt.Errorf("memfd: %w", err)
	}
	fds = append(fds, mfd)
	b, _ := json.Marshal(st)
	mf := os.NewFile(uintptr(mfd), "upgrade")
	if _, err := mf.Write(b); err != nil {
		return err
	}
	if _, err := mf.Seek(0, io.SeekStart); err != nil {
		return err
	}
	argv := []string{m.exe, "run", "-f", m.file}
	if m.debug {
		argv = append(argv, "-debug")
	}
	env := append(os.Environ(), envUpgradeFD+"="+strconv.Itoa(mfd))
	m.log.Info("upgrading: executing the binary again", "path", m.exe, "pid", os.Getpid())
	err = syscall.Exec(m.exe, argv, env)
	return fmt.Errorf("exec %s: %w", m.exe, err)
}

// resumeMaster is the new image after an upgrade: it takes over what the
// old image handed down, then reloads onto a worker of this binary.
func resumeMaster(m *master, fdStr string, sigs chan os.Signal) int {
	os.Unsetenv(envUpgradeFD)
	fd, err := strconv.Atoi(fdStr)
	if err != nil {
		m.log.Error("bad "+envUpgradeFD, "value", fdStr)
		return 1
	}
	mf := os.NewFile(uintptr(fd), "upgrade")
	b, err := io.ReadAll(mf)
	mf.Close()
	var st upgradeState
	if err == nil {
		err = json.Unmarshal(b, &st)
	}
	if err != nil {
		m.log.Error("cannot read the upgrade manifest", "err", err)
		return 1
	}
	m.file, m.src, m.gen, m.maint = st.File, st.Config, st.Gen, st.NodeMaint
	m.cfg, err = conf.Parse(st.File, st.Config)
	if err != nil {
		// The running workers' configuration no longer validates with this
		// binary; keep serving with them and process-wide defaults.
		m.log.Warn("the running configuration does not validate with this binary", "err", err)
		m.cfg, _ = conf.Parse(st.File, nil)
	}
	if err := m.applyLogging(m.cfg); err != nil {
		m.log.Warn("process logs stay on stderr", "err", err)
	}
	// The track file stays as the old image left it until a worker of
	// this one reports (the reload below): an upgrade is not a fault.
	m.track = &tracker{path: m.cfg.Global.TrackFile, log: m.log}
	m.initBGP() // the old image's sessions ended with it: they start again
	var listeners []sockets.Entry
	m.roles = map[sockets.Key]string{}
	for _, e := range st.Sockets {
		if e.Role == sockets.RoleControl {
			f := os.NewFile(uintptr(e.FD), "control")
			l, err := net.FileListener(f)
			f.Close()
			if err != nil {
				m.log.Error("cannot adopt the control socket", "err", err)
				continue
			}
			m.ctl, m.ctlPath = l.(*net.UnixListener), e.Addr
			m.ctl.SetUnlinkOnClose(false)
			var s unix.Stat_t
			if unix.Stat(m.ctlPath, &s) == nil {
				m.ctlIno = s.Ino
			}
			continue
		}
		listeners = append(listeners, e)
		m.roles[e.Key()] = e.Role
	}
	m.socks, err = sockets.Adopt(listeners)
	if err != nil {
		m.log.Error("cannot adopt the listening sockets", "err", err)
		return 1
	}
	for _, aw := range st.Workers {
		f := os.NewFile(uintptr(aw.FD), "worker")
		c, err := net.FileConn(f)
		f.Close()
		p, perr := os.FindProcess(aw.PID)
		if err != nil || perr != nil {
			m.log.Error("cannot adopt a worker", "worker_pid", aw.PID, "err", err, "find", perr)
			continue
		}
		w := newWorker(aw.Gen, p, c.(*net.UnixConn))
		close(w.ready) // it was ready long ago
		go w.wait(m.events)
		go w.read(false)
		w.onNode = m.track.refresh
		if aw.Current {
			m.cur = w
			m.track.setCur(w)
		} else {
			w.stopping = true
			m.old[w] = true
		}
	}
	var reply *net.UnixConn
	if st.Reply >= 0 {
		f := os.NewFile(uintptr(st.Reply), "reply")
		if c, err := net.FileConn(f); err == nil {
			reply = c.(*net.UnixConn)
		}
		f.Close()
	}
	m.writePIDFile(m.cfg.Global.PIDFile)
	if m.ctl != nil {
		go m.serveControl(m.ctl)
	}
	m.log.Info("upgraded: this binary now runs the master", "version", engine.Version, "pid", os.Getpid(), "adopted_workers", len(st.Workers))
	err = m.reload()
	r := m.statusReply()
	if err != nil {
		m.log.Error("reload after upgrade failed; the previous worker keeps serving", "err", err)
		r = Reply{Error: "upgrade: the new binary runs the master, but its reload failed: " + err.Error()}
		m.applyBGP(m.cfg)
	}
	if reply != nil {
		writeReply(reply, r, nil)
		reply.Close()
	}
	if m.cur == nil {
		m.restart = closedTimeChan()
	}
	return m.loop(sigs)
}

func closedTimeChan() <-chan time.Time {
	ch := make(chan time.Time, 1)
	ch <- time.Now()
	return ch
}
