package sockets

import (
	"encoding/json"
	"net"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestBindReusesByKey(t *testing.T) {
	a := Spec{Key: Key{"tcp", "127.0.0.1:0"}, Role: RoleFrontend}
	have, err := Bind([]Spec{a}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer have.Close()
	u := Spec{Key: Key{"udp", "127.0.0.1:0"}, Role: RoleFrontend}
	out, err := Bind([]Spec{a, u}, have)
	if err != nil {
		t.Fatal(err)
	}
	if out[a.Key] != have[a.Key] {
		t.Error("the socket with an unchanged key was not reused")
	}
	if out[u.Key] == nil || out[u.Key].Packet == nil {
		t.Error("udp socket not bound")
	}
	out[u.Key].Close()

	// A failing bind closes what this call bound and leaves have alone.
	busy := have[a.Key].Listener.Addr().String()
	if _, err := Bind([]Spec{u, {Key: Key{"tcp", busy}}}, nil); err == nil {
		t.Fatal("bound a busy address")
	}
	if _, err := have[a.Key].File(); err != nil {
		t.Errorf("have was touched: %v", err)
	}
}

// Sockets sent with SendFiles arrive as working listeners.
func TestSendReadFiles(t *testing.T) {
	set, err := Bind([]Spec{{Key: Key{"tcp", "127.0.0.1:0"}}, {Key: Key{"udp", "127.0.0.1:0"}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	a, b, err := pair()
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	defer b.Close()
	var entries []Entry
	var files []*os.File
	for k, s := range set {
		f, err := s.File()
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		entries = append(entries, Entry{Network: k.Network, Addr: k.Addr, FD: len(files)})
		files = append(files, f)
	}
	msg, _ := json.Marshal(entries)
	if err := SendFiles(a, msg, files); err != nil {
		t.Fatal(err)
	}
	b.SetDeadline(time.Now().Add(5 * time.Second))
	line, got, err := ReadFiles(b)
	if err != nil {
		t.Fatal(err)
	}
	var back []Entry
	if err := json.Unmarshal(line, &back); err != nil || len(got) != 2 {
		t.Fatalf("%s %d files: %v", line, len(got), err)
	}
	for _, e := range back {
		s, err := FromFile(e.Key(), got[e.FD])
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if e.Network == "tcp" {
			addr := set[Key{"tcp", "127.0.0.1:0"}].Listener.Addr().String()
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			c.Close()
			ac, err := s.Listener.Accept()
			if err != nil {
				t.Fatal(err)
			}
			ac.Close()
		}
	}
}

func pair() (*net.UnixConn, *net.UnixConn, error) {
	dir, err := os.MkdirTemp("", "sk")
	if err != nil {
		return nil, nil, err
	}
	defer os.RemoveAll(dir)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: dir + "/s", Net: "unix"})
	if err != nil {
		return nil, nil, err
	}
	defer l.Close()
	a, err := net.DialUnix("unix", nil, l.Addr().(*net.UnixAddr))
	if err != nil {
		return nil, nil, err
	}
	b, err := l.AcceptUnix()
	return a, b, err
}

// A worker's listener comes from an inherited file; the connections it
// accepts must be as the parent's ListenConfig says: no TCP keep-alive.
func TestInheritedListenerNoKeepAlive(t *testing.T) {
	k := Key{"tcp", "127.0.0.1:0"}
	parent, err := Listen(k, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer parent.Close()
	f, err := parent.File()
	if err != nil {
		t.Fatal(err)
	}
	child, err := FromFile(k, f)
	if err != nil {
		t.Fatal(err)
	}
	defer child.Close()
	for _, ln := range []net.Listener{parent.Listener, child.Listener} {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		sc, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer sc.Close()
		rc, err := sc.(*net.TCPConn).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var on int
		var serr error
		rc.Control(func(fd uintptr) { on, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_KEEPALIVE) })
		if serr != nil {
			t.Fatal(serr)
		}
		if on != 0 {
			t.Errorf("SO_KEEPALIVE = %d on a connection accepted by %T from %s, want 0", on, ln, ln.Addr())
		}
	}
}

// TestListenIsPlainTCP: frontends listen on plain TCP sockets (Go makes
// listeners Multipath TCP by default from 1.24 on), as HAProxy does.
func TestListenIsPlainTCP(t *testing.T) {
	s, err := Listen(Key{Network: "tcp", Addr: "127.0.0.1:0"}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rc, err := s.Listener.(*net.TCPListener).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var proto int
	var gerr error
	rc.Control(func(fd uintptr) { proto, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PROTOCOL) })
	if gerr != nil {
		t.Fatal(gerr)
	}
	if proto != unix.IPPROTO_TCP {
		t.Errorf("listener protocol %d, want IPPROTO_TCP (%d); IPPROTO_MPTCP is %d", proto, unix.IPPROTO_TCP, unix.IPPROTO_MPTCP)
	}
}
