package backend

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Errors of PickWait.
var (
	// ErrNoServer: no server of the backend can take traffic at all (down,
	// in maintenance, draining or weighted 0), so waiting would not help.
	ErrNoServer = errors.New("no server available")
	// ErrQueueTimeout: every server that can take traffic stayed at its
	// maxconn for the whole queue_timeout.
	ErrQueueTimeout = errors.New("queue timeout: every server is at its maxconn")
)

// PickWait chooses a server for c as Pick does and counts a connection to it
// (TryAcquire): the caller must Release the server it gets. When every
// server that is up is at its maxconn, the call waits in the backend's queue,
// first come first served, until a slot frees, QueueTimeout passes
// (ErrQueueTimeout) or ctx ends (its error). When no server is up at all it
// returns ErrNoServer at once. QueueTimeout 0 disables waiting.
func (b *Backend) PickWait(ctx context.Context, c *Client, skip *Server) (*Server, error) {
	return b.pickWait(ctx, c, skip, nil, false)
}

// pickWait is PickWait; while it waits in the queue it watches the
// client's connection watch (when not nil) and leaves when the client
// closes it.
func (b *Backend) pickWait(ctx context.Context, c *Client, skip *Server, watch net.Conn, resetOnly bool) (*Server, error) {
	// Newcomers go straight to a server only while nobody queues, so they
	// do not overtake those already waiting.
	if b.queue.waiting.Load() == 0 {
		if s := b.pickAcquire(c, skip); s != nil {
			return s, nil
		}
	}
	if !b.pool.Load().usable() {
		return nil, ErrNoServer
	}
	if b.QueueTimeout <= 0 {
		b.Counters.QueueTimeouts.Add(1)
		return nil, ErrQueueTimeout
	}
	if watch != nil {
		// Only a connection that has to wait pays for a watcher.
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()
		if stop := watchGone(watch, resetOnly, cancel); stop != nil {
			defer stop()
		}
	}
	return b.wait(ctx, c, skip)
}

// pickAcquire picks and acquires in one go. TryAcquire fails only when a
// racing pick took the server's last slot, after which Pick no longer offers
// that server, so a bounded number of attempts sees every server full.
func (b *Backend) pickAcquire(c *Client, skip *Server) *Server {
	for range len(b.pool.Load().all) + 1 {
		s := b.Pick(c, skip)
		if s == nil {
			return nil
		}
		if s.TryAcquire() {
			return s
		}
	}
	return nil
}

// wait queues for a slot. Lost wake-ups are ruled out by ordering: Release
// lowers a server's active count and then looks for waiters; a waiter
// registers and then (when it is first in line) tries to pick. One of the
// two sees the other.
func (b *Backend) wait(ctx context.Context, c *Client, skip *Server) (*Server, error) {
	q := &b.queue
	b.Counters.Queued.Add(1)
	n := b.Counters.Queue.Add(1)
	defer b.Counters.Queue.Add(-1)
	for {
		m := b.Counters.MaxQueue.Load()
		if n <= m || b.Counters.MaxQueue.CompareAndSwap(m, n) {
			break
		}
	}
	timer := time.NewTimer(b.QueueTimeout)
	defer timer.Stop()
	w := &waiter{ch: make(chan struct{}, 1)}
	front := false // a waiter that was woken but lost the slot keeps its place
	for {
		if q.push(w, front) {
			// First in line: nobody may have been told of a slot freed
			// just before we registered, so look for one now.
			if s := b.pickAcquire(c, skip); s != nil {
				q.remove(w)
				b.passOn()
				return s, nil
			}
			if !b.pool.Load().usable() {
				q.remove(w)
				q.wakeIfWaiting() // let the others find out too
				return nil, ErrNoServer
			}
		}
		select {
		case <-w.ch:
			if s := b.pickAcquire(c, skip); s != nil {
				b.passOn()
				return s, nil
			}
			if !b.pool.Load().usable() {
				q.wakeIfWaiting()
				return nil, ErrNoServer
			}
			front = true
		case <-timer.C:
			q.leave(w)
			b.Counters.QueueTimeouts.Add(1)
			return nil, ErrQueueTimeout
		case <-ctx.Done():
			q.leave(w)
			return nil, ctx.Err()
		}
	}
}

// passOn wakes the next waiter after one got a slot, if another slot is
// free: a server coming up (or several releases at once) may have made room
// for more than one, and each waiter served hands on to the next.
func (b *Backend) passOn() {
	if b.queue.waiting.Load() > 0 && b.pool.Load().available() {
		b.queue.wake()
	}
}

// waitQueue is a backend's FIFO of connections waiting for a free slot. It
// is touched only when every server is full; waiting lets Release check for
// waiters with one atomic load.
type waitQueue struct {
	waiting atomic.Int64

	mu         sync.Mutex
	head, tail *waiter
}

type waiter struct {
	ch         chan struct{} // receives one token when woken
	prev, next *waiter
	queued     bool // in the list (guarded by waitQueue.mu)
}

// push adds w at the back (front: at the front) and reports whether w is
// first in line.
func (q *waitQueue) push(w *waiter, front bool) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	w.queued = true
	q.waiting.Add(1)
	if q.head == nil {
		q.head, q.tail = w, w
		w.prev, w.next = nil, nil
		return true
	}
	if front {
		w.prev, w.next = nil, q.head
		q.head.prev = w
		q.head = w
		return true
	}
	w.prev, w.next = q.tail, nil
	q.tail.next = w
	q.tail = w
	return false
}

func (q *waitQueue) unlink(w *waiter) {
	if w.prev != nil {
		w.prev.next = w.next
	} else {
		q.head = w.next
	}
	if w.next != nil {
		w.next.prev = w.prev
	} else {
		q.tail = w.prev
	}
	w.prev, w.next = nil, nil
	w.queued = false
	q.waiting.Add(-1)
}

// remove takes w out of the queue if it is still there.
func (q *waitQueue) remove(w *waiter) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !w.queued {
		return false
	}
	q.unlink(w)
	return true
}

// leave takes w out of the queue for good. If a wake-up was already sent to
// w, it is passed on to the next waiter so that the slot it announced is not
// lost.
func (q *waitQueue) leave(w *waiter) {
	if !q.remove(w) {
		q.wakeIfWaiting()
	}
}

// wake sends a token to the first waiter and takes it out of the queue.
func (q *waitQueue) wake() {
	q.mu.Lock()
	if w := q.head; w != nil {
		q.unlink(w)
		select {
		case w.ch <- struct{}{}:
		default:
		}
	}
	q.mu.Unlock()
}

func (q *waitQueue) wakeIfWaiting() {
	if q.waiting.Load() > 0 {
		q.wake()
	}
}
