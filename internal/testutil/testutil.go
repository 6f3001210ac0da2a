// Package testutil has small real servers for tests: they listen on
// 127.0.0.1 only and stop when the test ends.
package testutil

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"sluice/conf"
	"sluice/engine"
	"sluice/internal/sockets"
)

// Backend is a TCP server run by a test.
type Backend struct {
	Name     string
	Addr     string
	Accepted atomic.Int64
	ln       net.Listener
	wg       sync.WaitGroup
}

// UDPEcho starts a UDP server on 127.0.0.1 that answers every datagram with
// prefix and the datagram, and returns its address; it stops when the test
// ends.
func UDPEcho(t testing.TB, prefix string) string {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 64<<10)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(append([]byte(prefix), buf[:n]...), from)
		}
	}()
	return pc.LocalAddr().String()
}

// Serve starts a backend on 127.0.0.1 that runs handle for each connection.
func Serve(t testing.TB, name string, handle func(c net.Conn)) *Backend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &Backend{Name: name, Addr: ln.Addr().String(), ln: ln}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.Accepted.Add(1)
			b.wg.Add(1)
			go func() {
				defer b.wg.Done()
				defer c.Close()
				handle(c)
			}()
		}
	}()
	t.Cleanup(b.Close)
	return b
}

// Close stops accepting (open connections are left to their handlers).
func (b *Backend) Close() { b.ln.Close() }

// Echo copies everything back.
func Echo(c net.Conn) { io.Copy(c, c) }

// Namer answers each line it reads with its name, so a client can tell
// which server it reached.
func Namer(name string) func(c net.Conn) {
	return func(c net.Conn) {
		fmt.Fprintf(c, "%s\n", name)
		io.Copy(io.Discard, c)
	}
}

// ClosedAddr returns a loopback address where nothing listens.
func ClosedAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := ln.Addr().String()
	ln.Close()
	return a
}

// FreeAddr returns a loopback address free at the time of the call, for a
// listener the test starts later. Its port is below the kernel's ephemeral
// range: a port the kernel hands out (a listener on port 0, the source of
// every outgoing connection, in this and the other test processes) could
// be taken again before the test binds it (a CI run saw EADDRINUSE), one
// below the range only by another test's FreeAddr, which picks at random
// and checks that it can listen there.
func FreeAddr(t testing.TB) string {
	t.Helper()
	low := ephemeralLow()
	for range 100 {
		port := 10000 + rand.IntN(low-10000)
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue
		}
		a := ln.Addr().String()
		ln.Close()
		return a
	}
	return ClosedAddr(t)
}

// ephemeralLow is the first port of the kernel's ephemeral range (32768
// when it cannot be read, or when it leaves too few ports below it).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) < 1 {
		return 32768
	}
	low, err := strconv.Atoi(f[0])
	if err != nil || low < 12000 {
		return 32768
	}
	return low
}

// Start parses src (a TOML config; "{{FRONT}}" is replaced by a free
// loopback address) and runs it in-process until the test ends. It returns
// the engine and the frontend address.
func Start(t testing.TB, src string) (*engine.Engine, string) {
	t.Helper()
	return StartAt(t, src, FreeAddr(t), 5*time.Second)
}

// StartAt is Start with the address put in for "{{FRONT}}" and the longest
// drain allowed when the test ends.
func StartAt(t testing.TB, src, front string, drain time.Duration) (*engine.Engine, string) {
	t.Helper()
	return startOn(t, strings.ReplaceAll(src, "{{FRONT}}", front), nil, drain), front
}

// StartOn runs src on the sockets of have where it binds their addresses
// (nil: its own), as a worker after a reload does, until the test ends.
func StartOn(t testing.TB, src string, have sockets.Set) *engine.Engine {
	t.Helper()
	return startOn(t, src, have, 5*time.Second)
}

func startOn(t testing.TB, src string, have sockets.Set, drain time.Duration) *engine.Engine {
	t.Helper()
	cfg, err := conf.Parse(t.Name()+".toml", []byte(src))
	if err != nil {
		t.Fatalf("config: %v\n%s", err, src)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	eng, err := engine.Start(cfg, have, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), drain)
		defer cancel()
		eng.Shutdown(ctx)
	})
	return eng
}

// Dial connects to addr, failing the test on error. The connection is
// closed when the test ends and has a deadline so a test cannot hang.
func Dial(t testing.TB, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// ReadLine reads one line from c.
func ReadLine(t testing.TB, r *bufio.Reader) string {
	t.Helper()
	s, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("read: %v (got %q)", err, s)
	}
	return strings.TrimSpace(s)
}

// WaitFor polls cond until it holds, failing the test after timeout. It is
// for state that changes asynchronously (counters, health), never a sleep.
func WaitFor(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
