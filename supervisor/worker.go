package supervisor

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"sluice/conf"
	"sluice/engine"
	"sluice/internal/gcfloor"
	"sluice/internal/memtrim"
	"sluice/internal/sockets"
	"sluice/stats"
)

// RunWorker is the process a master starts with the hidden sub-command
// WorkerCommand: it reads its configuration and socket manifest from the
// master on fd 3, serves, and answers the master until told to drain (or
// until the master goes away). It returns the process exit code.
func RunWorker(stderr io.Writer) int {
	f := os.NewFile(3, "master")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		fmt.Fprintln(stderr, "sluice worker: no master on fd 3:", err)
		return 2
	}
	conn := c.(*net.UnixConn)
	defer conn.Close()
	signal.Ignore(syscall.SIGHUP, syscall.SIGINT, syscall.SIGUSR2)
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGQUIT)

	r := bufio.NewReaderSize(conn, 64<<10)
	var start workerStart
	line, err := r.ReadBytes('\n')
	if err == nil {
		err = json.Unmarshal(line, &start)
	}
	if err != nil {
		fmt.Fprintln(stderr, "sluice worker: no start message:", err)
		return 2
	}
	level := slog.LevelInfo
	if start.Debug {
		level = slog.LevelDebug
	}
	// The worker logs as the configuration it runs says (a reload that
	// changes global.log_* takes effect here); until it has parsed it,
	// and for a failure to reach syslog, on stderr.
	var h slog.Handler = newLogger(stderr, level).Handler()
	cfg, err := conf.Parse(start.File, start.Config)
	if err == nil {
		var lh slog.Handler
		if lh, _, err = logHandler(cfg.Global.Logging, stderr, level); err == nil {
			h = lh
		}
	}
	log := slog.New(h).With("worker", start.Gen, "pid", os.Getpid())
	slog.SetDefault(log) // the packages that log without a logger of their own
	w := &workerProc{conn: conn, log: log, sigs: sigs, engSet: make(chan struct{}), acks: map[int]chan struct{}{}}

	var eng *engine.Engine
	if err == nil && !gcfloor.Set(int64(cfg.Global.GCHeapFloor)) {
		log.Info("GOGC is set in the environment: global.gc_heap_floor is not applied", "GOGC", os.Getenv("GOGC"))
	}
	if err == nil {
		eng, err = startEngine(start, cfg, log, engine.Options{
			AfterAdminChange: w.pushNow, NodeMaint: start.NodeMaint, OnServeChange: w.reportNode, BGP: w.bgp.Load})
	}
	if err != nil {
		w.send(workerMsg{Error: err.Error()})
		log.Error("worker start failed", "err", err)
		return 1
	}
	// The ready message carries the first node report; nodeMu keeps a
	// report pushed by a health check from going out before it.
	w.nodeMu.Lock()
	w.eng = eng
	close(w.engSet)
	nr := w.nodeNow()
	w.lastNode, w.nodeSent = nr, true
	w.send(workerMsg{Ready: true, Node: &nr})
	w.nodeMu.Unlock()
	log.Info("worker serving", "config", start.File)
	pushDone := make(chan struct{})
	defer func() {
		if pushDone != nil {
			close(pushDone)
		}
	}()
	go w.pushState(pushDone)
	go memtrim.Run(pushDone)

	type req struct {
		m   workerMsg
		err error
	}
	reqs := make(chan req)
	go func() {
		for {
			line, err := r.ReadBytes('\n')
			var m workerMsg
			if err == nil {
				err = json.Unmarshal(line, &m)
			}
			reqs <- req{m, err}
			if err != nil {
				return
			}
		}
	}()
	hard := eng.Config.Global.HardStopAfter
	for {
		select {
		case sig := <-sigs:
			if sig == syscall.SIGQUIT {
				return w.stop(0)
			}
			return w.stop(hard)
		case q := <-reqs:
			if q.err != nil {
				log.Warn("master gone; draining", "err", q.err)
				// The master died (it closes nothing on an orderly stop
				// before telling us): say so to keepalived at once, from
				// here, before anything drains.
				if start.TrackFile != "" {
					if err := writeAtomic(start.TrackFile, cannotServe); err != nil {
						log.Error("cannot write the track file", "err", err)
					} else {
						log.Warn("this node cannot serve", "reason", "master gone", "track_file", start.TrackFile)
					}
				}
				return w.stop(hard)
			}
			switch q.m.Op {
			case "state-ack":
				w.acked(q.m.Ack)
			case "bgp":
				w.bgp.Store(q.m.BGP) // the master's news, unanswered
			case "state":
				st, _ := json.Marshal(eng.State())
				w.send(workerMsg{ID: q.m.ID, OK: true, State: st})
			case "set-server":
				s := q.m.Set
				if s == nil {
					w.send(workerMsg{ID: q.m.ID, Error: "set-server without arguments"})
					continue
				}
				if err := eng.SetServer(s.Backend, s.Server, s.Admin, s.Up, s.Weight); err != nil {
					w.send(workerMsg{ID: q.m.ID, Error: err.Error()})
					continue
				}
				log.Info("server state set", "backend", s.Backend, "server", s.Server, "admin", s.Admin)
				w.reportNode() // a server out of service may leave a vital frontend without one
				// The new state rides on the answer: the master knows it
				// before the operator's command returns.
				st, _ := json.Marshal(eng.State())
				w.send(workerMsg{ID: q.m.ID, OK: true, State: st})
			case "set-node":
				maint := false
				if q.m.Set != nil {
					maint = q.m.Set.Admin == "maint"
				}
				eng.Node.SetMaint(maint) // reports through OnServeChange
				log.Info("node state set", "state", stats.NodeAdminName(maint))
				nr := w.nodeNow()
				w.send(workerMsg{ID: q.m.ID, OK: true, Node: &nr})
			case "node":
				nr := w.nodeNow()
				w.send(workerMsg{ID: q.m.ID, OK: true, Node: &nr})
			case "track-off":
				// Another master took the sockets (run -x) and keeps the
				// track file now: this worker's "master gone" must not
				// overwrite its verdict.
				start.TrackFile = ""
				w.send(workerMsg{ID: q.m.ID, OK: true})
			case "drain", "stop":
				d := time.Duration(0)
				if q.m.Op == "drain" {
					d = hard
					if v, err := time.ParseDuration(q.m.HardStopAfter); err == nil {
						d = v
					}
				}
				// Stop accepting before answering: once the master hears
				// back, every new connection goes to the new worker.
				eng.StopAccepting()
				close(pushDone) // the new worker's state is the one to keep
				pushDone = nil
				w.draining.Store(true)
				w.send(workerMsg{ID: q.m.ID, OK: true})
				return w.stop(d)
			default:
				w.send(workerMsg{ID: q.m.ID, Error: fmt.Sprintf("unknown op %q", q.m.Op)})
			}
		}
	}
}

