package gopool

import (
	"runtime"
	"sync"
	"testing"
	"time"
)

// TestReusesGoroutines: functions run one after another reuse one
// goroutine (the count does not grow with them), every one runs, and the
// goroutines kept beyond maxIdle leave.
func TestReusesGoroutines(t *testing.T) {
	p := New(4, time.Minute)
	base := runtime.NumGoroutine()
	done := make(chan int)
	for i := range 200 {
		p.Go(func() { done <- i })
		if got := <-done; got != i {
			t.Fatalf("ran %d, want %d", got, i)
		}
		// The goroutine goes back to wait once fn returns; wait for it
		// so that the next Go finds it.
		for p.Idle() == 0 {
			runtime.Gosched()
		}
	}
	// One goroutine serves them all, but for the moments when the last
	// one counted itself idle and has not reached its receive yet (a
	// loaded machine, -race): a Go then starts another. 200 without
	// reuse.
	if n := p.started.Load(); n > 20 {
		t.Errorf("%d goroutines started for 200 functions run one after another, want a few", n)
	}

	// 20 at once: 20 goroutines, of which at most 4 stay waiting.
	var start, end sync.WaitGroup
	start.Add(1)
	end.Add(20)
	for range 20 {
		p.Go(func() { start.Wait(); end.Done() })
	}
	start.Done()
	end.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine()-base > 4 {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines left, want at most 4 waiting", runtime.NumGoroutine()-base)
		}
		runtime.Gosched()
	}
	if p.Idle() > 4 {
		t.Errorf("%d idle, want at most 4", p.Idle())
	}
}

// TestIdleGoroutinesLeave: a waiting goroutine leaves after idleFor.
func TestIdleGoroutinesLeave(t *testing.T) {
	p := New(4, 10*time.Millisecond)
	base := runtime.NumGoroutine()
	ran := make(chan struct{})
	p.Go(func() { close(ran) })
	<-ran
	waitFor(t, "the idle goroutine to leave", func() bool { return p.Idle() == 0 && runtime.NumGoroutine() <= base })
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
