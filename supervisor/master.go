package supervisor

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sluice/internal/lograte"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"sluice/bgp"
	"sluice/conf"
	"sluice/engine"
	"sluice/internal/sdnotify"
	"sluice/internal/sockets"
	"sluice/stats"
)

const (
	workerReadyTimeout = time.Minute
	workerCallTimeout  = 10 * time.Second
	restartBackoffMax  = 10 * time.Second
)

// master owns the listening sockets and the control socket, and runs one
// worker (plus old ones still draining). Everything that changes its state
// happens on the goroutine running loop.
type master struct {
	log    *slog.Logger
	logs   *logSwitch // the handler under log, replaced when a reload changes global.log_*
	stderr io.Writer
	level  slog.Level
	file   string
	exe    string // the binary re-executed on upgrade
	debug  bool

	cfg *conf.Config // the configuration the current worker runs
	src []byte

	socks sockets.Set
	roles map[sockets.Key]string

	ctl     *net.UnixListener
	ctlPath string
	ctlIno  uint64 // the control socket's inode, so we never unlink a successor's
	// ctlRefused counts control connections closed at once: maxControlConns
	// were open (shown by status as control_refused).
	ctlRefused atomic.Uint64
	pidFile    string

	gen int
	cur *worker
	old map[*worker]bool // draining

	events  chan any // workerExit, *ctlCall
	restart <-chan time.Time
	backoff time.Duration
	// lost is the server state last heard from a worker that died, for the
	// worker restarted in its place.
	lost engine.State

	// track keeps global.track_file; maint is the node's maintenance as
	// the master last knew it, handed to every worker it starts.
	track *tracker
	maint bool
	// bgp announces [bgp]'s prefixes while the tracker's verdict allows.
	bgp *bgp.Speaker
}

// ctlCall is a control request waiting for the master's loop.
type ctlCall struct {
	req  Request
	conn *net.UnixConn
	done chan ctlResult
}

type ctlResult struct {
	reply    Reply
	files    []*os.File // attached as SCM_RIGHTS, then closed
	answered bool       // the loop wrote the reply itself
}

// ControlPath is where the control socket lives: global.control_socket, or
// sluice.sock next to the pid file, or nowhere (signals only).
func ControlPath(controlSocket, pidFile string) string {
	if controlSocket != "" {
		return controlSocket
	}
	if pidFile != "" {
		return filepath.Join(filepath.Dir(pidFile), "sluice.sock")
	}
	return ""
}

// runMaster starts a master from a validated configuration: sockets (taken
// from the master at takeover when set: sluice run -x), control socket, pid
// file, first worker. It returns the process exit code.
func runMaster(m *master, cfg *conf.Config, src []byte, takeover string, sigs chan os.Signal) int {
	m.cfg, m.src = cfg, src
	m.track = &tracker{path: cfg.Global.TrackFile, log: m.log}
	m.initBGP()
	if takeover != "" {
		// The old master serves until this one's worker is ready: its
		// verdict stands until then, and stands if this start fails.
		m.track.takingOver()
	}
	// Created at once, at 254: nothing serves until the first worker is ready.
	m.track.refresh()
	have := sockets.Set{}
	var state engine.State
	if takeover != "" {
		var oldPID int
		var err error
		have, oldPID, err = fetchSockets(takeover)
		if err != nil {
			m.log.Error("cannot take sockets over", "from", takeover, "err", err)
			return 1
		}
		m.log.Info("took listening sockets over", "from", takeover, "master_pid", oldPID, "count", len(have))
		// Server state comes along too, so the first worker does not send
		// traffic to servers the old master knows to be down or drained.
		if r, _, err := Control(takeover, Request{Cmd: "show-servers"}, workerCallTimeout); err == nil && r.OK {
			state = r.Servers
		} else {
			m.log.Warn("cannot read server state from the old master; starting without it", "err", err, "reply", r.Error)
		}
	}
	specs := engine.Listeners(cfg)
	socks, err := sockets.Bind(specs, have)
	if err != nil {
		have.Close()
		m.log.Error("cannot bind", "err", err)
		return 1
	}
	for k, s := range have {
		if _, used := socks[k]; !used {
			s.Close()
		}
	}
	m.socks, m.roles = socks, rolesOf(specs)
	m.parkListeners()
	if p := ControlPath(cfg.Global.ControlSocket, cfg.Global.PIDFile); p != "" {
		if err := m.listenControl(p, takeover); err != nil {
			m.log.Error("control socket", "err", err)
			m.socks.Close()
			return 1
		}
	} else {
		m.log.Warn("no control_socket (nor pid_file) configured: reload with SIGHUP, upgrade with SIGUSR2")
	}
	m.writePIDFile(cfg.Global.PIDFile)
	for _, k := range sortedKeys(m.socks) {
		m.log.Info("listening", "socket", k.String(), "role", m.roles[k])
	}
	// Sessions come up while the worker starts; nothing is announced
	// before it serves.
	m.applyBGP(cfg)
	w, err := m.startWorker(m.workerStart(cfg, src, state))
	if err == nil {
		err = w.waitReady(workerReadyTimeout)
	}
	if err != nil {
		if w != nil {
			w.proc.Kill()
		}
		m.log.Error("worker failed to start", "err", err)
		m.cleanup()
		return 1
	}
	m.cur = w
	m.track.setCur(w)
	m.log.Info("sluice started", "version", engine.Version, "config", m.file, "pid", os.Getpid(), "worker_pid", w.pid, "control", m.ctlPath)
	sdnotify.Ready(m.status())
	return m.loop(sigs)
}