func startEngine(start workerStart, cfg *conf.Config, log *slog.Logger, opts engine.Options) (*engine.Engine, error) {
	have, err := sockets.Adopt(start.Sockets)
	if err != nil {
		return nil, err
	}
	opts.State = start.State
	eng, err := engine.StartWith(cfg, have, log, opts)
	if err != nil {
		have.Close()
		return nil, err
	}
	for k, s := range have {
		if _, used := eng.Sockets[k]; !used {
			s.Close()
		}
	}
	return eng, nil
}

type workerProc struct {
	mu   sync.Mutex
	conn *net.UnixConn
	log  *slog.Logger
	eng  *engine.Engine
	sigs chan os.Signal

	engSet chan struct{} // closed once eng is set

	// nodeMu makes computing a node report and sending it one step, so a
	// stale verdict is never sent after a newer one.
	nodeMu   sync.Mutex
	lastNode nodeReport
	nodeSent bool

	draining atomic.Bool // told to drain: its state is no longer the one to keep
	// bgp is the master's BGP state, pushed whenever it changes, for the
	// stats listener.
	bgp atomic.Pointer[stats.BGP]
	// pushMu makes reading the state and sending it one step, so that a
	// periodic push read before an admin change is never sent after it.
	pushMu  sync.Mutex
	ackMu   sync.Mutex
	nextAck int
	acks    map[int]chan struct{}
}

func (w *workerProc) send(m workerMsg) {
	b, _ := json.Marshal(m)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := w.conn.Write(append(b, '\n')); err != nil {
		w.log.Debug("cannot answer master", "err", err)
	}
}

