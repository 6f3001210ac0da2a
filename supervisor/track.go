package supervisor

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"sluice/bgp"

	"sluice/frontend"
)

// nodeReport is a worker's answer to "can this node serve?" (engine's
// Unserved, the rule of /healthz) and its node admin state. A worker sends
// it in its ready message, unasked whenever it changes, and in answer to
// set-node and node.
type nodeReport struct {
	Maint bool `json:"maint,omitempty"`
	// Down is why a vital frontend cannot serve, maintenance aside ("":
	// every one has a server up).
	Down string `json:"down,omitempty"`
	// NoServer lists the frontends of bgp.announce.when_vital without a
	// server up.
	NoServer []string `json:"no_server,omitempty"`
}

func (r nodeReport) equal(o nodeReport) bool {
	return r.Maint == o.Maint && r.Down == o.Down && slices.Equal(r.NoServer, o.NoServer)
}

// The values of the track file. keepalived multiplies the value by the
// track_file's weight and adds it to the priority; a result under -253 is
// a fault. With weight -20 (the examples), stepDown lowers the priority
// by 20, so the peer takes the address over while this node still holds
// it and serves (nothing is lost), and cannotServe is a fault at once.
// With weight 0 any non-zero value is a fault.
const (
	canServe    = "0\n"
	stepDown    = "1\n"   // a stop or maintenance: still serving, hand over
	cannotServe = "254\n" // a fault: no worker, no server up, master gone
)

// tracker keeps global.track_file: 0 while this node can serve, non-zero
// the moment it cannot or is handing over (stepDown, cannotServe). The master writes it, not the workers, so that:
//
//   - a reload never flaps it: the old worker's verdict holds until the new
//     worker is ready, and the new one's (carried in its ready message)
//     replaces it in one write;
//   - a worker crash does: the master sets it to 254 when it reaps the
//     worker and back to 0 when the restarted worker serves;
//   - an orderly stop sets it to 1 before anything drains, and to 254 once
//     nothing serves.
//
// A master killed outright cannot write anything: keepalived's
// track_process sees it die. The worker's read goroutine and the master's
// loop both call refresh, hence the lock.
type tracker struct {
	path string // "" when global.track_file is not set: the verdict is kept for status only
	log  *slog.Logger

	mu       sync.Mutex
	cur      *worker // whose verdict counts; nil: no worker serves
	stopping bool
	reason   string // the last verdict: "" can serve
	logged   bool   // reason has been logged
	written  string // the content last written ("0\n", "1\n"); "" not yet
	// quiet: this master does not write the file. A master taking the
	// sockets over (run -x) is quiet until its first worker serves, so that
	// neither its start nor its failure says fault while the old master
	// serves; a master that handed its sockets over is quiet from its stop
	// on, so that its stop leaves the new master's verdict in place.
	quiet      bool
	handedOver bool
	// after runs at the end of every refresh, outside the lock: the BGP
	// speaker follows the same verdict.
	after func()
}

// takingOver makes the tracker quiet until a worker of this master serves.
func (t *tracker) takingOver() {
	t.mu.Lock()
	t.quiet = true
	t.mu.Unlock()
}

// handOver records that another master took this one's sockets (run -x):
// this one's stop writes nothing.
func (t *tracker) handOver() {
	t.mu.Lock()
	t.handedOver = true
	t.mu.Unlock()
}

// setCur makes w the worker whose verdict counts (nil: none serves).
func (t *tracker) setCur(w *worker) {
	t.mu.Lock()
	t.cur = w
	if w != nil && !t.stopping {
		t.quiet = false
	}
	t.mu.Unlock()
	t.refresh()
}

// stop records that a stop has begun, and writes stepDown (cannotServe
// when the worker cannot serve anyway).
func (t *tracker) stop() {
	t.mu.Lock()
	t.stopping = true
	t.quiet = t.quiet || t.handedOver
	t.mu.Unlock()
	t.refresh()
}

// exited records that no worker serves any more at the end of a stop:
// the file says cannotServe, not the stepDown ("still serving") of the
// stop's start, so that keepalived does not elect a node with nothing
// listening should its peer fail.
func (t *tracker) exited() {
	t.mu.Lock()
	t.cur = nil
	t.mu.Unlock()
	t.stop()
}

// unserved is the master's verdict: why the node cannot serve, or "".
// known is false while the current worker has not reported yet (a master
// that just adopted its workers in an upgrade).
func (t *tracker) unserved() (reason string, known bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	reason, _, known = t.verdictLocked()
	return reason, known
}

// verdictLocked is why the node cannot serve ("" while it can) and the
// value for the file.
func (t *tracker) verdictLocked() (reason, content string, known bool) {
	if t.cur == nil {
		if t.stopping {
			return "stopping", cannotServe, true
		}
		return noWorker, cannotServe, true
	}
	r, ok := t.cur.nodeReport()
	switch {
	case !ok && t.stopping:
		return "stopping", stepDown, true
	case !ok:
		return "", "", false
	case r.Down != "":
		return r.Down, cannotServe, true
	case t.stopping:
		return "stopping", stepDown, true
	case r.Maint:
		return maintReason, stepDown, true
	}
	return "", canServe, true
}

const maintReason = frontend.MaintReason

// noWorker is the verdict while no worker runs.
const noWorker = "no worker running"

// health is the verdict for the BGP speaker: the node's, and the
// when_vital frontends without a server.
func (t *tracker) health() bgp.Health {
	t.mu.Lock()
	defer t.mu.Unlock()
	reason, _, known := t.verdictLocked()
	h := bgp.Health{Known: known, Unserved: reason}
	if t.cur != nil {
		if r, ok := t.cur.nodeReport(); ok {
			h.NoServer = r.NoServer
		}
	}
	return h
}

// refresh writes the file when the verdict changed. A verdict not known
// yet leaves the file as it is.
func (t *tracker) refresh() {
	t.mu.Lock()
	t.refreshLocked()
	after := t.after
	t.mu.Unlock()
	if after != nil {
		after()
	}
}

func (t *tracker) refreshLocked() {
	reason, content, known := t.verdictLocked()
	if !known {
		return
	}
	if reason != t.reason || !t.logged {
		switch {
		case reason == noWorker && !t.logged:
			// The master's first verdict, before its first worker is
			// up: the expected start, not a fault.
			t.log.Info("this node serves once its worker is up", "track_file", t.path)
		case reason != "":
			t.log.Warn("this node cannot serve", "reason", reason, "track_file", t.path)
		default:
			t.log.Info("this node can serve", "track_file", t.path)
		}
		t.reason, t.logged = reason, true
	}
	if t.path == "" || t.quiet || content == t.written {
		return
	}
	if err := writeAtomic(t.path, content); err != nil {
		t.log.Error("cannot write the track file: keepalived does not see this node's state", "path", t.path, "err", err)
		t.written = "" // try again at the next change
		return
	}
	t.written = content
}

// writeAtomic replaces path with content through a temporary file in the
// same directory and a rename: a reader (keepalived's inotify watch) sees
// the old content or the new, never an empty or half-written file.
func writeAtomic(path, content string) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	// CreateTemp opens a new random name with O_EXCL (a planted symlink is
	// never followed); the mode is set through the descriptor, not the
	// name, which another user of a shared directory could swap for a
	// symlink between the close and a chmod by path.
	err = f.Chmod(0o644)
	if err == nil {
		_, err = f.WriteString(content)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
