package backend

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"sluice/conf"
)

// fullBackend returns a backend over servers of maxconn 1 each.
func fullBackend(t *testing.T, queueTimeout time.Duration, n int) (*Backend, []*Server) {
	t.Helper()
	var ss []*Server
	for i := range n {
		ss = append(ss, NewServer("b", string(rune('a'+i)), "127.0.0.1:1", 1, false, 1))
	}
	b := &Backend{Name: "b", algo: "leastconn", QueueTimeout: queueTimeout}
	if err := b.SetServers(ss); err != nil {
		t.Fatal(err)
	}
	return b, ss
}

type pickResult struct {
	s   *Server
	err error
}

// pickAsync runs PickWait in a goroutine and reports on the channel.
func pickAsync(b *Backend, ctx context.Context) chan pickResult {
	ch := make(chan pickResult, 1)
	go func() {
		s, err := b.PickWait(ctx, &Client{}, nil)
		ch <- pickResult{s, err}
	}()
	return ch
}

// waitQueued waits until n connections wait in b's queue.
// waitQueued waits until n connections are in the backend's wait list (not
// only counted as queueing: the counter moves before a waiter takes its
// place in line, and the order of places is what FIFO tests check).
func waitQueued(t *testing.T, b *Backend, n int64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for b.Counters.Queue.Load() != n || b.queue.waiting.Load() != n {
		if time.Now().After(deadline) {
			t.Fatalf("queue length %d, want %d", b.Counters.Queue.Load(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestQueueHoldsUntilSlotFrees(t *testing.T) {
	b, ss := fullBackend(t, 5*time.Second, 1)
	held, err := b.PickWait(context.Background(), &Client{}, nil)
	if err != nil || held != ss[0] {
		t.Fatalf("first pick: %v, %v", held, err)
	}
	ch := pickAsync(b, context.Background())
	waitQueued(t, b, 1)
	select {
	case r := <-ch:
		t.Fatalf("second pick returned %v, %v while the only slot is taken", r.s, r.err)
	case <-time.After(50 * time.Millisecond):
	}
	held.Release()
	select {
	case r := <-ch:
		if r.err != nil || r.s != ss[0] {
			t.Fatalf("after the release: %v, %v", r.s, r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the release did not wake the queue")
	}
	if a := ss[0].Active(); a != 1 {
		t.Fatalf("active %d, want 1", a)
	}
	if q, mq, qd := b.Counters.Queue.Load(), b.Counters.MaxQueue.Load(), b.Counters.Queued.Load(); q != 0 || mq != 1 || qd != 1 {
		t.Fatalf("queue now/max/total %d/%d/%d, want 0/1/1", q, mq, qd)
	}
}

func TestQueueTimesOut(t *testing.T) {
	for _, tc := range []struct {
		desc    string
		timeout time.Duration
	}{
		{"after queue_timeout", 100 * time.Millisecond},
		{"at once with queue_timeout 0", 0},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			b, _ := fullBackend(t, tc.timeout, 2)
			for range 2 {
				if _, err := b.PickWait(context.Background(), &Client{}, nil); err != nil {
					t.Fatal(err)
				}
			}
			start := time.Now()
			s, err := b.PickWait(context.Background(), &Client{}, nil)
			if !errors.Is(err, ErrQueueTimeout) || s != nil {
				t.Fatalf("got %v, %v; want ErrQueueTimeout", s, err)
			}
			if el := time.Since(start); el < tc.timeout || el > tc.timeout+2*time.Second {
				t.Fatalf("gave up after %v, want about %v", el, tc.timeout)
			}
			if n := b.Counters.QueueTimeouts.Load(); n != 1 {
				t.Fatalf("queue timeouts %d, want 1", n)
			}
		})
	}
}

func TestQueueNoServerUpFailsAtOnce(t *testing.T) {
	b, ss := fullBackend(t, time.Hour, 2)
	ss[0].SetUp(false)
	ss[1].SetAdmin(AdminMaint)
	if _, err := b.PickWait(context.Background(), &Client{}, nil); !errors.Is(err, ErrNoServer) {
		t.Fatalf("err %v, want ErrNoServer", err)
	}
}

func TestQueueEndsWhenServersGoDown(t *testing.T) {
	b, ss := fullBackend(t, time.Hour, 1)
	if _, err := b.PickWait(context.Background(), &Client{}, nil); err != nil {
		t.Fatal(err)
	}
	chs := []chan pickResult{pickAsync(b, context.Background()), pickAsync(b, context.Background())}
	waitQueued(t, b, 2)
	ss[0].SetUp(false)
	for _, ch := range chs {
		select {
		case r := <-ch:
			if !errors.Is(r.err, ErrNoServer) {
				t.Fatalf("got %v, %v; want ErrNoServer", r.s, r.err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("waiters kept waiting for a server that went down")
		}
	}
}

func TestQueueTakesServerThatComesUp(t *testing.T) {
	b, ss := fullBackend(t, time.Hour, 2)
	ss[1].SetUp(false)
	if _, err := b.PickWait(context.Background(), &Client{}, nil); err != nil {
		t.Fatal(err)
	}
	ch := pickAsync(b, context.Background())
	waitQueued(t, b, 1)
	ss[1].SetUp(true)
	select {
	case r := <-ch:
		if r.s != ss[1] {
			t.Fatalf("got %v, %v; want b, which came up", r.s, r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a server coming up did not wake the queue")
	}
}

func TestQueueIsFirstComeFirstServed(t *testing.T) {
	b, ss := fullBackend(t, time.Hour, 1)
	if _, err := b.PickWait(context.Background(), &Client{}, nil); err != nil {
		t.Fatal(err)
	}
	var chs []chan pickResult
	for i := range 3 {
		chs = append(chs, pickAsync(b, context.Background()))
		waitQueued(t, b, int64(i+1))
	}
	for i, ch := range chs {
		ss[0].Release()
		select {
		case r := <-ch:
			if r.err != nil {
				t.Fatalf("waiter %d: %v", i, r.err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("waiter %d was not served after the %d. release", i, i+1)
		}
	}
}

func TestQueueLeavesOnContextEnd(t *testing.T) {
	b, ss := fullBackend(t, time.Hour, 1)
	if _, err := b.PickWait(context.Background(), &Client{}, nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	gone := pickAsync(b, ctx)
	waitQueued(t, b, 1)
	next := pickAsync(b, context.Background())
	waitQueued(t, b, 2)
	cancel()
	if r := <-gone; !errors.Is(r.err, context.Canceled) {
		t.Fatalf("got %v, %v; want context.Canceled", r.s, r.err)
	}
	ss[0].Release()
	select {
	case r := <-next:
		if r.s != ss[0] {
			t.Fatalf("got %v, %v", r.s, r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the waiter behind a cancelled one was not served")
	}
}

// Racing picks never take a server past its maxconn, and every connection
// that waits gets through.
func TestMaxconnHoldsUnderRace(t *testing.T) {
	for _, algo := range conf.BalanceNames {
		t.Run(algo.String(), func(t *testing.T) {
			ss := []*Server{
				NewServer("b", "a", "127.0.0.1:1", 1, false, 3),
				NewServer("b", "b", "127.0.0.1:2", 2, false, 2),
			}
			b := &Backend{Name: "b", algo: algo, QueueTimeout: 10 * time.Second}
			if err := b.SetServers(ss); err != nil {
				t.Fatal(err)
			}
			var failed atomic.Int64
			var wg sync.WaitGroup
			cs := clients(16)
			for g := range 16 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range 300 {
						s, err := b.PickWait(context.Background(), &cs[g], nil)
						if err != nil {
							failed.Add(1)
							continue
						}
						if s.Active() > s.MaxConn {
							failed.Add(1000)
						}
						time.Sleep(20 * time.Microsecond) // hold it: 16 want 5 slots
						s.Release()
					}
				}()
			}
			wg.Wait()
			if n := failed.Load(); n != 0 {
				t.Fatalf("failures: %d (1000 per maxconn breach)", n)
			}
			if w, q := b.queue.waiting.Load(), b.Counters.Queue.Load(); w != 0 || q != 0 {
				t.Fatalf("queue left with %d waiting, counter %d", w, q)
			}
			t.Logf("%d of 4800 connections queued, longest queue %d", b.Counters.Queued.Load(), b.Counters.MaxQueue.Load())
			for _, s := range ss {
				if m := s.Counters.MaxActive.Load(); m > s.MaxConn {
					t.Errorf("server %s peaked at %d connections, maxconn %d", s.Name, m, s.MaxConn)
				}
				if s.Active() != 0 {
					t.Errorf("server %s left with %d active", s.Name, s.Active())
				}
			}
		})
	}
}

func TestTryAcquireStopsAtMaxconn(t *testing.T) {
	s := NewServer("b", "a", "127.0.0.1:1", 1, false, 2)
	if !s.TryAcquire() || !s.TryAcquire() {
		t.Fatal("TryAcquire refused below maxconn")
	}
	if s.TryAcquire() {
		t.Fatal("TryAcquire went past maxconn")
	}
	if s.Available() {
		t.Fatal("a full server is available")
	}
	s.Release()
	if !s.TryAcquire() {
		t.Fatal("TryAcquire refused after a release")
	}
	unlimited := NewServer("b", "u", "127.0.0.1:1", 1, false, 0)
	for range 100 {
		if !unlimited.TryAcquire() {
			t.Fatal("TryAcquire refused without maxconn")
		}
	}
}

// BenchmarkPickWait is the uncontended path of a connection: pick, acquire,
// release.
func BenchmarkPickWait(b *testing.B) {
	be := &Backend{Name: "b", algo: "leastconn", QueueTimeout: time.Second}
	if err := be.SetServers(servers(1, 2, 3, 4)); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	c := &Client{}
	b.ReportAllocs()
	for b.Loop() {
		s, err := be.PickWait(ctx, c, nil)
		if err != nil {
			b.Fatal(err)
		}
		s.Release()
	}
}