func rolesOf(specs []sockets.Spec) map[sockets.Key]string {
	r := map[sockets.Key]string{}
	for _, sp := range specs {
		r[sp.Key] = sp.Role
	}
	return r
}

func (m *master) workerStart(cfg *conf.Config, src []byte, st engine.State) workerStart {
	m.gen++
	return workerStart{File: m.file, Config: src, State: st, Gen: m.gen, Debug: m.debug, NodeMaint: m.nodeMaint(), TrackFile: m.track.path}
}

// nodeMaint is the node's maintenance: as the current worker last
// reported it, else as the master last knew it.
func (m *master) nodeMaint() bool {
	if m.cur != nil {
		if r, ok := m.cur.nodeReport(); ok {
			m.maint = r.Maint
		}
	}
	return m.maint
}

func (m *master) status() string {
	if m.cur == nil {
		return "no worker"
	}
	return fmt.Sprintf("serving: worker %d (generation %d), %d listeners", m.cur.pid, m.cur.gen, len(m.socks))
}

func (m *master) writePIDFile(path string) {
	m.pidFile = path
	if path == "" {
		return
	}
	if err := os.WriteFile(path, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		m.log.Warn("cannot write pid file", "path", path, "err", err)
	}
}

// listenControl binds the control socket with mode 0600. A stale socket is
// replaced; a live one is an error unless we are taking over from it (-x
// with the same path), in which case the old master keeps its descriptor
// but the path now leads here.
func (m *master) listenControl(path, takeover string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	if _, err := os.Lstat(path); err == nil {
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			if takeover != path {
				return fmt.Errorf("%s: another master is running there (stop it, or start with -x %s)", path, path)
			}
		}
		os.Remove(path)
	}
	old := syscall.Umask(0o177)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	syscall.Umask(old)
	if err != nil {
		return err
	}
	l.SetUnlinkOnClose(false)
	m.ctl, m.ctlPath = l, path
	var st unix.Stat_t
	if unix.Stat(path, &st) == nil {
		m.ctlIno = st.Ino
	}
	go m.serveControl(l)
	return nil
}

// The control socket is mode 0600, but a local process of the same user can
// still open connections without end: at most maxControlConns are served at
// once (more are answered with an error line and closed), and each must
// send its request within controlIdle.
const (
	maxControlConns = 32
	controlIdle     = 2 * time.Second
)

