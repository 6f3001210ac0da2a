package supervisor

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"sort"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"sluice/engine"
	"sluice/internal/sdnotify"
	"sluice/internal/sockets"
	"sluice/stats"
)

// worker is the master's handle on one worker process.
type worker struct {
	gen  int
	pid  int
	proc *os.Process
	conn *net.UnixConn

	wmu sync.Mutex // serializes writes on conn

	mu      sync.Mutex
	nextID  int
	pending map[int]chan workerMsg
	// known is the last server state heard from the worker (pushed on
	// change, or on the answer to set-server), first the state it was
	// started with: what a worker restarted after a crash gets.
	known json.RawMessage
	// node is the worker's last node report (hasNode: it sent one);
	// onNode runs after each (the master's tracker refreshes).
	node    nodeReport
	hasNode bool
	onNode  func()

	ready    chan workerMsg // the first message: ready or a start error
	exited   chan struct{}  // closed once the process is reaped
	exitErr  error
	started  time.Time
	stopping bool // the master asked it to drain or stop (main loop only)
}

var errWorkerGone = errors.New("worker went away")

// startWorker starts a worker process on socks (every listener of the
// configuration) and sends it the configuration and state. It does not wait
// for the worker to be ready.
func (m *master) startWorker(start workerStart) (*worker, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socketpair: %w", err)
	}
	mine := os.NewFile(uintptr(fds[0]), "worker")
	theirs := os.NewFile(uintptr(fds[1]), "master")
	c, err := net.FileConn(mine)
	mine.Close()
	if err != nil {
		theirs.Close()
		return nil, err
	}
	conn := c.(*net.UnixConn)

	files := []*os.File{theirs}
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	start.Sockets = nil
	for _, k := range sortedKeys(m.socks) {
		f, err := m.socks[k].File()
		if err != nil {
			conn.Close()
			return nil, err
		}
		start.Sockets = append(start.Sockets, sockets.Entry{Network: k.Network, Addr: k.Addr, Role: m.roles[k], FD: 3 + len(files)})
		files = append(files, f)
	}
	cmd := exec.Command("/proc/self/exe", WorkerCommand)
	cmd.Args[0] = os.Args[0]
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.ExtraFiles = files
	for _, kv := range os.Environ() {
		// The worker must not talk to systemd, nor think it is an upgrade.
		if !hasPrefix(kv, sdnotify.Env+"=") && !hasPrefix(kv, envUpgradeFD+"=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	// The stats page shows how many reloads came before this worker.
	cmd.Env = append(cmd.Env, fmt.Sprintf("%s=%d", stats.ReloadsEnv, max(0, start.Gen-1)))
	if err := cmd.Start(); err != nil {
		conn.Close()
		return nil, fmt.Errorf("start worker: %w", err)
	}
	w := newWorker(start.Gen, cmd.Process, conn)
	w.onNode = m.track.refresh
	if start.State != nil {
		w.known, _ = json.Marshal(start.State)
	}
	go w.wait(m.events)
	go w.read(true)
	b, _ := json.Marshal(start)
	if err := w.write(b); err != nil {
		w.proc.Kill()
		return nil, fmt.Errorf("start worker: %w", err)
	}
	return w, nil
}

func newWorker(gen int, p *os.Process, conn *net.UnixConn) *worker {
	return &worker{
		gen: gen, pid: p.Pid, proc: p, conn: conn,
		pending: map[int]chan workerMsg{},
		ready:   make(chan workerMsg, 1),
		exited:  make(chan struct{}),
		started: time.Now(),
	}
}

func hasPrefix(s, p string) bool { return len(s) >= len(p) && s[:len(p)] == p }

func sortedKeys(s sockets.Set) []sockets.Key {
	keys := make([]sockets.Key, 0, len(s))
	for k := range s {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].String() < keys[j].String() })
	return keys
}

// workerExit is the event the master's loop gets when a worker is reaped.
type workerExit struct{ w *worker }

func (w *worker) wait(events chan<- any) {
	st, err := w.proc.Wait()
	switch {
	case err != nil:
		w.exitErr = err
	case !st.Success():
		w.exitErr = errors.New(st.String())
	}
	close(w.exited)
	w.conn.Close()
	events <- workerExit{w}
}

