//go:build linux

package poller

import (
	"testing"

	"golang.org/x/sys/unix"
)

// A readable descriptor is reported with its own number; Wake interrupts a
// wait with no timeout and Drain clears it; Del stops the reports.
func TestPoller(t *testing.T) {
	p, err := New()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	var sv [2]int
	if sv, err = unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(sv[0])
	defer unix.Close(sv[1])
	if err := p.Add(sv[0], unix.EPOLLIN); err != nil {
		t.Fatal(err)
	}
	if err := p.Add(sv[0], unix.EPOLLIN); err == nil {
		t.Fatal("adding a descriptor twice: no error")
	}
	events := make([]unix.EpollEvent, 4)
	if n, err := p.PollNow(events); n != 0 || err != nil {
		t.Fatalf("PollNow on nothing = %d, %v", n, err)
	}
	unix.Write(sv[1], []byte("x"))
	if n, err := p.Wait(events, 10_000); n != 1 || err != nil || int(events[0].Fd) != sv[0] || p.IsWake(events[0].Fd) {
		t.Fatalf("Wait = %d, %v, fd %d; want fd %d", n, err, events[0].Fd, sv[0])
	}
	if err := p.Del(sv[0]); err != nil {
		t.Fatal(err)
	}
	p.Wake()
	n, err := p.Wait(events, -1)
	if n != 1 || err != nil || !p.IsWake(events[0].Fd) {
		t.Fatalf("Wait after Wake = %d, %v, want the wake-up", n, err)
	}
	p.Drain()
	if n, err := p.PollNow(events); n != 0 || err != nil {
		t.Fatalf("PollNow after Drain and Del = %d, %v, want nothing", n, err)
	}
	if err := p.Mod(sv[0], unix.EPOLLIN); err == nil {
		t.Fatal("Mod of a deleted descriptor: no error")
	}
}
