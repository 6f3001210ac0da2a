package l7_test

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"sluice/internal/testutil"
)

// Tests of sluice's own HTTP/2 client to proto = "h2c" servers (h2up.go),
// against real servers: x/net's h2c server, or one made of a bare Framer
// where the test needs a server misbehaving on cue.

// h2cServer runs h as an h2c server with http2 settings conf and counts
// its connections.
func h2cServer(t *testing.T, h http.Handler, conf *http.HTTP2Config) (string, *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns atomic.Int64
	srv := &http.Server{Handler: h, HTTP2: conf, ConnState: func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}}
	srv.Protocols = new(http.Protocols)
	srv.Protocols.SetUnencryptedHTTP2(true)
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String(), &conns
}

// A response the client does not read stops its server: sluice gives
// window back upstream only as the client takes bytes, so the server's
// writes block instead of sluice buffering them; opened, the whole body
// arrives.
func TestH2UpResponseBackPressure(t *testing.T) {
	const total = 16 << 20
	var written atomic.Int64
	addr, _ := h2cServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		chunk := bytes.Repeat([]byte("d"), 16<<10)
		rc := http.NewResponseController(w)
		for written.Load() < total {
			if _, err := w.Write(chunk); err != nil {
				return
			}
			rc.Flush()
			written.Add(int64(len(chunk)))
		}
	}), nil)
	front := a19Front(t, "", "proto = \"h2c\"", addr)
	c := a19Dial(t, front, false) // windows of 65535 that never open
	if err := c.get(1, "/big"); err != nil {
		t.Fatal(err)
	}
	if !c.wait(func() bool { s := c.streams[1]; return s != nil && s.body.Len() >= 65535 }) {
		t.Fatal("no body")
	}
	// Some time for a buffering proxy to show itself (not a timing
	// assertion: only what the server managed to write counts).
	const bound = 6 << 20
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) && written.Load() < bound {
		time.Sleep(20 * time.Millisecond)
	}
	if n := written.Load(); n >= bound {
		t.Fatalf("the server wrote %d bytes to a client that read 65535: sluice buffers the response", n)
	}
	c.send(func(fr *http2.Framer) error {
		if err := fr.WriteWindowUpdate(0, 1<<30); err != nil {
			return err
		}
		return fr.WriteWindowUpdate(1, 1<<30)
	})
	_, body, rst, ok := c.result(1)
	if !ok || rst != 0 || len(body) != total {
		t.Fatalf("got %d of %d bytes (reset %v, ended %v)", len(body), total, rst, ok)
	}
}

// A server that does not read the request body stops the client: sluice
// reads from the client only what it can send up.
func TestH2UpRequestBackPressure(t *testing.T) {
	const total = 32 << 20
	release := make(chan struct{})
	addr, _ := h2cServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprint(w, n)
	}), nil)
	front := a19Front(t, "", "proto = \"h2c\"", addr)
	pr, pw := io.Pipe()
	var sent atomic.Int64
	go func() {
		chunk := bytes.Repeat([]byte("u"), 16<<10)
		for sent.Load() < total {
			if _, err := pw.Write(chunk); err != nil {
				return
			}
			sent.Add(int64(len(chunk)))
		}
		pw.Close()
	}()
	type result struct {
		body string
		err  error
	}
	done := make(chan result, 1)
	go func() {
		req, _ := http.NewRequest("POST", "http://"+front+"/up", pr)
		resp, err := h2cClient().Do(req)
		if err != nil {
			done <- result{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		done <- result{string(b), err}
	}()
	testutil.WaitFor(t, "the body moving", 10*time.Second, func() bool { return sent.Load() > 0 })
	const bound = 12 << 20
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) && sent.Load() < bound {
		time.Sleep(20 * time.Millisecond)
	}
	if n := sent.Load(); n >= bound {
		t.Fatalf("the client sent %d bytes to a server that read none: sluice buffers the request", n)
	}
	close(release)
	r := <-done
	if r.err != nil || r.body != strconv.Itoa(total) {
		t.Fatalf("%q %v", r.body, r.err)
	}
}