func (m *master) serveControl(l *net.UnixListener) {
	slots := make(chan struct{}, maxControlConns)
	var refusedLog lograte.Limiter
	for {
		c, err := l.AcceptUnix()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond) // EMFILE and the like
			continue
		}
		select {
		case slots <- struct{}{}:
		default:
			n := m.ctlRefused.Add(1)
			// A fresh socket's buffer takes the line at once; the deadline
			// is for the impossible case, so accept never waits long.
			c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
			fmt.Fprintf(c, "{\"ok\":false,\"error\":\"too many control connections (%d open); try again\"}\n", maxControlConns)
			c.Close()
			if ok, _ := refusedLog.Allow(time.Now()); ok {
				m.log.Warn("control connection refused: too many open", "limit", maxControlConns, "refused_total", n)
			}
			continue
		}
		go func() {
			defer func() { <-slots }()
			m.serveControlConn(c)
		}()
	}
}

func (m *master) serveControlConn(c *net.UnixConn) {
	c.SetReadDeadline(time.Now().Add(controlIdle))
	line, err := readControlLine(bufio.NewReader(c))
	var req Request
	if err == nil {
		err = json.Unmarshal(line, &req)
	}
	if err != nil {
		writeReply(c, Reply{Error: "bad request: " + err.Error()}, nil)
		c.Close()
		return
	}
	c.SetReadDeadline(time.Time{})
	call := &ctlCall{req: req, conn: c, done: make(chan ctlResult, 1)}
	m.events <- call
	res := <-call.done
	if res.answered {
		return
	}
	writeReply(c, res.reply, res.files)
	c.Close()
}

func writeReply(c *net.UnixConn, r Reply, files []*os.File) {
	b, _ := json.Marshal(r)
	c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if len(files) > 0 {
		sockets.SendFiles(c, b, files)
		for _, f := range files {
			f.Close()
		}
		return
	}
	c.Write(append(b, '\n'))
}

func (m *master) loop(sigs chan os.Signal) int {
	for {
		select {
		case sig := <-sigs:
			switch sig {
			case syscall.SIGHUP:
				if err := m.reload(); err != nil {
					m.log.Error("reload refused", "err", err)
				}
			case syscall.SIGUSR2:
				if err := m.upgrade(nil); err != nil {
					m.log.Error("upgrade refused", "err", err)
				}
			case syscall.SIGQUIT:
				return m.stop(false, nil, sigs)
			default: // SIGTERM, SIGINT
				return m.stop(true, nil, sigs)
			}
		case ev := <-m.events:
			switch ev := ev.(type) {
			case workerExit:
				m.reaped(ev.w)
			case *ctlCall:
				if ev.req.Cmd == "stop" {
					return m.stop(ev.req.Drain, ev, sigs)
				}
				ev.done <- m.handle(ev)
			}
		case <-m.restart:
			m.restart = nil
			m.restartWorker()
		}
	}
}

