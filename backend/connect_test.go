package backend

import (
	"context"
	"net/netip"
	"testing"
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
