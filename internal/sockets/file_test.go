package sockets

import (
	"net"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// File hands a socket to a worker without taking its non-blocking mode
// away: os/exec calls Fd on every ExtraFile, and Fd of a file made by
// net's File() clears O_NONBLOCK on the open file description that the
// master and every running worker share. A worker then blocked in
// accept(2), where closing the listener does not wake it, and hung in
// StopAccepting: it never answered "drain" nor noticed its master go.
func TestFileKeepsSocketNonBlocking(t *testing.T) {
	set, err := Bind([]Spec{{Key: Key{Network: "tcp", Addr: "127.0.0.1:0"}, Role: RoleFrontend}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var s *Socket
	for _, v := range set {
		s = v
	}
	defer s.Close()
	f, err := s.File()
	if err != nil {
		t.Fatal(err)
	}
	f.Fd() // what os.StartProcess does with cmd.ExtraFiles
	defer f.Close()

	rc, err := s.Listener.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var nb bool
	rc.Control(func(fd uintptr) {
		var fl int
		fl, err = unix.FcntlInt(fd, unix.F_GETFL, 0)
		nb = fl&unix.O_NONBLOCK != 0
	})
	if err != nil || !nb {
		t.Fatalf("listener non-blocking = %v (%v) after handing it over, want true", nb, err)
	}

	// What the worker saw: an Accept pending while the listener closes
	// must return.
	accepted := make(chan error, 1)
	go func() {
		c, err := s.Listener.Accept()
		if err == nil {
			c.Close()
		}
		accepted <- err
	}()
	closed := make(chan struct{})
	go func() { s.Listener.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		net.Dial("tcp", s.Listener.Addr().String()) // let the accept go, so the test ends
		t.Fatal("closing the listener hung behind a blocking accept")
	}
	if err := <-accepted; err == nil {
		t.Fatal("accept succeeded on a closed listener")
	}
}