func (m *master) handle(call *ctlCall) ctlResult {
	fail := func(err error) ctlResult { return ctlResult{reply: Reply{Error: err.Error()}} }
	switch call.req.Cmd {
	case "reload":
		if err := m.reload(); err != nil {
			m.log.Error("reload refused", "err", err)
			return fail(err)
		}
		return ctlResult{reply: m.statusReply()}
	case "upgrade":
		err := m.upgrade(call) // returns only on failure
		m.log.Error("upgrade refused", "err", err)
		return fail(err)
	case "status":
		return ctlResult{reply: m.statusReply()}
	case "diff":
		// The master reads the file a reload would read (its path as the
		// master was started with it), so the diff is what reload applies.
		src, err := os.ReadFile(m.file)
		if err != nil {
			return fail(fmt.Errorf("read config: %w", err))
		}
		cfg, err := conf.Parse(m.file, src)
		if err != nil {
			return fail(err)
		}
		reply := m.statusReply()
		for _, c := range conf.Diff(m.cfg, cfg) {
			reply.Changes = append(reply.Changes, c.String())
		}
		return ctlResult{reply: reply}
	case "show-servers":
		if m.cur == nil || call.req.Known {
			// What the master last heard: all there is while no worker runs.
			st := m.lost
			if m.cur != nil {
				st = m.cur.knownState()
			}
			if st == nil {
				return fail(errors.New("no server state known yet (a worker reports it within a moment of starting)"))
			}
			reply := m.statusReply()
			reply.Servers = st
			return ctlResult{reply: reply}
		}
		r, err := m.cur.call(workerMsg{Op: "state"}, workerCallTimeout)
		if err != nil {
			return fail(err)
		}
		reply := m.statusReply()
		if err := json.Unmarshal(r.State, &reply.Servers); err != nil {
			return fail(err)
		}
		return ctlResult{reply: reply}
	case "set-server-state":
		if m.cur == nil {
			return fail(errors.New("no worker running"))
		}
		req := call.req
		r, err := m.cur.call(workerMsg{Op: "set-server", Set: &req}, workerCallTimeout)
		if err != nil {
			return fail(err)
		}
		m.cur.setKnown(r.State)
		return ctlResult{reply: Reply{OK: true}}
	case "set-node":
		maint, err := stats.ParseNodeAdmin(call.req.Admin)
		if err != nil {
			return fail(err)
		}
		prev := m.nodeMaint()
		if m.cur != nil {
			req := call.req
			if _, err := m.cur.call(workerMsg{Op: "set-node", Set: &req}, workerCallTimeout); err != nil {
				return fail(err)
			}
		}
		m.maint = maint
		m.track.refresh()
		m.log.Info("node state set", "from", stats.NodeAdminName(prev), "to", stats.NodeAdminName(maint))
		return ctlResult{reply: m.statusReply()}
	case "show-bgp":
		reply := m.statusReply()
		reply.BGP = m.bgp.Status()
		if reply.BGP == nil {
			return fail(fmt.Errorf("no [bgp] in %s", m.file))
		}
		return ctlResult{reply: reply}
	case "get-sockets":
		var res ctlResult
		for _, k := range sortedKeys(m.socks) {
			f, err := m.socks[k].File()
			if err != nil {
				for _, f := range res.files {
					f.Close()
				}
				return fail(err)
			}
			res.reply.Sockets = append(res.reply.Sockets, sockets.Entry{Network: k.Network, Addr: k.Addr, Role: m.roles[k], FD: len(res.files)})
			res.files = append(res.files, f)
		}
		res.reply.OK, res.reply.PID = true, os.Getpid()
		m.track.handOver() // the new master keeps the track file once this one stops
		for _, w := range m.workers() {
			if _, err := w.call(workerMsg{Op: "track-off"}, workerCallTimeout); err != nil {
				m.log.Warn("worker did not take the track-off order", "worker_pid", w.pid, "err", err)
			}
		}
		m.log.Info("listening sockets handed to another process", "count", len(res.files))
		return res
	default:
		return fail(fmt.Errorf("unknown command %q", call.req.Cmd))
	}
}

// workers are the running workers: the current one and those draining.
func (m *master) workers() []*worker {
	var ws []*worker
	if m.cur != nil {
		ws = append(ws, m.cur)
	}
	for w := range m.old {
		ws = append(ws, w)
	}
	return ws
}

func (m *master) statusReply() Reply {
	r := Reply{OK: true, PID: os.Getpid(), Generation: m.gen, Config: m.file, Version: engine.Version,
		ControlRefused: m.ctlRefused.Load()}
	if m.cur != nil {
		r.WorkerPID, r.Generation = m.cur.pid, m.cur.gen
	}
	r.Unserved, _ = m.track.unserved()
	r.NodeMaint = m.nodeMaint()
	return r
}

