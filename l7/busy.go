package l7

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"sluice/internal/gopool"
)

// busy bounds the HTTP/1 client connections worked on at once in the
// process: those a goroutine serves, or waits on briefly between requests
// (waitBrief). Past the bound a connection that finished a response parks
// at once, and one the park set finds readable waits in a FIFO ready queue
// holding no goroutine and no buffer (its request stays in the kernel)
// until a slot frees; the goroutine that frees it starts the next one.
// HAProxy holds buffers only while bytes wait in them and works on what
// its threads can: 8,000 busy wrk clients each held a grown stack, buffers
// and a server connection here, 2.3-2.75x HAProxy's peak memory.
//
// A slot is for work: a holder whose server has not answered within
// busyServerWait while slots are in demand gives it up and waits on
// unslotted (serverWaitShort), so long polls do not throttle the rest.
//
// Only connections that can park (a raw descriptor, park_linux.go) take
// slots; the others (TLS, h2c, no epoll set) are served as before.
var busy struct {
	limit  atomic.Int32 // the bound (SetBusyLimit; busyLimitDefault)
	extra  atomic.Int32 // slots lent past limit while the queue stalled (busyWatch)
	active atomic.Int32 // slots held
	queued atomic.Int32 // connections in the ready queue
	freed  atomic.Uint64

	mu         sync.Mutex
	head, tail *clientConn // the ready queue (clientConn.qNext)
	watch      *time.Timer
	watching   bool
	lastFreed  uint64
}

// busyLimitDefault is the bound: 128 connections per core, 256 at the
// least. On the 2-core bench machine, 256 in flight kept both cores busy
// with wrk -c8000 (req/s as without a bound) while the peak memory fell
// (docs/performance.md); fewer starved nothing either but gained little.
func busyLimitDefault() int32 { return int32(max(256, 128*runtime.GOMAXPROCS(0))) }

// busyStall is how long the ready queue may go without a slot freed
// before more are lent (busyWatch): slots held by slow clients, or by
// requests whose body streams to a slow server (no give-up there), must
// not stop every other client. Nanoseconds,
// atomic for tests (0: never lend).
var busyStall atomic.Int64

// busyServerWait is how long a slot holder waits for its server's answer
// before it gives its slot up (serverWaitShort). Nanoseconds, atomic for
// tests (0: never).
var busyServerWait atomic.Int64

func init() {
	busy.limit.Store(busyLimitDefault())
	busyStall.Store(int64(50 * time.Millisecond))
	busyServerWait.Store(int64(20 * time.Millisecond))
}

// busyLend caps the slots lent, in multiples of the limit.
const busyLend = 64

