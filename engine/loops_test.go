package engine

import (
	"context"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"sluice/conf"
	"sluice/internal/logbuf"
	"sluice/l4"
)

// startTCP starts an engine with one tcp frontend in front of an echo
// server, and returns it and the frontend's address.
func startTCP(t *testing.T, log *slog.Logger) (*Engine, string) {
	t.Helper()
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { echo.Close() })
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	l, err := net.Listen("tcp", "127.0.0.1:0") // a free port for the frontend
	if err != nil {
		t.Fatal(err)
	}
	front := l.Addr().String()
	l.Close()
	cfg, err := conf.Parse("sluice.toml", []byte(`[frontend.f]
bind = ["`+front+`"]
mode = "tcp"
default_backend = "b"
[[backend.b.server]]
address = "`+echo.Addr().String()+`"
`))
	if err != nil {
		t.Fatal(err)
	}
	e, err := StartWith(cfg, nil, log, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		e.Shutdown(ctx)
		e.Sockets.Close()
	})
	return e, front
}

// echoes sends msg through the frontend and expects it back.
func echoes(t *testing.T, addr, msg string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, len(msg))
	if _, err := io.ReadFull(c, b); err != nil || string(b) != msg {
		t.Fatalf("echoed %q, %v; want %q", b, err, msg)
	}
}

// The engine starts the epoll relay loops for its tcp frontend, and gives
// them scheduler slots of their own: a P per loop on top of the
// program's, so that one waiting in epoll_wait is not handed off.
func TestEngineStartsLoops(t *testing.T) {
	e, addr := startTCP(t, slog.New(slog.DiscardHandler))
	if e.stopLoops == nil {
		t.Fatal("a tcp frontend, and no relay loops")
	}
	if n, want := runtime.GOMAXPROCS(0), 2*procs; n != want {
		t.Fatalf("GOMAXPROCS = %d, want %d (a slot per loop)", n, want)
	}
	echoes(t, addr, "through the loops")
}

// When the loops cannot start (out of descriptors at start, say) the
// engine says so once and serves: tcp is relayed with goroutines.
func TestEngineLoopsFailFallsBack(t *testing.T) {
	startRelayLoops = func(int) (func(), error) { return nil, unix.EMFILE }
	t.Cleanup(func() { startRelayLoops = l4.StartLoops })
	var buf logbuf.Buffer
	e, addr := startTCP(t, slog.New(slog.NewTextHandler(&buf, nil)))
	if e.stopLoops != nil {
		t.Fatal("loops recorded as started")
	}
	for i := range 3 {
		echoes(t, addr, "goroutines "+string(rune('a'+i)))
	}
	if n := strings.Count(buf.String(), "epoll relay loops did not start"); n != 1 {
		t.Fatalf("start failure logged %d times, want once:\n%s", n, buf.String())
	}
}