// read dispatches the worker's messages; the first one (when first) is its
// ready message.
func (w *worker) read(first bool) {
	r := bufio.NewReaderSize(w.conn, 64<<10)
	defer func() {
		w.mu.Lock()
		for id, ch := range w.pending {
			close(ch)
			delete(w.pending, id)
		}
		w.nextID = -1
		w.mu.Unlock()
		if first {
			close(w.ready)
		}
	}()
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			return
		}
		var msg workerMsg
		if json.Unmarshal(line, &msg) != nil {
			continue
		}
		if msg.Node != nil {
			w.setNode(*msg.Node)
			if msg.ID == 0 && msg.Op == "node" {
				continue
			}
		}
		if first {
			w.ready <- msg
			close(w.ready)
			first = false
			continue
		}
		if msg.ID == 0 && msg.Op == "state" {
			w.setKnown(msg.State)
			if msg.Ack > 0 {
				b, _ := json.Marshal(workerMsg{Op: "state-ack", Ack: msg.Ack})
				w.write(b)
			}
			continue
		}
		w.mu.Lock()
		ch := w.pending[msg.ID]
		delete(w.pending, msg.ID)
		w.mu.Unlock()
		if ch != nil {
			ch <- msg
		}
	}
}

func (w *worker) write(b []byte) error {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	w.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := w.conn.Write(append(b, '\n'))
	return err
}

// call sends a request to the worker and waits for its answer.
func (w *worker) call(msg workerMsg, timeout time.Duration) (workerMsg, error) {
	ch := make(chan workerMsg, 1)
	w.mu.Lock()
	if w.nextID < 0 {
		w.mu.Unlock()
		return workerMsg{}, errWorkerGone
	}
	w.nextID++
	msg.ID = w.nextID
	w.pending[msg.ID] = ch
	w.mu.Unlock()
	b, _ := json.Marshal(msg)
	if err := w.write(b); err != nil {
		return workerMsg{}, err
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case r, ok := <-ch:
		if !ok {
			return workerMsg{}, errWorkerGone
		}
		if r.Error != "" {
			return r, errors.New(r.Error)
		}
		return r, nil
	case <-t.C:
		w.mu.Lock()
		delete(w.pending, msg.ID)
		w.mu.Unlock()
		return workerMsg{}, fmt.Errorf("worker %d did not answer %q within %s", w.pid, msg.Op, timeout)
	}
}

// waitReady waits for the worker's first message.
func (w *worker) waitReady(timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case msg, ok := <-w.ready:
		switch {
		case !ok:
			select {
			case <-w.exited:
				return fmt.Errorf("worker %d exited before it was ready (%v)", w.pid, w.exitErr)
			case <-t.C:
				return fmt.Errorf("worker %d went away before it was ready", w.pid)
			}
		case msg.Error != "":
			return errors.New(msg.Error)
		case msg.Ready:
			return nil
		}
		return fmt.Errorf("worker %d: unexpected first message", w.pid)
	case <-t.C:
		return fmt.Errorf("worker %d not ready within %s", w.pid, timeout)
	}
}

// setKnown records the worker's server state, as JSON.
func (w *worker) setKnown(st json.RawMessage) {
	if len(st) == 0 {
		return
	}
	w.mu.Lock()
	w.known = st
	w.mu.Unlock()
}

// knownState is the last server state heard from the worker (nil: none).
func (w *worker) knownState() engine.State {
	w.mu.Lock()
	b := w.known
	w.mu.Unlock()
	var st engine.State
	if len(b) == 0 || json.Unmarshal(b, &st) != nil {
		return nil
	}
	return st
}

// setNode records the worker's node report and tells the master.
func (w *worker) setNode(r nodeReport) {
	w.mu.Lock()
	w.node, w.hasNode = r, true
	fn := w.onNode
	w.mu.Unlock()
	if fn != nil {
		fn()
	}
}

// nodeReport is the worker's last node report; false: none yet.
func (w *worker) nodeReport() (nodeReport, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.node, w.hasNode
}