// rawH2Server serves HTTP/2 with a bare Framer: serve gets each accepted
// connection once the preface is read and SETTINGS (with settings) sent.
type rawUpConn struct {
	net.Conn
	fr  *http2.Framer
	mu  sync.Mutex
	enc *hpack.Encoder
	hb  bytes.Buffer
}

func (c *rawUpConn) respond(id uint32, status, body string, end bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.hb.Reset()
	c.enc.WriteField(hpack.HeaderField{Name: ":status", Value: status})
	c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: c.hb.Bytes(), EndHeaders: true, EndStream: body == "" && end})
	if body != "" {
		c.fr.WriteData(id, end, []byte(body))
	}
}

func (c *rawUpConn) write(fn func(fr *http2.Framer) error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fn(c.fr)
}

func rawUpServer(t *testing.T, settings []http2.Setting, serve func(c *rawUpConn)) string {
	t.Helper()
	return a19Listen(t, func(conn net.Conn) {
		conn.SetDeadline(time.Now().Add(60 * time.Second))
		pre := make([]byte, len(http2.ClientPreface))
		if _, err := io.ReadFull(conn, pre); err != nil {
			return
		}
		c := &rawUpConn{Conn: conn, fr: http2.NewFramer(conn, conn)}
		c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
		c.enc = hpack.NewEncoder(&c.hb)
		c.write(func(fr *http2.Framer) error { return fr.WriteSettings(settings...) })
		serve(c)
	})
}

