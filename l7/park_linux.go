//go:build linux

package l7

import (
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"sluice/internal/gopool"
	"sluice/internal/poller"
)

// parking holds the keep-alive HTTP/1 clients quiet past idleHandOff with
// no goroutine: their descriptors wait in one epoll set of the process's,
// watched by one goroutine (parkLoop), and a fresh goroutine serves a
// client again once its descriptor is readable or hung up. A waiting
// goroutine cost ~2.5 KiB per idle client (its 2 KiB stack and the g);
// a slot here costs a few words and a runtime timer.
var parking struct {
	once sync.Once
	pl   *poller.Poller // nil: no epoll set (out of descriptors): the goroutine wait serves
	mu   sync.Mutex
	// slots are the parked clients; a client's event carries its slot's
	// index and generation, so an event fetched before its slot was taken
	// (drain, timeout) and given to another client is told apart.
	slots []parkSlot
	free  []int32
}

type parkSlot struct {
	c     *clientConn
	gen   int32     // never 0 (the poller's wake-up event has 0)
	until time.Time // timeout_client's end (zero: none)
}

func parkStart() {
	pl, err := poller.New()
	if err != nil {
		return
	}
	parking.pl = pl
	go parkLoop(pl)
}

// park hands a quiet keep-alive client's wait to the epoll set and reports
// true; false (no epoll set, a draining proxy, a descriptor that cannot be
// added), the caller waits on a goroutine as before. Nothing is buffered:
// serve parks only with an empty read buffer, so bytes already read never
// wait for a readiness that will not come.
func (c *clientConn) park() bool {
	parking.once.Do(parkStart)
	pl := parking.pl
	if pl == nil || c.raw == nil {
		return false
	}
	if c.resumeFn == nil {
		c.resumeFn = c.resume // bound once: kept with c in its pool
	}
	if c.parkTimer == nil && !c.idleUntil.IsZero() {
		c.parkTimer = time.AfterFunc(time.Hour, c.parkExpired)
		c.parkTimer.Stop()
	}
	// Under the lock from the slot to the timer: a taker (the loop, Drain,
	// the timer) sees a client whole, and Drain's flag is read in order
	// with its scan (it sets the flag, then takes the lock).
	parking.mu.Lock()
	defer parking.mu.Unlock()
	if c.p.draining.Load() {
		return false
	}
	var i int32
	if n := len(parking.free); n > 0 {
		i = parking.free[n-1]
		parking.free = parking.free[:n-1]
	} else {
		i = int32(len(parking.slots))
		parking.slots = append(parking.slots, parkSlot{})
	}
	s := &parking.slots[i]
	s.gen++
	if s.gen <= 0 {
		s.gen = 1
	}
	var err error
	cerr := c.raw.Control(func(fd uintptr) {
		// Level state is checked as the descriptor is added: a request that
		// came since the last read is reported at once.
		err = pl.AddTag(int(fd), unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLONESHOT, i, s.gen)
	})
	if cerr != nil || err != nil {
		parking.free = append(parking.free, i)
		return false
	}
	s.c, s.until = c, c.idleUntil
	c.parkIdx = i + 1
	if !s.until.IsZero() {
		c.parkTimer.Reset(time.Until(s.until))
	}
	return true
}

// takeLocked takes slot i's client out of the set (parking.mu held).
func takeLocked(i int32) *clientConn {
	s := &parking.slots[i]
	c := s.c
	s.c, s.until = nil, time.Time{}
	c.parkIdx = 0
	parking.free = append(parking.free, i)
	return c
}

// unpark gives a taken client its goroutine back, with no slot of busy
// (a timeout or a drain: it ends soon): the descriptor leaves the set
// first, so a later park can add it again. resume's waitNext reads before
// it waits, and ends the wait at once past timeout_client or at a drain,
// as for a client that waited on a goroutine.
func (c *clientConn) unpark() {
	c.raw.Control(func(fd uintptr) { parking.pl.Del(int(fd)) })
	if c.parkTimer != nil {
		c.parkTimer.Stop()
	}
	c.ready = false
	gopool.Go(c.resumeFn) // a kept goroutine: it serves the request that came
}

// unparkReady serves a client found readable: with a slot of busy when
// one is free, else it waits in the ready queue, its timer running
// (timeout_client goes on counting there).
func (c *clientConn) unparkReady() {
	c.raw.Control(func(fd uintptr) { parking.pl.Del(int(fd)) })
	c.ready = true
	if slotTake() {
		c.startSlotted()
		return
	}
	readyPush(c)
}

// parkLoop waits on the epoll set for as long as the process runs.
func parkLoop(pl *poller.Poller) {
	events := make([]unix.EpollEvent, 128)
	taken := make([]*clientConn, 0, len(events))
	for {
		n, err := pl.Wait(events, -1)
		if err != nil {
			continue // not seen in practice: EINTR is no error
		}
		parking.mu.Lock()
		for _, ev := range events[:n] {
			i := ev.Fd
			if ev.Pad == 0 || int(i) >= len(parking.slots) {
				continue // the wake-up: not used
			}
			if s := &parking.slots[i]; s.c != nil && s.gen == ev.Pad {
				taken = append(taken, takeLocked(i))
			}
		}
		parking.mu.Unlock()
		for i, c := range taken {
			c.unparkReady()
			taken[i] = nil
		}
		taken = taken[:0]
	}
}

// parkExpired is c's timer: a client still parked past timeout_client is
// resumed, to be closed by waitNext's passed deadline. A fire left over from
// an earlier wait of c finds it not parked, or parked with a later end.
// One in the ready queue past its end leaves the queue the same way.
func (c *clientConn) parkExpired() {
	now := time.Now()
	parking.mu.Lock()
	i := c.parkIdx - 1
	if i < 0 || parking.slots[i].until.After(now) {
		parking.mu.Unlock()
		// The client may be queued since parkLoop took it: its
		// idleUntil is the slot's until, unchanged until it resumes.
		if readyTake(c, func() bool { return !c.idleUntil.IsZero() && !c.idleUntil.After(now) }) {
			c.ready = false
			gopool.Go(c.resumeFn)
		}
		return
	}
	takeLocked(i)
	parking.mu.Unlock()
	c.unpark()
}

// unparkAll resumes p's parked clients (Drain, after setting p.draining):
// their waitNext then closes them as it closes the idle ones that wait on
// a goroutine. Queued ones are readable: they keep their turn and their
// requests are answered with "Connection: close".
func (p *Proxy) unparkAll() {
	var taken []*clientConn
	parking.mu.Lock()
	for i := range parking.slots {
		if c := parking.slots[i].c; c != nil && c.p == p {
			taken = append(taken, takeLocked(int32(i)))
		}
	}
	parking.mu.Unlock()
	for _, c := range taken {
		c.unpark()
	}
}
