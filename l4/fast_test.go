package l4

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// fastPair starts a FastRelay between a client and a server on loopback and
// returns the far ends: the test's client and the server's accepted conn.
// done gets what ended the relay.
func fastPair(t *testing.T, o RelayOptions, g *Group) (client, server net.Conn, done chan error) {
	t.Helper()
	withLoops(t)
	done = make(chan error, 1)
	client, server = loopbackPair(t, func(c, s net.Conn, err error) {
		if err != nil {
			done <- err
			return
		}
		if !FastRelay(c, s, o, g, nil, func(err error) { done <- err }) {
			t.Error("plain TCP connections did not take the fast path")
			done <- nil
		}
	})
	return client, server, done
}

// loopbackPair is the plumbing of the relay tests: a client dials a
// listener on loopback, the accepted side dials a server, and relay gets
// the proxy's two sides (or the error that stopped it having them) in a
// goroutine of its own. It returns the far ends, the test's client and the
// server's accepted conn, closed when the test ends.
func loopbackPair(t *testing.T, relay func(c, s net.Conn, err error)) (client, server net.Conn) {
	t.Helper()
	front, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	back, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { front.Close(); back.Close() })
	go func() {
		c, err := front.Accept()
		if err != nil {
			relay(nil, nil, err)
			return
		}
		s, err := net.Dial("tcp", back.Addr().String())
		if err != nil {
			c.Close()
			relay(nil, nil, err)
			return
		}
		relay(c, s, nil)
	}()
	if client, err = net.Dial("tcp", front.Addr().String()); err != nil {
		t.Fatal(err)
	}
	if server, err = back.Accept(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

func wait(t *testing.T, done chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("relay did not end")
		return nil
	}
}

// Large transfers both ways at once arrive whole; a slow reader on one side
// exercises back-pressure; counters add up; closing both ends ends the relay.
func TestFastRelayLargeBothWays(t *testing.T) {
	var in, out atomic.Uint64
	client, server, done := fastPair(t, RelayOptions{In: []*atomic.Uint64{&in}, Out: []*atomic.Uint64{&out}}, nil)
	const size = 8 << 20
	up, down := make([]byte, size), make([]byte, size)
	rand.Read(up)
	rand.Read(down)
	send := func(c net.Conn, b []byte) {
		c.Write(b)
		c.(*net.TCPConn).CloseWrite()
	}
	go send(client, up)
	go send(server, down)
	got := make(chan [32]byte, 1)
	go func() {
		time.Sleep(100 * time.Millisecond) // a late reader: the relay must hold back, not drop
		b, _ := io.ReadAll(server)
		got <- sha256.Sum256(b)
	}()
	b, _ := io.ReadAll(client)
	if sha256.Sum256(b) != sha256.Sum256(down) {
		t.Fatalf("client got %d bytes, not what the server sent", len(b))
	}
	if <-got != sha256.Sum256(up) {
		t.Fatal("server did not get what the client sent")
	}
	if err := wait(t, done); err != nil {
		t.Fatalf("relay: %v", err)
	}
	if in.Load() != size || out.Load() != size {
		t.Fatalf("counters in %d out %d, want %d each", in.Load(), out.Load(), size)
	}
}

// Nothing moving for the idle timeout ends the relay with ErrIdle and
// closes both sides.
func TestFastRelayIdle(t *testing.T) {
	client, _, done := fastPair(t, RelayOptions{ClientIdle: 300 * time.Millisecond, ServerIdle: time.Hour}, nil)
	client.Write([]byte("x"))
	if err := wait(t, done); err != ErrIdle {
		t.Fatalf("relay ended with %v, want ErrIdle", err)
	}
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(client); err != nil {
		t.Fatalf("client not closed: %v", err)
	}
}

// Kill ends the group's busy relays at once, and those started after it;
// another group's relay goes on.
func TestFastRelayKill(t *testing.T) {
	var g, other Group
	client, _, done := fastPair(t, RelayOptions{}, &g)
	oc, osrv, odone := fastPair(t, RelayOptions{}, &other)
	client.Write([]byte("x"))
	g.Kill()
	wait(t, done)
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(client); err != nil {
		t.Fatalf("client not closed after Kill: %v", err)
	}
	late, _, ldone := fastPair(t, RelayOptions{}, &g)
	wait(t, ldone)
	late.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(late); err != nil {
		t.Fatalf("relay started after Kill not ended: %v", err)
	}
	oc.Write([]byte("still here"))
	buf := make([]byte, 10)
	osrv.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(osrv, buf); err != nil || string(buf) != "still here" {
		t.Fatalf("other group's relay: %q, %v", buf, err)
	}
	oc.Close()
	osrv.Close()
	wait(t, odone)
}