// A server that sends GOAWAY while requests are in flight: the streams
// above its last-stream-id go again on another connection, and every
// request is processed exactly once.
//
// The first connection is made to carry 29 streams at once (one request
// answered first, so that the rest find it pooled), and its server waits
// for all their heads before it answers two and sends GOAWAY: 27 streams
// are refused whatever the scheduling. Later connections serve every
// stream, so that no request meets more refusals than sluice's bound
// (upMaxRefused, upMaxDials): a server refusing on every connection
// makes the outcome a matter of which goroutine runs first.
func TestH2UpGoAwayMidTraffic(t *testing.T) {
	const n = 30
	var mu sync.Mutex
	seen := map[string]int{}
	var conns, refused atomic.Int64
	seqOf := func(f *http2.MetaHeadersFrame) string {
		for _, h := range f.RegularFields() {
			if h.Name == "x-seq" {
				return h.Value
			}
		}
		return ""
	}
	process := func(c *rawUpConn, f *http2.MetaHeadersFrame) {
		seq := seqOf(f)
		mu.Lock()
		seen[seq]++
		mu.Unlock()
		c.respond(f.StreamID, "200", "seq="+seq, true)
	}
	addr := rawUpServer(t, nil, func(c *rawUpConn) {
		first := conns.Add(1) == 1
		var held []*http2.MetaHeadersFrame // first connection, after request 0
		answered := false
		for {
			f, err := c.fr.ReadFrame()
			if err != nil {
				return
			}
			switch f := f.(type) {
			case *http2.SettingsFrame:
				if !f.IsAck() {
					c.write(func(fr *http2.Framer) error { return fr.WriteSettingsAck() })
				}
			case *http2.PingFrame:
				if f.IsAck() && answered {
					// sluice has read the GOAWAY and the answers before
					// it: the connection ends, as a server's does.
					return
				}
			case *http2.MetaHeadersFrame:
				switch {
				case !first || seqOf(f) == "0":
					process(c, f)
				case answered:
					refused.Add(1) // after the GOAWAY: never processed
				default:
					held = append(held, f)
					if len(held) < n-1 {
						continue
					}
					// Every stream is in flight: two are answered, the
					// GOAWAY names the second, the rest are refused.
					answered = true
					id := held[1].StreamID
					c.write(func(fr *http2.Framer) error { return fr.WriteGoAway(id, http2.ErrCodeNo, nil) })
					process(c, held[0])
					process(c, held[1])
					refused.Add(int64(len(held) - 2))
					c.write(func(fr *http2.Framer) error { return fr.WritePing(false, [8]byte{'g', 'o', 'n', 'e'}) })
				}
			}
		}
	})
	// The first connection stays pooled for the second round.
	front := a19Front(t, "", "proto = \"h2c\"\nretries = 0\npool_idle_timeout = \"5m\"", addr)
	c := a19Dial(t, front, true)
	check := func(i int) {
		st, body, rst, ok := c.result(uint32(2*i + 1))
		if !ok || st != "200" || rst != 0 || body != "seq="+strconv.Itoa(i) {
			t.Fatalf("request %d: %q %q reset %v", i, st, body, rst)
		}
	}
	if err := c.get(1, "/", "x-seq", "0"); err != nil {
		t.Fatal(err)
	}
	check(0)
	for i := 1; i < n; i++ {
		if err := c.get(uint32(2*i+1), "/", "x-seq", strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	for i := 1; i < n; i++ {
		check(i)
	}
	if r := refused.Load(); r != n-3 {
		t.Fatalf("%d streams refused by the GOAWAY, want %d", r, n-3)
	}
	mu.Lock()
	defer mu.Unlock()
	for i := range n {
		if k := seen[strconv.Itoa(i)]; k != 1 {
			t.Fatalf("request %d processed %d times", i, k)
		}
	}
}

// A server allowing one stream per connection: 20 concurrent streams of
// one client go to it at once, on 20 connections.
func TestH2UpMaxConcurrentStreamsOne(t *testing.T) {
	const n = 20
	var inflight atomic.Int64
	all := make(chan struct{})
	var once sync.Once
	addr, conns := h2cServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if inflight.Add(1) == n {
			once.Do(func() { close(all) })
		}
		select {
		case <-all:
			fmt.Fprint(w, "ok")
		case <-time.After(20 * time.Second):
			http.Error(w, "the streams did not all reach the server at once", 500)
		}
	}), &http.HTTP2Config{MaxConcurrentStreams: 1})
	front := a19Front(t, "", "proto = \"h2c\"", addr)
	c := a19Dial(t, front, true)
	for i := range n {
		if err := c.get(uint32(2*i+1), "/"); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		st, body, rst, ok := c.result(uint32(2*i + 1))
		if !ok || st != "200" || rst != 0 || body != "ok" {
			t.Fatalf("stream %d: %q %q reset %v", 2*i+1, st, body, rst)
		}
	}
	if k := conns.Load(); k < n {
		t.Fatalf("%d server connections for %d concurrent streams, max 1 each", k, n)
	}
}

// A client resetting its stream mid-response: the server's stream is
// reset (its handler sees the cancel), and the same server connection
// serves the next stream.
func TestH2UpClientResetMidStream(t *testing.T) {
	cancelled := make(chan struct{}, 1)
	addr, conns := h2cServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/next" {
			fmt.Fprint(w, "next")
			return
		}
		fmt.Fprint(w, "part")
		http.NewResponseController(w).Flush()
		select {
		case <-r.Context().Done():
			cancelled <- struct{}{}
		case <-time.After(20 * time.Second):
		}
	}), nil)
	front := a19Front(t, "", "proto = \"h2c\"", addr)
	c := a19Dial(t, front, true)
	if err := c.get(1, "/stream"); err != nil {
		t.Fatal(err)
	}
	if !c.wait(func() bool { s := c.streams[1]; return s != nil && s.body.Len() > 0 }) {
		t.Fatal("no first part")
	}
	c.send(func(fr *http2.Framer) error { return fr.WriteRSTStream(1, http2.ErrCodeCancel) })
	select {
	case <-cancelled:
	case <-time.After(10 * time.Second):
		t.Fatal("the server's stream was not reset")
	}
	if err := c.get(3, "/next"); err != nil {
		t.Fatal(err)
	}
	if st, body, rst, ok := c.result(3); !ok || st != "200" || body != "next" || rst != 0 {
		t.Fatalf("next stream: %q %q %v", st, body, rst)
	}
	if k := conns.Load(); k != 1 {
		t.Fatalf("%d server connections, want 1 (kept after the reset)", k)
	}
}