// reload re-reads the file and, when it is valid, moves traffic to a new
// worker. On any error the running worker is left as it was.
func (m *master) reload() error {
	sdnotify.Reloading("reloading " + m.file)
	defer func() { sdnotify.Ready(m.status()) }()
	src, err := os.ReadFile(m.file)
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	cfg, err := conf.Parse(m.file, src)
	if err != nil {
		return err
	}
	if p := ControlPath(cfg.Global.ControlSocket, cfg.Global.PIDFile); p != m.ctlPath {
		m.log.Warn("control socket path changed; it takes effect at the next start", "running", m.ctlPath, "configured", p)
	}
	specs := engine.Listeners(cfg)
	socks, err := sockets.Bind(specs, m.socks)
	if err != nil {
		return err
	}
	closeNew := func() {
		for k, s := range socks {
			if _, had := m.socks[k]; !had {
				s.Close()
			}
		}
	}
	var state engine.State
	if m.cur != nil {
		if r, err := m.cur.call(workerMsg{Op: "state"}, workerCallTimeout); err != nil {
			m.log.Warn("cannot read server state from the running worker; using the last it reported", "err", err)
			state = m.cur.knownState()
		} else if err := json.Unmarshal(r.State, &state); err != nil {
			m.log.Warn("bad server state from the running worker; using the last it reported", "err", err)
			state = m.cur.knownState()
		}
	} else {
		state = m.lost // the worker died and was not restarted yet
	}
	prev, prevRoles := m.socks, m.roles
	m.socks, m.roles = socks, rolesOf(specs)
	m.parkListeners()
	w, err := m.startWorker(m.workerStart(cfg, src, state))
	if err == nil {
		if err = w.waitReady(workerReadyTimeout); err != nil {
			w.stopping = true
			w.proc.Kill()
		}
	}
	if err != nil {
		m.socks, m.roles = prev, prevRoles
		closeNew()
		return fmt.Errorf("new worker: %w", err)
	}
	old := m.cur
	m.cur, m.cfg, m.src = w, cfg, src
	m.track.setCur(w) // the old worker's verdict held until now: no flap
	m.applyBGP(cfg)
	if cfg.Global.TrackFile != m.track.path {
		m.log.Warn("global.track_file changed; it takes effect at the next start", "running", m.track.path, "configured", cfg.Global.TrackFile)
	}
	if err := m.applyLogging(cfg); err != nil {
		m.log.Warn("the master keeps its previous log settings", "err", err)
	}
	m.restart = nil
	if old != nil {
		m.drain(old, cfg.Global.HardStopAfter)
	}
	for k, s := range prev {
		if _, kept := socks[k]; !kept {
			m.log.Info("listener removed", "socket", k.String())
			s.Close()
		}
	}
	for k := range socks {
		if _, had := prev[k]; !had {
			m.log.Info("listener added", "socket", k.String(), "role", m.roles[k])
		}
	}
	m.log.Info("reloaded", "worker_pid", w.pid, "generation", w.gen, "draining", len(m.old))
	return nil
}

// applyLogging points the master's log at what cfg's global.log_* ask for.
func (m *master) applyLogging(cfg *conf.Config) error {
	h, c, err := logHandler(cfg.Global.Logging, m.stderr, m.level)
	if err != nil {
		return err
	}
	m.logs.set(h, c)
	return nil
}

// drain tells w to stop accepting and finish its connections within d. When
// drain returns, w accepts no more connections.
func (m *master) drain(w *worker, d time.Duration) {
	w.stopping = true
	m.old[w] = true
	op := "drain"
	if d <= 0 {
		op = "stop"
	}
	if _, err := w.call(workerMsg{Op: op, HardStopAfter: d.String()}, workerCallTimeout); err != nil {
		select {
		case <-w.exited:
			return
		default:
		}
		m.log.Warn("worker did not take the drain order; sending SIGTERM", "worker_pid", w.pid, "err", err)
		w.proc.Signal(syscall.SIGTERM)
	}
}

func (m *master) reaped(w *worker) {
	if m.old[w] {
		delete(m.old, w)
		m.log.Info("old worker exited", "worker_pid", w.pid, "generation", w.gen, "err", w.exitErr)
		return
	}
	if w != m.cur || w.stopping {
		return
	}
	if r, ok := w.nodeReport(); ok {
		m.maint = r.Maint
	}
	m.cur = nil
	m.track.setCur(nil) // a crash is a fault: 254 until a worker serves again
	if st := w.knownState(); st != nil {
		m.lost = st
	}
	if time.Since(w.started) > 30*time.Second {
		m.backoff = 0
	}
	m.backoff = min(max(2*m.backoff, 100*time.Millisecond), restartBackoffMax)
	m.log.Error("worker died; starting a new one", "worker_pid", w.pid, "exit", w.exitErr, "in", m.backoff)
	m.restart = time.After(m.backoff)
}

