package l7_test

import (
	"bufio"
	"testing"
	"time"

	"sluice/internal/testutil"
	"sluice/l7"
)

// TestBusySlowClientsHoldNoSlot: clients that send nothing, or a part of
// a head and then nothing (slowloris), hold no slot of the bound while
// they wait for their bytes: with every slot's worth of them connected
// and no slots lent, another client is answered at once, not after their
// timeout_http_request. Before, 255 such connections cut a worker to one
// client worked on at a time (HAProxy served on unaffected).
func TestBusySlowClientsHoldNoSlot(t *testing.T) {
	defer l7.SetBusyLimit(l7.SetBusyLimit(1))
	defer l7.SetBusyStall(l7.SetBusyStall(0))
	be := testutil.Serve(t, "be", answerPath)
	front := "default_backend = \"app\"\ntimeout_client = \"60s\"\ntimeout_http_request = \"60s\""
	eng, addr := testutil.Start(t, httpConfig(front, "", map[string][]string{"app": {be.Addr}}))
	cur := &eng.Front.Frontends[0].Counters.Current
	slow := []string{"", "GET /loris HTTP/1.1\r\nHost: h\r\n", "", "G"}
	for i, s := range slow {
		c := testutil.Dial(t, addr)
		if s != "" {
			if _, err := c.Write([]byte(s)); err != nil {
				t.Fatal(err)
			}
		}
		testutil.WaitFor(t, "the slow client's accept", 10*time.Second, func() bool { return cur.Load() == int64(i+1) })
	}
	for i := range 3 {
		c := testutil.Dial(t, addr)
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write([]byte("GET /quick HTTP/1.1\r\nHost: h\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
		if status, _, body, err := readAnswer(bufio.NewReader(c)); err != nil || status != 200 || body != "/quick" {
			t.Fatalf("client %d behind %d slow ones: %d %q %v; want its answer at once", i, len(slow), status, body, err)
		}
		c.Close()
	}
	active, queued := l7.BusyState()
	if queued != 0 {
		t.Errorf("busy: %d active, %d queued; want none queued", active, queued)
	}
}
