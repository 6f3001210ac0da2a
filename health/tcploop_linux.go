//go:build linux

package health

import (
	"container/heap"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"sluice/conf"
	"sluice/internal/poller"
	"sluice/internal/sockets"
)

// tcpLoop runs plain tcp checks (no PROXY header) of every server from one
// goroutine over one epoll instance, the way HAProxy does: non-blocking
// connects, one epoll_wait for all of them, a heap of due times. A check
// then costs its few system calls and nothing else: no goroutine wakes,
// no timers, no net.Conn, and due checks start in bursts (batchWindow).
//
// Checks of one server never overlap: a server is put back on the heap
// only when its check has finished.
type tcpLoop struct {
	p *poller.Poller

	mu   sync.Mutex
	due  dueHeap
	wake bool // the loop may be asleep in epoll_wait with a later deadline

	// Touched by the loop goroutine only.
	inflight map[int32]*loopCheck
}

type loopCheck struct {
	c        *Checker
	ap       netip.AddrPort
	due      time.Time // when the check was due: the next one is due an interval later
	at       time.Time // when the check is due (heap) or started (in flight)
	deadline time.Time
	fd       int32
	index    int // in the heap
}

var (
	loopOnce sync.Once
	loop     *tcpLoop
)

// sharedLoop starts the loop on first use; nil when epoll is unavailable.
func sharedLoop() *tcpLoop {
	loopOnce.Do(func() {
		p, err := poller.New()
		if err != nil {
			return // each checker runs in a goroutine of its own
		}
		loop = &tcpLoop{p: p, inflight: map[int32]*loopCheck{}}
		go loop.run()
	})
	return loop
}

// startLoop hands c to the shared loop when its checks can run there (tcp,
// no PROXY header, no TLS, an IP address), and reports whether it did.
func startLoop(c *Checker, first time.Duration) bool {
	if c.spec.Check != conf.CheckTCP || c.spec.SendProxy != conf.ProxyNone || c.spec.TLS != nil {
		return false
	}
	ap, err := netip.ParseAddrPort(c.spec.checkAddr())
	if err != nil {
		return false // a host name: the dialer resolves it at each check
	}
	l := sharedLoop()
	if l == nil {
		return false
	}
	close(c.done) // Stop has no goroutine to wait for
	l.schedule(&loopCheck{c: c, ap: ap, at: time.Now().Add(first)})
	return true
}

func (l *tcpLoop) schedule(lc *loopCheck) {
	l.mu.Lock()
	heap.Push(&l.due, lc)
	first := l.due[0] == lc
	wake := first && l.wake
	if wake {
		l.wake = false
	}
	l.mu.Unlock()
	if wake {
		l.p.Wake()
	}
}

func (l *tcpLoop) run() {
	events := make([]unix.EpollEvent, 256)
	for {
		now := time.Now()
		l.expire(now)
		l.startDue(now)
		wait := l.nextWait(now)
		n, err := l.p.Wait(events, wait)
		if err != nil {
			time.Sleep(10 * time.Millisecond) // should not happen; do not spin
			continue
		}
		for _, ev := range events[:n] {
			if l.p.IsWake(ev.Fd) {
				l.p.Drain()
				continue
			}
			if lc := l.inflight[ev.Fd]; lc != nil {
				var err error
				if ev.Events&(unix.EPOLLERR|unix.EPOLLHUP) != 0 {
					// Only a failure needs the system call that says why.
					errno, gerr := unix.GetsockoptInt(int(lc.fd), unix.SOL_SOCKET, unix.SO_ERROR)
					switch {
					case gerr != nil:
						err = gerr
					case errno != 0:
						err = unix.Errno(errno)
					default:
						err = unix.ECONNRESET
					}
				}
				l.finish(lc, err)
			}
		}
	}
}

// batchWindow: checks due this soon start together with those due now.
// System calls in a burst cost a fraction of the same calls spread out (on
// the 2-core test machine, 1,000 connects a second cost about 3% of a core
// in bursts of 50 and about 13% one at a time), so the loop wakes a few
// times a second, not 1,000. A check starts early by at most a fifth of
// its interval (failures are seen sooner, never later), and the next one
// is due an interval after this one was due, so starting early does not
// add up.
const batchWindow = 200 * time.Millisecond

