//go:build linux

// Package poller is the epoll plumbing shared by sluice's own event loops
// (the TCP relay's and the tcp health checks'): an epoll descriptor, an
// eventfd that interrupts a wait, and the calls a loop makes on them. It
// holds no policy: each loop decides what to watch and when to stop.
package poller

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Poller is one epoll instance with an eventfd registered for wake-ups.
type Poller struct {
	ep, wake int
	// f and rc, after InGo, hold ep in Go's own poller (WaitGo).
	f  *os.File
	rc syscall.RawConn
	// waitN and waitFn are WaitGo's read, bound once.
	waitEv []unix.EpollEvent
	waitN  int
	waitFn func(fd uintptr) bool
}

// New creates an epoll instance and its wake-up eventfd. It fails, with
// nothing left open, when the process is out of descriptors, say.
func New() (*Poller, error) {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(ep)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, wake, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wake)}); err != nil {
		unix.Close(ep)
		unix.Close(wake)
		return nil, fmt.Errorf("epoll_ctl(eventfd): %w", err)
	}
	return &Poller{ep: ep, wake: wake}, nil
}

// Add, Mod and Del change what the poller waits for on fd; the event
// reports fd itself.
func (p *Poller) Add(fd int, events uint32) error {
	return unix.EpollCtl(p.ep, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: events, Fd: int32(fd)})
}

// AddTag is Add with a tag of the caller's reported in the event's Fd and
// Pad fields instead of fd: a waiter that must tell a registration from a
// later one of the same descriptor number (closed and reused) tags each.
// A tag's pad must not be 0, which marks the wake-up's event.
func (p *Poller) AddTag(fd int, events uint32, tag, pad int32) error {
	return unix.EpollCtl(p.ep, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: events, Fd: tag, Pad: pad})
}

func (p *Poller) Mod(fd int, events uint32) error {
	return unix.EpollCtl(p.ep, unix.EPOLL_CTL_MOD, fd, &unix.EpollEvent{Events: events, Fd: int32(fd)})
}

func (p *Poller) Del(fd int) error {
	return unix.EpollCtl(p.ep, unix.EPOLL_CTL_DEL, fd, nil)
}

// Wait is epoll_wait for up to msec milliseconds (-1: until an event or a
// wake-up). An interrupted wait is no error: it returns 0 events.
func (p *Poller) Wait(events []unix.EpollEvent, msec int) (int, error) {
	n, err := unix.EpollWait(p.ep, events, msec)
	if errors.Is(err, unix.EINTR) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("epoll_wait: %w", err)
	}
	return n, nil
}

// PollNow is epoll_wait with a zero timeout as a raw system call: it never
// blocks, so the scheduler need not know, and a busy loop keeps its P.
func (p *Poller) PollNow(events []unix.EpollEvent) (int, error) {
	r, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(p.ep), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), 0, 0, 0)
	if e == unix.EINTR {
		return 0, nil
	}
	if e != 0 {
		return 0, fmt.Errorf("epoll_pwait: %w", e)
	}
	return int(r), nil
}

// InGo puts the epoll descriptor in Go's own poller, for WaitGo: a loop
// waiting there parks its goroutine, where a blocking epoll_wait holds a
// thread in a system call, whose P the runtime's monitor hands off and
// then watches every 20 µs. After InGo, Close closes it through Go.
func (p *Poller) InGo() error {
	if err := unix.SetNonblock(p.ep, true); err != nil {
		return err
	}
	f := os.NewFile(uintptr(p.ep), "epoll")
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	p.f, p.rc = f, rc
	p.waitFn = p.pollFd
	return nil
}

func (p *Poller) pollFd(fd uintptr) bool {
	ev := p.waitEv
	r, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, fd, uintptr(unsafe.Pointer(&ev[0])), uintptr(len(ev)), 0, 0, 0)
	if e != 0 || r == 0 {
		return false // nothing yet (EINTR included): wait for the next edge
	}
	p.waitN = int(r)
	return true
}

// WaitGo is Wait for a Poller put in Go's poller (InGo): the goroutine
// parks until an event or timeout (0 events).
func (p *Poller) WaitGo(events []unix.EpollEvent, timeout time.Duration) (int, error) {
	p.waitEv, p.waitN = events, 0
	p.f.SetReadDeadline(time.Now().Add(timeout))
	err := p.rc.Read(p.waitFn)
	p.waitEv = nil
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return 0, nil
		}
		return 0, fmt.Errorf("epoll_pwait: %w", err)
	}
	return p.waitN, nil
}

// Wake interrupts a Wait in progress, or the next one. Safe from any
// goroutine.
func (p *Poller) Wake() {
	one := [8]byte{1}
	unix.Write(p.wake, one[:])
}

// IsWake reports whether an event is the wake-up's; the loop then calls
// Drain.
func (p *Poller) IsWake(fd int32) bool { return int(fd) == p.wake }

// Drain resets the wake-up so that it stops being reported.
func (p *Poller) Drain() {
	var b [8]byte
	unix.Read(p.wake, b[:])
}

// Close closes both descriptors. Only the loop that waits calls it, once
// it no longer waits.
func (p *Poller) Close() error {
	if p.f != nil {
		return errors.Join(p.f.Close(), unix.Close(p.wake))
	}
	return errors.Join(unix.Close(p.ep), unix.Close(p.wake))
}