// A server resetting streams: before its response head the client gets
// 502, after it the client's stream is reset with the server's code; the
// connection serves on.
func TestH2UpServerReset(t *testing.T) {
	var conns atomic.Int64
	addr := rawUpServer(t, nil, func(c *rawUpConn) {
		conns.Add(1)
		for {
			f, err := c.fr.ReadFrame()
			if err != nil {
				return
			}
			switch f := f.(type) {
			case *http2.SettingsFrame:
				if !f.IsAck() {
					c.write(func(fr *http2.Framer) error { return fr.WriteSettingsAck() })
				}
			case *http2.MetaHeadersFrame:
				id := f.StreamID
				switch f.PseudoValue("path") {
				case "/before":
					c.write(func(fr *http2.Framer) error { return fr.WriteRSTStream(id, http2.ErrCodeInternal) })
				case "/after":
					c.respond(id, "200", "part", false)
					c.write(func(fr *http2.Framer) error { return fr.WriteRSTStream(id, http2.ErrCodeCancel) })
				default:
					c.respond(id, "200", "fine", true)
				}
			}
		}
	})
	front := a19Front(t, "", "proto = \"h2c\"", addr)
	c := a19Dial(t, front, true)
	c.get(1, "/before")
	if st, _, rst, ok := c.result(1); !ok || st != "502" || rst != 0 {
		t.Fatalf("reset before the head: %q reset %v", st, rst)
	}
	c.get(3, "/after")
	if st, body, rst, ok := c.result(3); !ok || st != "200" || body != "part" || rst != http2.ErrCodeCancel {
		t.Fatalf("reset after the head: %q %q reset %v", st, body, rst)
	}
	c.get(5, "/ok")
	if st, body, rst, ok := c.result(5); !ok || st != "200" || body != "fine" || rst != 0 {
		t.Fatalf("after the resets: %q %q reset %v", st, body, rst)
	}
	if k := conns.Load(); k != 1 {
		t.Fatalf("%d server connections, want 1", k)
	}
}

// A request head opened while other streams are open on the server
// connection waits in the write buffer for its batch (h2Up.open yields
// once): the yield's flush must send it even when no other stream writes
// after it. Two held streams keep the connection's reader blocked and
// nothing else moves, so an unflushed head would never reach the server.
func TestH2UpBatchedHeadIsSent(t *testing.T) {
	release := make(chan struct{})
	var held atomic.Int32
	addr, conns := h2cServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			held.Add(1)
			<-release
		}
		io.WriteString(w, "ok "+r.URL.Path)
	}), nil)
	defer close(release)
	front := a19Front(t, "", "proto = \"h2c\"", addr)
	c := a19Dial(t, front, true)
	for i, id := range []uint32{1, 3} {
		if err := c.get(id, "/hold"); err != nil {
			t.Fatal(err)
		}
		// One after the other: two at once may each dial a connection.
		testutil.WaitFor(t, "the held stream at the server", 5*time.Second, func() bool { return held.Load() == int32(i+1) })
	}
	for id := uint32(5); id <= 9; id += 2 {
		if err := c.get(id, "/"); err != nil {
			t.Fatal(err)
		}
		if st, body, rst, ok := c.result(id); !ok || st != "200" || body != "ok /" || rst != 0 {
			t.Fatalf("stream %d: %q %q rst %v ended %v: the head stayed in sluice's buffer", id, st, body, rst, ok)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("%d server connections, want 1 (the streams shared one)", n)
	}
}
