package l4

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"sluice/internal/logbuf"
)

func panicOnBoom(b []byte) {
	if bytes.Contains(b, []byte("boom")) {
		panic("test: boom in a relay")
	}
}

// relayPair starts Relay between a client and a server on loopback and
// returns the far ends; done gets what Relay returned.
func relayPair(t *testing.T, o RelayOptions) (client, server net.Conn, done chan error) {
	t.Helper()
	done = make(chan error, 1)
	client, server = loopbackPair(t, func(c, s net.Conn, err error) {
		if err != nil {
			done <- err
			return
		}
		done <- Relay(c, s, o)
	})
	client.SetDeadline(time.Now().Add(10 * time.Second))
	server.SetDeadline(time.Now().Add(10 * time.Second))
	return client, server, done
}

// echoOnce sends msg from one end and checks it arrives whole at the other.
func echoOnce(t *testing.T, from, to net.Conn, msg string) {
	t.Helper()
	if _, err := from.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, len(msg))
	if _, err := io.ReadFull(to, b); err != nil || string(b) != msg {
		t.Fatalf("relayed %q, %v; want %q", b, err, msg)
	}
}

// ended checks that c is closed by the relay (EOF or reset, no data).
func ended(t *testing.T, c net.Conn) {
	t.Helper()
	b, err := io.ReadAll(c)
	if err != nil && !strings.Contains(err.Error(), "reset") {
		t.Fatalf("%v, want the connection closed", err)
	}
	if len(b) > 0 {
		t.Fatalf("got %q, want the connection closed", b)
	}
}

// A panic copying one direction of the goroutine relay (either direction:
// client->server runs on a goroutine of its own) closes that connection's
// two sides, is counted and logged; the process and the other connections
// go on.
func TestRelayPanicCostsOneConnection(t *testing.T) {
	SetCopyHook(t, panicOnBoom)
	for _, dir := range []string{"client->server", "server->client"} {
		t.Run(dir, func(t *testing.T) {
			var panics atomic.Uint64
			lb := &logbuf.Buffer{}
			o := RelayOptions{Panics: &panics, Log: slog.New(slog.NewTextHandler(lb, nil))}
			client, server, done := relayPair(t, o)
			oc, os, odone := relayPair(t, o)
			echoOnce(t, client, server, "hello")
			from, to := client, server
			if dir == "server->client" {
				from, to = server, client
			}
			if _, err := from.Write([]byte("boom")); err != nil {
				t.Fatal(err)
			}
			if err := <-done; !errors.Is(err, ErrPanicked) {
				t.Fatalf("Relay returned %v, want ErrPanicked", err)
			}
			ended(t, to)
			ended(t, from)
			if n := panics.Load(); n != 1 {
				t.Errorf("panics = %d, want 1", n)
			}
			if !strings.Contains(lb.String(), "panic serving a connection") || !strings.Contains(lb.String(), dir) {
				t.Errorf("log: %q, want the panic and its direction", lb.String())
			}
			echoOnce(t, oc, os, "still here")
			echoOnce(t, os, oc, "and back")
			oc.Close()
			os.Close()
			<-odone
		})
	}
}

// A panic in an epoll relay loop ends the pair it was serving (ErrPanicked,
// counted in its Panics and in LoopPanics) and the loop goes on: pairs on
// every loop, the one that panicked included, relay afterwards.
func TestFastRelayLoopPanicCostsOnePair(t *testing.T) {
	SetLoopHook(t, panicOnBoom)
	var panics atomic.Uint64
	o := RelayOptions{Panics: &panics}
	before := LoopPanics.Load()
	client, server, done := fastPair(t, o, nil)
	client.SetDeadline(time.Now().Add(10 * time.Second))
	echoOnce(t, client, server, "hello")
	if _, err := client.Write([]byte("boom")); err != nil {
		t.Fatal(err)
	}
	if err := wait(t, done); !errors.Is(err, ErrPanicked) {
		t.Fatalf("relay ended with %v, want ErrPanicked", err)
	}
	ended(t, server)
	ended(t, client)
	if n := panics.Load(); n != 1 {
		t.Errorf("panics = %d, want 1", n)
	}
	if n := LoopPanics.Load() - before; n != 1 {
		t.Errorf("LoopPanics grew by %d, want 1", n)
	}
	// Pairs are spread over the loops in turn: 2 per loop reach them all.
	for i := range 2 * len(*loopsNow.Load()) {
		c, s, d := fastPair(t, o, nil)
		c.SetDeadline(time.Now().Add(10 * time.Second))
		s.SetDeadline(time.Now().Add(10 * time.Second))
		echoOnce(t, c, s, "after")
		echoOnce(t, s, c, "the panic")
		c.Close()
		s.Close()
		if err := wait(t, d); err != nil {
			t.Fatalf("pair %d: %v", i, err)
		}
	}
}