// A reset from one side ends the relay without an error.
func TestFastRelayReset(t *testing.T) {
	client, server, done := fastPair(t, RelayOptions{}, nil)
	client.Write([]byte("x"))
	buf := make([]byte, 1)
	io.ReadFull(server, buf)
	server.(*net.TCPConn).SetLinger(0)
	server.Close() // RST
	if err := wait(t, done); err != nil {
		t.Fatalf("relay after a reset: %v", err)
	}
}

// A side that shuts its write half still gets everything the other sends
// afterwards, whichever side ends first.
func TestFastRelayHalfClose(t *testing.T) {
	for _, clientFirst := range []bool{true, false} {
		client, server, done := fastPair(t, RelayOptions{}, nil)
		first, second := client, server
		if !clientFirst {
			first, second = server, client
		}
		first.Write([]byte("question"))
		first.(*net.TCPConn).CloseWrite()
		q, _ := io.ReadAll(second) // ends when the relay passes the half-close on
		if string(q) != "question" {
			t.Fatalf("client first %v: got %q", clientFirst, q)
		}
		second.Write(bytes.Repeat([]byte("a"), 100000))
		second.Close()
		if a, _ := io.ReadAll(first); len(a) != 100000 {
			t.Fatalf("client first %v: got %d bytes of the reply, want 100000", clientFirst, len(a))
		}
		if err := wait(t, done); err != nil {
			t.Fatalf("client first %v: relay: %v", clientFirst, err)
		}
	}
}

// holdLoop sends "request" from client and holds the loop inside its read
// of it until release is closed: what both ends send meanwhile is in
// their sockets by the loop's next wait.
func holdLoop(t *testing.T, client net.Conn) (release chan struct{}) {
	t.Helper()
	inHook, release := make(chan struct{}), make(chan struct{})
	var once atomic.Bool
	SetLoopHook(t, func(b []byte) {
		if once.CompareAndSwap(false, true) {
			close(inHook)
			<-release
		}
	})
	client.Write([]byte("request"))
	<-inHook
	return release
}

// When both ends of a pair end by the same wait of the loop (a client
// closing as its server does, the usual end of a short connection), the
// relay closes both at once: every byte is relayed, each side gets its
// FIN from the close, and no write half is shut down first (one epoll
// change and one shutdown fewer per connection).
func TestFastRelayBothEndsInOneBatch(t *testing.T) {
	client, server, done := fastPair(t, RelayOptions{}, nil)
	// Both ends send their last bytes and their FIN while the loop is
	// held: its next wait reports both ends together.
	release := holdLoop(t, client)
	before := Shutdowns()
	server.Write([]byte("response"))
	server.(*net.TCPConn).CloseWrite()
	client.(*net.TCPConn).CloseWrite()
	close(release)
	if q, _ := io.ReadAll(server); string(q) != "request" {
		t.Fatalf("server got %q, want the request", q)
	}
	if a, _ := io.ReadAll(client); string(a) != "response" {
		t.Fatalf("client got %q, want the response", a)
	}
	if err := wait(t, done); err != nil {
		t.Fatalf("relay: %v", err)
	}
	if n := Shutdowns() - before; n != 0 {
		t.Fatalf("%d write halves shut down before the close, want 0", n)
	}
}

// A server answering and closing at once (a short connection's usual end)
// has its end read with its last bytes, so that both go to the client
// together (one segment: MSG_MORE, then the shutdown). The client still
// gets every byte and the end, and may still send to the server after it,
// which gets that too (a half-close, not a close).
func TestFastRelayEndGoesWithLastBytes(t *testing.T) {
	client, server, done := fastPair(t, RelayOptions{}, nil)
	// The server's answer and FIN come in while the loop is held: its
	// next read sees both.
	release := holdLoop(t, client)
	before := EndsWithData()
	server.Write([]byte("response"))
	server.(*net.TCPConn).CloseWrite()
	close(release)
	if a, _ := io.ReadAll(client); string(a) != "response" {
		t.Fatalf("client got %q, want the response and its end", a)
	}
	if n := EndsWithData() - before; n != 1 {
		t.Fatalf("%d ends read with their last bytes, want 1", n)
	}
	client.Write([]byte("after"))
	client.(*net.TCPConn).CloseWrite()
	if q, _ := io.ReadAll(server); string(q) != "requestafter" {
		t.Fatalf("server got %q, want everything the client sent", q)
	}
	if err := wait(t, done); err != nil {
		t.Fatalf("relay: %v", err)
	}
}