// stop drains for at most d (0: at once) and returns the exit code.
func (w *workerProc) stop(d time.Duration) int {
	w.log.Info("worker draining", "hard_stop_after", d, "open", w.eng.Front.Current())
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	go func() {
		// A signal during the drain (SIGQUIT, or SIGTERM again) cuts it short.
		select {
		case <-w.sigs:
			cancel()
		case <-ctx.Done():
		}
	}()
	if cut := w.eng.Shutdown(ctx); cut > 0 {
		w.log.Warn("hard stop: connections cut", "count", cut)
	}
	w.log.Info("worker exiting")
	return 0
}

// statePushInterval is how often a worker looks for server state changes
// (health, admin API, agent weights, DNS) to push to its master: a crash
// loses at most this much of it.
const statePushInterval = 250 * time.Millisecond

// pushState sends the master the server state whenever it changed, as an
// unsolicited "state" message (ID 0), until done is closed. The master hands
// the last one it got to a worker it restarts after a crash.
func (w *workerProc) pushState(done <-chan struct{}) {
	t := time.NewTicker(statePushInterval)
	defer t.Stop()
	var last []byte
	for {
		// The safety net of the node report: changes no event announces
		// (an agent's word, a DNS pool) are seen within a tick.
		w.reportNode()
		w.pushMu.Lock()
		st, err := json.Marshal(w.eng.State())
		if err == nil && !bytes.Equal(st, last) {
			select {
			case <-done:
				w.pushMu.Unlock()
				return
			default:
			}
			w.send(workerMsg{Op: "state", State: st})
			last = st
		}
		w.pushMu.Unlock()
		select {
		case <-done:
			return
		case <-t.C:
		}
	}
}

// pushAckTimeout bounds how long an admin API call waits for the master to
// hold its change; past it the call is answered anyway (the periodic push
// still carries the change) rather than hang on a stuck master.
const pushAckTimeout = 2 * time.Second

// pushNow sends the master the server state at once and waits (at most
// pushAckTimeout) for it to say it holds it. The stats admin API calls it
// after a change, before answering, so that a worker killed right after
// the answer is restarted with the change.
func (w *workerProc) pushNow() {
	select {
	case <-w.engSet:
	default:
		return // not serving yet: the first periodic push carries it
	}
	if w.draining.Load() {
		return
	}
	ch := make(chan struct{})
	w.ackMu.Lock()
	w.nextAck++
	id := w.nextAck
	w.acks[id] = ch
	w.ackMu.Unlock()
	defer func() {
		w.ackMu.Lock()
		delete(w.acks, id)
		w.ackMu.Unlock()
	}()
	w.pushMu.Lock()
	st, err := json.Marshal(w.eng.State())
	if err == nil {
		w.send(workerMsg{Op: "state", State: st, Ack: id})
	}
	w.pushMu.Unlock()
	if err != nil {
		return
	}
	t := time.NewTimer(pushAckTimeout)
	defer t.Stop()
	select {
	case <-ch:
	case <-t.C:
		w.log.Warn("master did not confirm an admin API change in time; a crash now may lose it", "wait", pushAckTimeout)
	}
}

// acked wakes the admin call waiting for push id.
func (w *workerProc) acked(id int) {
	w.ackMu.Lock()
	ch := w.acks[id]
	delete(w.acks, id)
	w.ackMu.Unlock()
	if ch != nil {
		close(ch)
	}
}

// nodeNow is the engine's node report at this moment.
func (w *workerProc) nodeNow() nodeReport {
	return nodeReport{Maint: w.eng.Node.Maint(), Down: w.eng.Down(), NoServer: w.eng.NoServer()}
}

// reportNode sends the master the node report when it changed. The engine
// calls it on every event that may change it (a server up or down, an
// admin change, the node's maintenance), so the master's track file
// follows at once; a draining worker's verdict no longer counts.
func (w *workerProc) reportNode() {
	w.nodeMu.Lock()
	defer w.nodeMu.Unlock()
	select {
	case <-w.engSet:
	default:
		return // the ready message carries the first report
	}
	if w.draining.Load() {
		return
	}
	r := w.nodeNow()
	if w.nodeSent && r.equal(w.lastNode) {
		return
	}
	w.lastNode, w.nodeSent = r, true
	w.send(workerMsg{Op: "node", Node: &r})
}