// slotTake takes a slot if one is free.
func slotTake() bool {
	for {
		n := busy.active.Load()
		if n >= busy.limit.Load()+busy.extra.Load() {
			return false
		}
		if busy.active.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// slotGive frees the slot of a goroutine that stops working on its
// connection: the first ready connection, if any, gets it.
func slotGive() {
	busy.freed.Add(1)
	if busy.queued.Load() > 0 && busy.active.Load() <= busy.limit.Load()+busy.extra.Load() {
		if next := readyPop(); next != nil {
			next.startSlotted()
			return
		}
	}
	if a := busy.active.Add(-1); busy.extra.Load() > 0 {
		loanShrink(a)
	}
	// A connection queued after the check above would wait for a slot
	// nobody frees: look again (atomics order this decrement before that
	// look, and readyPush's queueing before its own slotTake).
	if busy.queued.Load() > 0 {
		readyKick()
	}
}

// readyKick starts ready connections while slots are free.
func readyKick() {
	for busy.queued.Load() > 0 && slotTake() {
		next := readyPop()
		if next == nil {
			busy.active.Add(-1)
			continue
		}
		next.startSlotted()
	}
}

// startSlotted gives a ready connection its goroutine, with a slot.
func (c *clientConn) startSlotted() {
	c.slot = true
	if c.parkTimer != nil {
		c.parkTimer.Stop()
	}
	gopool.Go(c.resumeFn)
}

// readyPush queues a readable parked connection that found no slot.
func readyPush(c *clientConn) {
	c.p.Counters.SlotWaits.Add(1)
	busy.mu.Lock()
	c.queued, c.qNext = true, nil
	if busy.tail == nil {
		busy.head = c
	} else {
		busy.tail.qNext = c
	}
	busy.tail = c
	busy.queued.Add(1)
	if d := time.Duration(busyStall.Load()); !busy.watching && d > 0 {
		busy.watching = true
		busy.lastFreed = busy.freed.Load()
		if busy.watch == nil {
			busy.watch = time.AfterFunc(d, busyWatch)
		} else {
			busy.watch.Reset(d)
		}
	}
	busy.mu.Unlock()
	readyKick()
}

// readyPop takes the first ready connection (nil: none).
func readyPop() *clientConn {
	busy.mu.Lock()
	c := busy.head
	if c != nil {
		readyUnlinkLocked(c, nil)
	}
	busy.mu.Unlock()
	return c
}

// readyUnlinkLocked takes c, whose predecessor is prev, out of the queue.
func readyUnlinkLocked(c, prev *clientConn) {
	if prev == nil {
		busy.head = c.qNext
	} else {
		prev.qNext = c.qNext
	}
	if busy.tail == c {
		busy.tail = prev
	}
	c.qNext, c.queued = nil, false
	busy.queued.Add(-1)
}

// readyTake takes c out of the queue if it is there and pred says so;
// the queue is walked, which only its timeouts do.
func readyTake(c *clientConn, pred func() bool) bool {
	busy.mu.Lock()
	defer busy.mu.Unlock()
	if !c.queued || !pred() {
		return false
	}
	var prev *clientConn
	for q := busy.head; q != nil && q != c; q = q.qNext {
		prev = q
	}
	readyUnlinkLocked(c, prev)
	return true
}

// busyWatch runs every busyStall while connections are queued: when no
// slot was freed since its last run, every holder is stuck (slow servers,
// long polls), and another limit's worth of slots is lent. The loan ends
// as the lent slots come back once the queue is empty (loanShrink).
func busyWatch() {
	busy.mu.Lock()
	if busy.head == nil {
		busy.watching = false
		loanShrink(busy.active.Load())
		busy.mu.Unlock()
		return
	}
	if f := busy.freed.Load(); f == busy.lastFreed {
		if l := busy.limit.Load(); busy.extra.Load() < busyLend*l {
			busy.extra.Add(l)
		}
	} else {
		busy.lastFreed = f
	}
	if d := time.Duration(busyStall.Load()); d > 0 {
		busy.watch.Reset(d)
	} else {
		busy.watching = false
	}
	busy.mu.Unlock()
	readyKick()
}

// loanShrink ends the loan as far as the slots held (active) allow, once
// nothing waits for them: a loan ended outright while its borrowers still
// held their slots (active past the limit) had every slot freed after it
// vanish until active fell below the limit, the connections cycling
// through the rest meanwhile each queued behind one another.
func loanShrink(active int32) {
	for {
		e := busy.extra.Load()
		want := max(0, min(e, active-busy.limit.Load()))
		if want == e || busy.extra.CompareAndSwap(e, want) {
			return
		}
	}
}

// serverWaitShort is how long c, about to wait for its server's answer,
// waits at first before it gives its slot up (0: it waits holding its
// slot, as when it holds none). A slot is for a connection sluice works
// on: a request its server sits on (a long poll) must not keep one from
// the others. Only while slots are in demand (some queued, or more than
// half held); then its holders each pay a short read deadline and its
// reset, keep-alive clients under the bound none. So at most half the
// slots wait long on their servers.
func (c *clientConn) serverWaitShort() time.Duration {
	if !c.slot {
		return 0
	}
	d := busyServerWait.Load()
	if d <= 0 || busy.queued.Load() == 0 && busy.active.Load() <= busy.limit.Load()/2 {
		return 0
	}
	return time.Duration(d)
}

// writeSlotted writes b to the client under timeout_client (dl, timeout).
// A slot holder while slots are in demand (serverWaitShort) waits for the
// client to take the bytes for busyServerWait at first: a client that
// reads slowly (a large download to a phone) gives its slot up and is
// written on without one, as a request its server sits on. Slow readers
// held every slot before, and the others waited for them.
func (c *clientConn) writeSlotted(b []byte, dl *deadlines, timeout time.Duration) (int, error) {
	d := c.serverWaitShort()
	if d == 0 {
		dl.write(c.conn, time.Now(), timeout)
		return c.conn.Write(b)
	}
	c.conn.SetWriteDeadline(time.Now().Add(d))
	n, err := c.conn.Write(b)
	slow := err != nil && isTimeout(err)
	if slow {
		c.slotDrop() // the client takes its time: write on without the slot
	}
	// timeout_client's deadline again, for the rest and for whatever
	// writes next (a 1xx head, an error page): none may meet the short one.
	dl.w = time.Time{}
	if timeout > 0 {
		dl.write(c.conn, time.Now(), timeout)
	} else {
		c.conn.SetWriteDeadline(time.Time{})
	}
	if !slow {
		return n, err
	}
	m, err := c.conn.Write(b[n:])
	return n + m, err
}

// slotBack is the turn between requests of a connection that holds no
// slot (it gave its slot up while its server thought, or could not park):
// it takes a free one when nobody is queued, else it parks, its next
// request to queue as anyone's. False: c parked (the park set's now).
func (c *clientConn) slotBack() bool {
	if busy.queued.Load() == 0 && slotTake() {
		c.slot = true
		return true
	}
	return !c.parkNow()
}

// slotDrop gives c's slot up, if it holds one (the connection ends, parks
// or becomes a tunnel).
func (c *clientConn) slotDrop() {
	if c.slot {
		c.slot = false
		slotGive()
	}
}

// yieldDue reports whether a slot holder should park after its response:
// ready connections wait for a slot.
func (c *clientConn) yieldDue() bool { return c.slot && busy.queued.Load() > 0 }
