package backend

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// The fast path of Connect (a server free at once, the dial succeeds)
// allocates what Pick's client costs and nothing more: no watcher, no
// context, no goroutine.
func TestConnectFastPathAllocs(t *testing.T) {
	b := newTestBackend(t, 2)
	ctx := context.Background()
	dial := func(context.Context, *Server) error { return nil }
	allocs := testing.AllocsPerRun(1000, func() {
		cn := Connect{Client: Client{Addr: netip.MustParseAddr("192.0.2.1")}}
		if err := b.Connect(ctx, &cn, dial); err != nil {
			t.Fatal(err)
		}
		cn.Server.Release()
	})
	if allocs > 1 {
		t.Fatalf("Connect fast path: %v allocations, want at most 1 (the client Pick sees)", allocs)
	}
}

func BenchmarkConnect(b *testing.B) {
	be := newTestBackend(b, 2)
	ctx := context.Background()
	dial := func(context.Context, *Server) error { return nil }
	b.ReportAllocs()
	for b.Loop() {
		cn := Connect{Client: Client{Addr: netip.MustParseAddr("192.0.2.1")}}
		if err := be.Connect(ctx, &cn, dial); err != nil {
			b.Fatal(err)
		}
		cn.Server.Release()
	}
}

func newTestBackend(t testing.TB, n int) *Backend {
	be := &Backend{Name: "b", algo: "roundrobin"}
	var ss []*Server
	for i := range n {
		ss = append(ss, NewServer("b", string(rune('a'+i)), "127.0.0.1:1", 1, false, 0))
	}
	if err := be.SetServers(ss); err != nil {
		t.Fatal(err)
	}
	return be
}

// A client that leaves while it waits in the queue for a retry (its first
// server refused the connect, the other is full) gets the context's error,
// not the earlier connect error: nobody is there to answer 502 to.
func TestConnectLeaverDuringRetryGetsContextError(t *testing.T) {
	b := newTestBackend(t, 2)
	b.QueueTimeout = time.Minute
	b.Retries = 1
	first, other := b.Servers()[0], b.Servers()[1]
	other.MaxConn = 1
	if !other.TryAcquire() { // full until the test ends
		t.Fatal("cannot hold the other server")
	}
	defer other.Release()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dial := func(_ context.Context, s *Server) error {
		// The first server refuses and goes into maintenance, so the
		// retry waits in the queue for the full one; the client leaves
		// as soon as it is there.
		s.SetAdmin(AdminMaint)
		go func() {
			deadline := time.Now().Add(10 * time.Second)
			for b.Counters.Queue.Load() == 0 && time.Now().Before(deadline) {
				runtime.Gosched()
			}
			cancel()
		}()
		return ConnectFailed(errors.New("refused"))
	}
	cn := Connect{Client: Client{Addr: netip.MustParseAddr("192.0.2.1")}, Pinned: first}
	err := b.Connect(ctx, &cn, dial)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Connect = %v, want context.Canceled", err)
	}
	if n := first.Counters.ConnErrors.Load(); n != 1 {
		t.Errorf("first server ConnErrors = %d, want 1", n)
	}
	if n := b.Counters.Queue.Load(); n != 0 {
		t.Errorf("queue = %d after the client left, want 0", n)
	}
}

// A connect that fails for want of a local resource (out of descriptors,
// as a real socket(2) reports it through net's errors) is not the server's
// fault: no connection error counted, no passive observation, and no
// retry on another server, which would fail the same way.
func TestConnectLocalFailureMarksNoServer(t *testing.T) {
	b := newTestBackend(t, 2)
	b.Retries = 3
	dials := 0
	dial := func(context.Context, *Server) error {
		dials++
		return ConnectFailed(&net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("socket", syscall.EMFILE)})
	}
	cn := Connect{Client: Client{Addr: netip.MustParseAddr("192.0.2.1")}}
	err := b.Connect(context.Background(), &cn, dial)
	if !errors.Is(err, syscall.EMFILE) {
		t.Fatalf("Connect = %v, want the EMFILE", err)
	}
	if dials != 1 {
		t.Fatalf("%d dials, want 1: another server fails the same way", dials)
	}
	for _, s := range b.Servers() {
		if n := s.Counters.ConnErrors.Load(); n != 0 {
			t.Fatalf("server %s: %d connection errors counted for a local failure", s.Name, n)
		}
		if n := s.Counters.Retries.Load(); n != 0 {
			t.Fatalf("server %s: %d retries", s.Name, n)
		}
	}
}

// A dial that answers ErrMoved (the server speaks the other HTTP version,
// alpn = ["h2", "http/1.1"]) counts nothing against the server, gives its
// budget slot back and keeps the server acquired in Held; the next
// Connect uses it first, though it is at its maxconn (held by this very
// request), without a pick.
func TestConnectMovedKeepsServer(t *testing.T) {
	b := newTestBackend(t, 2)
	b.Retries = 3
	budget := NewServerConns(1)
	srv := b.Servers()[1]
	srv.MaxConn = 1
	moved := func(_ context.Context, s *Server) error { return ErrMoved }
	cn := Connect{Client: Client{Addr: netip.MustParseAddr("192.0.2.1")}, Pinned: srv, Budget: budget}
	take := func(_ context.Context, s *Server) error {
		if err := cn.TakeSlot(); err != nil {
			return err
		}
		return moved(nil, s)
	}
	if err := b.Connect(context.Background(), &cn, take); err != ErrMoved {
		t.Fatalf("Connect = %v, want ErrMoved", err)
	}
	if cn.Held != srv || srv.TryAcquire() {
		t.Fatalf("held %v; the server must stay acquired for the request", cn.Held)
	}
	if budget.Open() != 0 {
		t.Errorf("%d budget slots still taken after the move", budget.Open())
	}
	for _, s := range b.Servers() {
		if s.Counters.ConnErrors.Load() != 0 || s.Counters.Retries.Load() != 0 {
			t.Errorf("server %s: counted a failure for a move", s.Name)
		}
	}
	var got *Server
	if err := b.Connect(context.Background(), &cn, func(_ context.Context, s *Server) error { got = s; return nil }); err != nil || got != srv {
		t.Fatalf("Connect after the move: %v on %v, want the held server", err, got)
	}
	if cn.Held != nil {
		t.Error("Held not cleared once used")
	}
	srv.Release()
	if !srv.TryAcquire() {
		t.Error("server still acquired after its release: the move acquired it twice")
	}
	srv.Release()
}