// startDue starts every check that is due, and those due within the batch
// window.
func (l *tcpLoop) startDue(now time.Time) {
	for {
		l.mu.Lock()
		if len(l.due) == 0 {
			l.mu.Unlock()
			return
		}
		if early := l.due[0].at.Sub(now); early > 0 && (early > batchWindow || early > l.due[0].c.spec.Interval/5) {
			l.mu.Unlock()
			return
		}
		lc := heap.Pop(&l.due).(*loopCheck)
		l.mu.Unlock()
		if lc.c.stopped() {
			continue
		}
		l.connect(lc, now)
	}
}

func (l *tcpLoop) connect(lc *loopCheck, now time.Time) {
	lc.due, lc.at, lc.deadline, lc.fd = lc.at, now, now.Add(lc.c.spec.Timeout), -1
	family, sa := sockets.Sockaddr(lc.ap)
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		l.finish(lc, err)
		return
	}
	lc.fd = int32(fd)
	switch err := unix.Connect(fd, sa); err {
	case nil:
		l.finish(lc, nil)
	case unix.EINPROGRESS:
		if err := l.p.Add(fd, unix.EPOLLOUT); err != nil {
			l.finish(lc, err)
			return
		}
		l.inflight[lc.fd] = lc
	default:
		l.finish(lc, err)
	}
}

// expire ends the checks in flight past their timeout.
func (l *tcpLoop) expire(now time.Time) {
	for _, lc := range l.inflight {
		if !now.Before(lc.deadline) {
			l.finish(lc, errLoopTimeout)
		}
	}
}

// nextWait is how long epoll_wait may sleep, in milliseconds (-1: until
// woken).
func (l *tcpLoop) nextWait(now time.Time) int {
	var next time.Time
	for _, lc := range l.inflight {
		if next.IsZero() || lc.deadline.Before(next) {
			next = lc.deadline
		}
	}
	l.mu.Lock()
	if len(l.due) > 0 && (next.IsZero() || l.due[0].at.Before(next)) {
		next = l.due[0].at
	}
	l.wake = true // schedule must wake us for anything earlier
	l.mu.Unlock()
	if next.IsZero() {
		return -1
	}
	// Round up so that the loop does not wake just before the time and
	// spin on a zero wait.
	return int((next.Sub(now) + time.Millisecond - 1) / time.Millisecond)
}

// finish closes a check's socket (with a reset, keeping no TIME_WAIT),
// reports its result and puts the server back on the heap.
func (l *tcpLoop) finish(lc *loopCheck, err error) {
	if lc.fd >= 0 {
		delete(l.inflight, lc.fd)
		unix.SetsockoptLinger(int(lc.fd), unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
		unix.Close(int(lc.fd)) // also leaves the epoll set
		lc.fd = -1
	}
	r := Result{At: lc.at, OK: err == nil, Desc: "L4OK", Duration: time.Since(lc.at)}
	if err != nil {
		r.Desc = describe(err)
	}
	c := lc.c
	if !c.report(r) {
		return // stopped
	}
	// From the time it was due, so that starting early in a batch does not
	// add up; never before now, so a slow check is followed, not overlapped.
	lc.at = lc.due.Add(c.next())
	if now := time.Now(); lc.at.Before(now) {
		lc.at = now
	}
	l.schedule(lc)
}

// errLoopTimeout is a connect that did not finish within the timeout.
var errLoopTimeout = unix.ETIMEDOUT

// dueHeap orders checks by due time.
type dueHeap []*loopCheck

func (h dueHeap) Len() int           { return len(h) }
func (h dueHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h dueHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i]; h[i].index = i; h[j].index = j }
func (h *dueHeap) Push(x any)        { lc := x.(*loopCheck); lc.index = len(*h); *h = append(*h, lc) }
func (h *dueHeap) Pop() any {
	old := *h
	lc := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return lc
}
