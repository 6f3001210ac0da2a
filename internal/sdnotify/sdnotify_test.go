package sdnotify

import (
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestNotifySendsOneDatagram(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify.sock")
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	t.Setenv(Env, path)
	if err := Ready("serving"); err != nil {
		t.Fatal(err)
	}
	ln.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 512)
	n, err := ln.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	got := string(buf[:n])
	for _, want := range []string{"READY=1\n", "MAINPID=", "STATUS=serving\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("datagram %q lacks %q", got, want)
		}
	}
}

func TestNotifyWithoutSocketDoesNothing(t *testing.T) {
	t.Setenv(Env, "")
	if err := Reloading("x"); err != nil {
		t.Fatal(err)
	}
}