func (m *master) restartWorker() {
	if m.cur != nil {
		return // a reload started one meanwhile
	}
	// The dead worker's last known server state, as a reload would hand
	// it over: a server in maintenance stays out of traffic.
	w, err := m.startWorker(m.workerStart(m.cfg, m.src, m.lost))
	if err == nil {
		if err = w.waitReady(workerReadyTimeout); err != nil {
			w.stopping = true
			w.proc.Kill()
		}
	}
	if err != nil {
		m.backoff = min(max(2*m.backoff, 100*time.Millisecond), restartBackoffMax)
		m.log.Error("worker restart failed", "err", err, "retry_in", m.backoff)
		m.restart = time.After(m.backoff)
		return
	}
	m.cur = w
	m.track.setCur(w)
	m.log.Info("worker restarted", "worker_pid", w.pid, "generation", w.gen, "servers_restored", len(m.lost))
	sdnotify.Status(m.status())
}

// stop ends the master: the workers drain (or stop at once), the master
// lets go of its sockets, waits for the workers, and exits.
func (m *master) stop(drain bool, call *ctlCall, sigs chan os.Signal) int {
	d := time.Duration(0)
	if drain {
		d = m.cfg.Global.HardStopAfter
	}
	// The address moves first, then connections drain: the track file says
	// 1 at once, and with drain the listeners stay open for stop_grace so
	// that keepalived moves the VIP before anything is refused.
	m.track.stop()
	grace := time.Duration(0)
	if drain {
		grace = m.cfg.Global.StopGrace
		if m.bgp.Enabled() {
			// The prefixes were withdrawn by the refresh above: serve on
			// while the routers move new flows to the other nodes.
			grace = max(grace, m.cfg.BGP.DrainBeforeStop)
		}
	}
	m.log.Info("stopping", "drain", drain, "stop_grace", grace, "hard_stop_after", d)
	sdnotify.Stopping("stopping")
	if grace > 0 {
		m.graceWait(grace, sigs)
	}
	if m.cur != nil {
		m.drain(m.cur, d)
		m.cur = nil
	}
	if !drain {
		for w := range m.old {
			w.proc.Signal(syscall.SIGQUIT)
		}
	}
	m.socks.Close()
	m.closeControl()
	deadline := time.NewTimer(d + 10*time.Second)
	defer deadline.Stop()
	for len(m.old) > 0 {
		select {
		case ev := <-m.events:
			switch ev := ev.(type) {
			case workerExit:
				m.reaped(ev.w)
			case *ctlCall:
				ev.done <- ctlResult{reply: Reply{Error: "stopping"}}
			}
		case <-sigs: // a second signal cuts the drain short
			for w := range m.old {
				w.proc.Signal(syscall.SIGQUIT)
			}
		case <-deadline.C:
			for w := range m.old {
				m.log.Warn("worker still running after hard_stop_after; killing it", "worker_pid", w.pid)
				w.proc.Kill()
				delete(m.old, w)
			}
		}
	}
	m.track.exited() // nothing serves any more: 254, not the stop's 1
	m.bgp.Close()
	m.removePIDFile()
	if call != nil {
		writeReply(call.conn, Reply{OK: true, PID: os.Getpid()}, nil)
		call.conn.Close()
		call.done <- ctlResult{answered: true}
	}
	m.log.Info("sluice stopped")
	return 0
}

// graceWait keeps serving for d after the track file went to 1: control
// requests are refused (a stop is under way), a worker that dies is
// reaped, and a second stop signal ends the wait.
func (m *master) graceWait(d time.Duration, sigs chan os.Signal) {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			return
		case <-sigs:
			return
		case ev := <-m.events:
			switch ev := ev.(type) {
			case workerExit:
				if ev.w == m.cur {
					m.cur = nil
					m.track.setCur(nil) // nothing serves: 254, not the stop's 1
				} else {
					m.reaped(ev.w)
				}
			case *ctlCall:
				ev.done <- ctlResult{reply: Reply{Error: "stopping"}}
			}
		}
	}
}

