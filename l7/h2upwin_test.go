package l7

import (
	"bufio"
	"net"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// Giving window back to an h2c server never waits on the connection's
// write lock: a writer the server holds up (an upload to a server that
// stopped reading) held every response of the shared connection behind
// one WINDOW_UPDATE until its timeout. The increments wait for the holder,
// which writes them as it lets go.
func TestUpWindowUpdateDoesNotWaitForTheWriter(t *testing.T) {
	ours, theirs := net.Pipe()
	defer ours.Close()
	defer theirs.Close()
	u := &h2Up{conn: ours}
	u.bw = bufio.NewWriter(ours)
	u.wfr = http2.NewFramer(u.bw, nil)

	u.wmu.Lock() // a writer the server holds up
	done := make(chan struct{})
	go func() {
		u.sendWindow(40000, 3, 20000)
		u.sendWindow(0, 5, 30000)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("sendWindow waited for the write lock")
	}

	got := make(chan []*http2.WindowUpdateFrame, 1)
	go func() {
		fr := http2.NewFramer(nil, theirs)
		var ws []*http2.WindowUpdateFrame
		for len(ws) < 3 {
			f, err := fr.ReadFrame()
			if err != nil {
				break
			}
			if w, ok := f.(*http2.WindowUpdateFrame); ok {
				c := *w
				ws = append(ws, &c)
			}
		}
		got <- ws
	}()
	u.unlockW() // the holder lets go: the pending updates go out
	ws := <-got
	want := []struct {
		id  uint32
		inc uint32
	}{{0, 40000}, {3, 20000}, {5, 30000}}
	if len(ws) != len(want) {
		t.Fatalf("%d WINDOW_UPDATE frames written, want %d", len(ws), len(want))
	}
	for i, w := range want {
		if ws[i].StreamID != w.id || ws[i].Increment != w.inc {
			t.Fatalf("WINDOW_UPDATE %d: stream %d +%d, want stream %d +%d", i, ws[i].StreamID, ws[i].Increment, w.id, w.inc)
		}
	}
}
