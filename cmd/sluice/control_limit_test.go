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
)

// TestControlRequestLineIsBounded: a request line without a newline is read
// up to maxControlLine bytes, answered with an error and closed, instead of
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
