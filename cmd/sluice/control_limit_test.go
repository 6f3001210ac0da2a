package main

import (
	"bufio"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sluice/internal/testutil"
	"sluice/supervisor"
)

// TestControlRequestLineIsBounded: a request line without a newline is read
// up to supervisor.maxControlLine bytes, answered with an error and closed, instead of
// growing the master's memory for as long as the client sends (issue 15:
// 200 MiB grew the master to 433 MB). The master answers the next request.
func TestControlRequestLineIsBounded(t *testing.T) {
	dir := shortDir(t)
	web, raw := testutil.FreeAddr(t), testutil.FreeAddr(t)
	file := filepath.Join(dir, "sluice.toml")
	os.WriteFile(file, []byte(lbConfig(dir, web, raw, []*pair{startPair(t, "a1")})), 0o644)
	l := startLB(t, binary, file, filepath.Join(dir, "ctl.sock"))

	c, err := net.Dial("unix", l.ctl)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	const total = 32 << 20
	written := make(chan int, 1)
	go func() {
		chunk := []byte(`{"cmd":"status","pad":"` + strings.Repeat("x", 64<<10))
		n := 0
		for n < total {
			m, err := c.Write(chunk)
			n += m
			if err != nil {
				break
			}
		}
		written <- n
	}()
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("no answer to an over-long request: %v", err)
	}
	if !strings.Contains(line, "bad request") || !strings.Contains(line, "longer than 65536 bytes") {
		t.Fatalf("answer %q, want a bad request naming the limit", line)
	}
	c.Close() // ends the writer if the master has not
	if n := <-written; n >= total {
		t.Errorf("the master took all %d bytes of a line it should have refused after 64 KiB", n)
	}
	if r := l.status(); !r.OK {
		t.Fatalf("status after the refused request: %+v", r)
	}
}

// TestControlConnectionsAreCapped: idle connections to the control socket
// (issue 15 review: 3000 held 10 s each) take at most 32 slots; the next
// one is answered with an error line and closed, refusals show in status,
// and an idle connection is closed after a short deadline.
func TestControlConnectionsAreCapped(t *testing.T) {
	dir := shortDir(t)
	web, raw := testutil.FreeAddr(t), testutil.FreeAddr(t)
	file := filepath.Join(dir, "sluice.toml")
	os.WriteFile(file, []byte(lbConfig(dir, web, raw, []*pair{startPair(t, "a1")})), 0o644)
	l := startLB(t, binary, file, filepath.Join(dir, "ctl.sock"))

	var idle []net.Conn
	defer func() {
		for _, c := range idle {
			c.Close()
		}
	}()
	// Bounded: the cap is 32; 40 show it wherever the master counts from.
	var refused net.Conn
	for range 40 {
		c, err := net.Dial("unix", l.ctl)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(30 * time.Second))
		idle = append(idle, c)
		if len(idle) > 32 {
			refused = c
			break
		}
	}
	line, err := bufio.NewReader(refused).ReadString('\n')
	if err != nil || !strings.Contains(line, "too many control connections") {
		t.Fatalf("the 33rd connection got %q, %v; want an error line naming the cap", line, err)
	}
	// The idle ones are closed by the master after its deadline, with an
	// error line, and their slots come back.
	b, err := bufio.NewReader(idle[0]).ReadString('\n')
	if err != nil || !strings.Contains(b, "bad request") {
		t.Fatalf("an idle connection got %q, %v; want it answered and closed", b, err)
	}
	waitFor(t, 20*time.Second, "status once the idle ones are gone", func() bool {
		r, _, err := supervisor.Control(l.ctl, map[string]any{"cmd": "status"}, 5*time.Second)
		return err == nil && r.OK && r.ControlRefused >= 1
	})
}
