package engine

import (
	"context"
	"io"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"
)

// Shutdown with no time left cuts every relay and returns while relays
// are open, being opened and ending: a worker told to stop must exit
// (a hang here left orphaned workers behind the cmd/sluice tests).
func TestShutdownReturnsWhileRelaysOpenAndEnd(t *testing.T) {
	for round := range 5 {
		e, addr := startTCP(t, slog.New(slog.DiscardHandler))
		const clients = 32
		var wg sync.WaitGroup
		held := make(chan net.Conn, clients)
		for i := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 100 { // bounded
					c, err := net.DialTimeout("tcp", addr, 2*time.Second)
					if err != nil {
						return // the frontend stopped
					}
					c.SetDeadline(time.Now().Add(5 * time.Second))
					c.Write([]byte("x"))
					b := make([]byte, 1)
					_, err = io.ReadFull(c, b)
					if i%2 == 0 && err == nil {
						c.Close() // relays ending while the engine stops
						continue
					}
					held <- c // held open across the stop
					return
				}
			}()
		}
		for range clients / 2 { // the held ones are relayed
			c := <-held
			defer c.Close()
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		done := make(chan struct{})
		go func() { e.Shutdown(ctx); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			buf := make([]byte, 1<<20)
			t.Fatalf("round %d: Shutdown did not return within 20s:\n%s", round, buf[:runtime.Stack(buf, true)])
		}
		wg.Wait()
		close(held)
		for c := range held {
			c.Close()
		}
	}
}