func (m *master) closeControl() {
	if m.ctl == nil {
		return
	}
	m.ctl.Close()
	var st unix.Stat_t
	if unix.Stat(m.ctlPath, &st) == nil && st.Ino == m.ctlIno {
		os.Remove(m.ctlPath)
	}
}

// removePIDFile removes the pid file if it still names this process (a
// master that took over with -x has written its own).
func (m *master) removePIDFile() {
	if m.pidFile == "" {
		return
	}
	if b, err := os.ReadFile(m.pidFile); err == nil && strings.TrimSpace(string(b)) == strconv.Itoa(os.Getpid()) {
		os.Remove(m.pidFile)
	}
}

func (m *master) cleanup() {
	m.track.stop()
	m.bgp.Close()
	m.socks.Close()
	m.closeControl()
	m.removePIDFile()
}

// fetchSockets asks the master on the control socket at path for its
// listening sockets (sluice run -x).
func fetchSockets(path string) (sockets.Set, int, error) {
	c, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		return nil, 0, err
	}
	defer c.Close()
	uc := c.(*net.UnixConn)
	uc.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := uc.Write([]byte(`{"cmd":"get-sockets"}` + "\n")); err != nil {
		return nil, 0, err
	}
	line, files, err := sockets.ReadFiles(uc)
	if err != nil {
		return nil, 0, err
	}
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	var r Reply
	if err := json.Unmarshal(line, &r); err != nil {
		return nil, 0, err
	}
	if !r.OK {
		return nil, 0, errors.New(r.Error)
	}
	out := sockets.Set{}
	for _, e := range r.Sockets {
		if e.FD < 0 || e.FD >= len(files) || files[e.FD] == nil {
			out.Close()
			return nil, 0, fmt.Errorf("socket %s: descriptor missing", e.Key())
		}
		f := files[e.FD]
		files[e.FD] = nil
		s, err := sockets.FromFile(e.Key(), f)
		if err != nil {
			out.Close()
			return nil, 0, err
		}
		out[e.Key()] = s
	}
	return out, r.PID, nil
}

// checkBinary runs the binary that an upgrade would execute on the
// configuration, so a broken binary or a config it rejects never replaces
// the running master.
func checkBinary(exe, file string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, exe, "check", "-f", file).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s check -f %s: %v\n%s", exe, file, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// initBGP makes the speaker that follows the tracker's verdict: every
// refresh of the verdict refreshes the announcements, then tells the
// current worker (its stats listener shows them).
func (m *master) initBGP() {
	m.bgp = bgp.New(m.log, m.track.health, m.pushBGP)
	m.track.after = func() {
		m.bgp.Refresh()
		m.pushBGP()
	}
}

// applyBGP moves the speaker to cfg's [bgp]. A failure (a listen_port in
// use, a neighbour gobgp refuses) is logged: BGP never stops traffic.
func (m *master) applyBGP(cfg *conf.Config) {
	if err := m.bgp.Apply(cfg.BGP); err != nil {
		m.log.Error("bgp: configuration not fully applied", "err", err)
	}
	m.pushBGP()
}

// pushBGP sends the BGP state to the current worker, for its stats
// listener. It may run on any goroutine.
func (m *master) pushBGP() {
	st := m.bgp.Status()
	if st == nil {
		return
	}
	m.track.mu.Lock()
	w := m.track.cur
	m.track.mu.Unlock()
	if w == nil {
		return
	}
	b, _ := json.Marshal(workerMsg{Op: "bgp", BGP: st})
	w.write(b)
}

// parkListeners takes the master's tcp listeners out of its netpoller: it
// only hands them to workers, and each connection they accept woke it.
func (m *master) parkListeners() {
	if err := sockets.ParkListeners(m.socks); err != nil {
		m.log.Warn("a listener stays in the master's poller (each new connection wakes the master too)", "err", err)
	}
}
