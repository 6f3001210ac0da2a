package frontend_test

import (
	"bufio"
	"io"
	"testing"
	"time"

	"sluice/internal/testutil"
)

// A tcp relay's server side holds a slot of the process's server
// connection budget (global.maxconn), which HTTP/2 streams share: when
// they hold every slot, a tcp client is refused instead of the process
// running out of descriptors, and the slot comes back when a relay ends.
func TestTCPServerConnsShareTheBudget(t *testing.T) {
	a := testutil.Serve(t, "a", testutil.Namer("a"))
	eng, front := testutil.Start(t, tcpConfig("maxconn = 3", server("a", a.Addr, 1)))
	sc := eng.Front.ServerConns()
	if sc.Max() != 3 {
		t.Fatalf("budget %d, want global.maxconn = 3", sc.Max())
	}
	held := 0
	for held < 10 && sc.Take() {
		held++
	}
	if held != 3 {
		t.Fatalf("took %d slots of a budget of 3", held)
	}
	c := testutil.Dial(t, front)
	if b, err := io.ReadAll(c); len(b) != 0 || err != nil {
		t.Fatalf("with the budget spent, got %q, %v; want the connection closed without a byte", b, err)
	}
	f := eng.Front.Frontends[0]
	if n := f.Counters.ServerConnsExhausted.Load(); n != 1 {
		t.Fatalf("ServerConnsExhausted = %d, want 1", n)
	}
	for range held {
		sc.Release()
	}
	c = testutil.Dial(t, front)
	if got := testutil.ReadLine(t, bufio.NewReader(c)); got != "a" {
		t.Fatalf("after the budget came back: %q, want a", got)
	}
	if n := sc.Open(); n != 1 {
		t.Fatalf("an open relay holds %d slots, want 1", n)
	}
	c.Close()
	deadline := time.Now().Add(5 * time.Second)
	for sc.Open() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the relay ended but %d slots are still held", sc.Open())
		}
		time.Sleep(5 * time.Millisecond)
	}
}
