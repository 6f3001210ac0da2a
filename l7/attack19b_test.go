package l7_test

// Second attack round on issue 19's changes: sluice's own HTTP/2 client to
// proto = "h2c" servers (h2up.go) seen from a broken or hostile h2c server,
// and the pooled HTTP/1 server connections (proxy.go). Real servers and
// clients on 127.0.0.1: raw x/net Framer servers, the a19Client of
// attack19_test.go. HAProxy 2.6 runs beside sluice on the same inputs when
// A19_HAPROXY=1 (a19bHAProxyH2).

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"sluice/internal/testutil"
)

// a19bHAProxyH2 runs HAProxy 2.6 with an h2c (prior knowledge) bind in
// front of the h2c server addr (`proto h2` on the server line), or returns
// "" when A19_HAPROXY is not set.
func a19bHAProxyH2(t *testing.T, addr string) string {
	if os.Getenv("A19_HAPROXY") == "" {
		return ""
	}
	front := testutil.FreeAddr(t)
	cfg := filepath.Join(t.TempDir(), "h.cfg")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`global
  maxconn 1000
defaults
  mode http
  timeout connect 5s
  timeout client 10s
  timeout server 2s
frontend f
  bind %s proto h2
  default_backend b
backend b
  retries 0
  server s1 %s proto h2
`, front, addr)), 0o644)
	cmd := exec.Command("haproxy", "-db", "-f", cfg)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	testutil.WaitFor(t, "haproxy listening", 5*time.Second, func() bool {
		c, err := net.Dial("tcp", front)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return front
}

// a19bFronts is sluice (always) and HAProxy (when asked) before addr.
func a19bFronts(t *testing.T, beExtra, addr string) map[string]string {
	m := map[string]string{"sluice": a19Front(t, "", "proto = \"h2c\"\n"+beExtra, addr)}
	if h := a19bHAProxyH2(t, addr); h != "" {
		m["haproxy"] = h
	}
	return m
}

// a19bWriteBlock sends a header block on stream id split in frames of at
// most 16384 bytes (HEADERS then CONTINUATION), as a client must.
func (c *a19Client) a19bWriteBlock(id uint32, end bool, fields ...string) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.hb.Reset()
	for i := 0; i+1 < len(fields); i += 2 {
		c.enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	block := c.hb.Bytes()
	first := true
	for first || len(block) > 0 {
		n := min(len(block), 16384)
		frag := block[:n]
		block = block[n:]
		var err error
		if first {
			err = c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: frag, EndStream: end, EndHeaders: len(block) == 0})
		} else {
			err = c.fr.WriteContinuation(id, len(block) == 0, frag)
		}
		if err != nil {
			return err
		}
		first = false
	}
	return nil
}

// a19bStats is what a raw h2c server saw.
type a19bStats struct {
	conns, closed, heads, resets, tooLarge atomic.Int64
	maxOpen                                atomic.Int64
}

// a19bRawServer is a raw h2c server advertising settings that reads frames
// of at most 16384 bytes (the size a peer may send it when it advertises
// no SETTINGS_MAX_FRAME_SIZE) and calls onHead for each request head it
// reads (trailers included), counting connections, heads, resets and
// frames over the size (answered with GOAWAY FRAME_SIZE_ERROR, as RFC 9113
// §4.2 asks).
func a19bRawServer(t *testing.T, st *a19bStats, settings []http2.Setting, onHead func(c *rawUpConn, f *http2.MetaHeadersFrame)) string {
	return rawUpServer(t, settings, func(c *rawUpConn) {
		st.conns.Add(1)
		defer st.closed.Add(1)
		c.fr.SetMaxReadFrameSize(16384)
		open := map[uint32]bool{}
		for {
			f, err := c.fr.ReadFrame()
			if err == http2.ErrFrameTooLarge {
				st.tooLarge.Add(1)
				c.write(func(fr *http2.Framer) error { return fr.WriteGoAway(0, http2.ErrCodeFrameSize, nil) })
				return
			}
			if err != nil {
				return
			}
			switch f := f.(type) {
			case *http2.SettingsFrame:
				if !f.IsAck() {
					c.write(func(fr *http2.Framer) error { return fr.WriteSettingsAck() })
				}
			case *http2.PingFrame:
				if !f.IsAck() {
					c.write(func(fr *http2.Framer) error { return fr.WritePing(true, f.Data) })
				}
			case *http2.RSTStreamFrame:
				st.resets.Add(1)
				delete(open, f.StreamID)
			case *http2.MetaHeadersFrame:
				if !open[f.StreamID] {
					st.heads.Add(1)
					open[f.StreamID] = true
					if n := int64(len(open)); n > st.maxOpen.Load() {
						st.maxOpen.Store(n)
					}
				}
				onHead(c, f)
			}
		}
	})
}

// Finding 1. Request trailers go to the h2c server in ONE HEADERS frame
// (writeTrailers: "Trailers fit a frame"), whatever the server's
// SETTINGS_MAX_FRAME_SIZE: a client's trailer block of 30 KB (legal: under
// max_header_bytes, sent to sluice in HEADERS + CONTINUATION) reaches the
// server as a 30 KB frame, a FRAME_SIZE_ERROR that ends the whole shared
// server connection, so another client's stream on it is cut too.
func TestA19bTrailersOverServerMaxFrameSize(t *testing.T) {
	st := &a19bStats{}
	addr := a19bRawServer(t, st, nil, func(c *rawUpConn, f *http2.MetaHeadersFrame) {
		switch {
		case f.PseudoValue("path") == "/slow":
			c.respond(f.StreamID, "200", "part", false) // held open
		case f.PseudoValue("path") == "" && f.StreamEnded():
			c.respond(f.StreamID, "200", "got trailers", true)
		}
	})
	for name, front := range a19bFronts(t, "", addr) {
		t.Run(name, func(t *testing.T) {
			c0, big0 := st.conns.Load(), st.tooLarge.Load()
			a := a19Dial(t, front, true)
			a.get(1, "/slow")
			if !a.wait(func() bool { s := a.streams[1]; return s != nil && s.body.Len() > 0 }) {
				t.Fatal("client A: no first part")
			}
			b := a19Dial(t, front, true)
			b.open(1, false, ":method", "POST", ":scheme", "http", ":authority", "x", ":path", "/post", "te", "trailers")
			b.send(func(fr *http2.Framer) error { return fr.WriteData(1, false, []byte("body")) })
			var tr []string
			for i := range 30 {
				tr = append(tr, fmt.Sprintf("x-trailer-%02d", i), strings.Repeat("^", 1000))
			}
			if err := b.a19bWriteBlock(1, true, tr...); err != nil {
				t.Fatal(err)
			}
			status, body, rst, _ := b.result(1)
			a.mu.Lock()
			aRst, aCode := a.streams[1].rst, a.streams[1].rstCode
			a.mu.Unlock()
			b.mu.Lock()
			goaways := b.goaways
			b.mu.Unlock()
			t.Logf("client B: %q %q reset %v goaways %v; client A's open stream reset: %v %v; server: %d connections, %d frames over 16384",
				status, body, rst, goaways, aRst, aCode, st.conns.Load()-c0, st.tooLarge.Load()-big0)
			if n := st.tooLarge.Load() - big0; n > 0 {
				t.Fatalf("%s sent the server %d frame(s) over its SETTINGS_MAX_FRAME_SIZE (16384): the shared connection ended (client A's stream reset: %v %v)", name, n, aRst, aCode)
			}
		})
	}
}

// Finding 2. A server advertising SETTINGS_MAX_CONCURRENT_STREAMS = 0 (it
// takes no stream now: RFC 9113 §6.5.2, a server shedding load) gets a
// stream anyway on every new connection (dialUp counts the caller's stream
// before reading the limit), refuses it, and sluice dials again for the
// retry: one client request costs the server upMaxRefused+1 connections,
// each kept open afterwards for pool_idle_timeout though it can never
// carry a stream.
func TestA19bMaxConcurrentStreamsZero(t *testing.T) {
	st := &a19bStats{}
	addr := a19bRawServer(t, st, []http2.Setting{{ID: http2.SettingMaxConcurrentStreams, Val: 0}}, func(c *rawUpConn, f *http2.MetaHeadersFrame) {
		id := f.StreamID
		c.write(func(fr *http2.Framer) error { return fr.WriteRSTStream(id, http2.ErrCodeRefusedStream) })
	})
	for name, front := range a19bFronts(t, "", addr) {
		t.Run(name, func(t *testing.T) {
			c0, h0 := st.conns.Load(), st.heads.Load()
			c := a19Dial(t, front, true)
			const n = 5
			for i := range n {
				c.get(uint32(2*i+1), "/")
			}
			var statuses []string
			for i := range n {
				status, _, rst, _ := c.result(uint32(2*i + 1))
				statuses = append(statuses, fmt.Sprintf("%s/%v", status, rst))
			}
			conns, heads := st.conns.Load()-c0, st.heads.Load()-h0
			t.Logf("%d requests: %v; the server saw %d connections (%d still open after the answers) and %d stream heads despite MAX_CONCURRENT_STREAMS 0",
				n, statuses, conns, st.conns.Load()-st.closed.Load(), heads)
			if conns > n {
				t.Fatalf("%s sent %d streams on %d connections for %d requests to a server allowing 0 concurrent streams", name, heads, conns, n)
			}
		})
	}
}

// Finding 2, HTTP/1 clients and the end: a 503 for each request (never
// sent), one connection dialed each, none left open.
func TestA19bMaxConcurrentStreamsZeroH1(t *testing.T) {
	st := &a19bStats{}
	addr := a19bRawServer(t, st, []http2.Setting{{ID: http2.SettingMaxConcurrentStreams, Val: 0}}, func(c *rawUpConn, f *http2.MetaHeadersFrame) {})
	front := a19Front(t, "", "proto = \"h2c\"", addr)
	tr := &http.Transport{}
	defer tr.CloseIdleConnections() // or the front drains it at its stop
	cl := &http.Client{Transport: tr, Timeout: 20 * time.Second}
	const n = 3
	for range n {
		resp, err := cl.Get("http://" + front + "/")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 503 {
			t.Fatalf("status %d, want 503", resp.StatusCode)
		}
	}
	if c, h := st.conns.Load(), st.heads.Load(); c > n || h > 0 {
		t.Fatalf("%d connections, %d stream heads for %d requests", c, h, n)
	}
	testutil.WaitFor(t, "no connection kept to a server taking no stream", 10*time.Second, func() bool {
		return st.closed.Load() == st.conns.Load()
	})
}

// A server that sends GOAWAY (last stream 0) on every stream: each retry
// needs a new connection; one request dials at most upMaxDials (2), then
// is refused.
func TestA19bRefusedRetriesBoundDials(t *testing.T) {
	st := &a19bStats{}
	addr := a19bRawServer(t, st, nil, func(c *rawUpConn, f *http2.MetaHeadersFrame) {
		c.write(func(fr *http2.Framer) error { return fr.WriteGoAway(0, http2.ErrCodeNo, nil) })
	})
	front := a19Front(t, "", "proto = \"h2c\"", addr)
	c := a19Dial(t, front, true)
	c.get(1, "/")
	status, _, rst, _ := c.result(1)
	if conns := st.conns.Load(); conns > 2 {
		t.Fatalf("one request dialed %d connections (answer %q/%v)", conns, status, rst)
	}
	if rst != http2.ErrCodeRefusedStream {
		t.Fatalf("answer %q reset %v, want REFUSED_STREAM", status, rst)
	}
}

// pool_max_idle bounds the idle h2c connections kept per server (0: none
// kept). A server allowing one stream per connection gets one connection
// per concurrent request; once they are answered, pool_max_idle stay.
func TestA19bPoolMaxIdleH2c(t *testing.T) {
	for _, keep := range []int{0, 1} {
		t.Run(fmt.Sprint(keep), func(t *testing.T) {
			const n = 3
			st := &a19bStats{}
			var mu sync.Mutex
			var held []func()
			addr := a19bRawServer(t, st, []http2.Setting{{ID: http2.SettingMaxConcurrentStreams, Val: 1}}, func(c *rawUpConn, f *http2.MetaHeadersFrame) {
				id := f.StreamID
				mu.Lock()
				held = append(held, func() { c.respond(id, "200", "ok", true) })
				if len(held) == n {
					for _, r := range held {
						r()
					}
				}
				mu.Unlock()
			})
			front := a19Front(t, "", fmt.Sprintf("proto = \"h2c\"\npool_max_idle = %d", keep), addr)
			c := a19Dial(t, front, true)
			for i := range n {
				c.get(uint32(2*i+1), "/")
			}
			for i := range n {
				if status, _, rst, _ := c.result(uint32(2*i + 1)); status != "200" {
					t.Fatalf("stream %d: %q %v", 2*i+1, status, rst)
				}
			}
			if got := st.conns.Load(); got != n {
				t.Fatalf("%d connections, want %d", got, n)
			}
			testutil.WaitFor(t, "idle h2c connections down to pool_max_idle", 10*time.Second, func() bool {
				return st.conns.Load()-st.closed.Load() == int64(keep)
			})
		})
	}
}

// Rapid reset through to the server (CVE-2023-44487 amplification): one
// client connection opening and resetting streams in a loop must cost the
// server a bounded number of streams and connections.
func TestA19bRapidResetUpstream(t *testing.T) {
	st := &a19bStats{}
	addr := a19bRawServer(t, st, nil, func(c *rawUpConn, f *http2.MetaHeadersFrame) {}) // never answers
	for name, front := range a19bFronts(t, "", addr) {
		t.Run(name, func(t *testing.T) {
			c0, h0 := st.conns.Load(), st.heads.Load()
			c := a19Dial(t, front, true)
			const n = 5000
			sent := 0
			for i := range n {
				id := uint32(2*i + 1)
				if c.get(id, "/") != nil {
					break
				}
				if c.send(func(fr *http2.Framer) error { return fr.WriteRSTStream(id, http2.ErrCodeCancel) }) != nil {
					break
				}
				sent++
			}
			c.wait(func() bool { return len(c.goaways) > 0 })
			c.mu.Lock()
			goaways := c.goaways
			c.mu.Unlock()
			t.Logf("%d HEADERS+RST sent; client got %v; server saw %d connections, %d stream heads, %d resets, at most %d open at once",
				sent, goaways, st.conns.Load()-c0, st.heads.Load()-h0, st.resets.Load(), st.maxOpen.Load())
			// HAProxy 2.6 passes ~3400 of 5000 on to the server over ~47
			// connections; sluice's calm budget (2×MaxH2Streams resets
			// net of streams served) bounds it per client connection.
			if name == "sluice" && (st.heads.Load()-h0 > 1000 || st.conns.Load()-c0 > 4) {
				t.Fatalf("one client's reset loop cost the server %d streams on %d connections", st.heads.Load()-h0, st.conns.Load()-c0)
			}
		})
	}
}

// a19bCase is a way for an h2c server to answer (or not) a request.
type a19bCase struct {
	name   string
	answer func(c *rawUpConn, id uint32)
}

func a19bHead(c *rawUpConn, id uint32, end bool, fields ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.hb.Reset()
	for i := 0; i+1 < len(fields); i += 2 {
		c.enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: c.hb.Bytes(), EndHeaders: true, EndStream: end})
}

func a19bCases() []a19bCase {
	data := func(c *rawUpConn, id uint32, end bool, b string) {
		c.write(func(fr *http2.Framer) error { return fr.WriteData(id, end, []byte(b)) })
	}
	return []a19bCase{
		{"1xx-with-end-stream", func(c *rawUpConn, id uint32) { a19bHead(c, id, true, ":status", "103") }},
		{"101-then-nothing", func(c *rawUpConn, id uint32) { a19bHead(c, id, false, ":status", "101") }},
		{"data-before-headers", func(c *rawUpConn, id uint32) {
			data(c, id, false, "x")
			c.respond(id, "200", "ok", true)
		}},
		{"second-headers-no-end", func(c *rawUpConn, id uint32) {
			c.respond(id, "200", "a", false)
			a19bHead(c, id, false, "x-more", "1")
		}},
		{"status-999", func(c *rawUpConn, id uint32) { c.respond(id, "999", "ok", true) }},
		{"status-099", func(c *rawUpConn, id uint32) { c.respond(id, "099", "ok", true) }},
		{"no-status", func(c *rawUpConn, id uint32) { a19bHead(c, id, true, "x-a", "b") }},
		{"content-length-short", func(c *rawUpConn, id uint32) {
			a19bHead(c, id, false, ":status", "200", "content-length", "2")
			data(c, id, true, "hello")
		}},
		{"content-length-long", func(c *rawUpConn, id uint32) {
			a19bHead(c, id, false, ":status", "200", "content-length", "50")
			data(c, id, true, "hello")
		}},
		{"connection-header", func(c *rawUpConn, id uint32) {
			a19bHead(c, id, false, ":status", "200", "connection", "close", "transfer-encoding", "chunked")
			data(c, id, true, "ok")
		}},
		{"uppercase-name", func(c *rawUpConn, id uint32) { a19bHead(c, id, true, ":status", "200", "X-Upper", "1") }},
		{"push-promise", func(c *rawUpConn, id uint32) {
			c.write(func(fr *http2.Framer) error {
				return fr.WritePushPromise(http2.PushPromiseParam{StreamID: id, PromiseID: 2, BlockFragment: []byte{0x82}, EndHeaders: true})
			})
			c.respond(id, "200", "ok", true)
		}},
		{"stream-window-overflow", func(c *rawUpConn, id uint32) {
			c.write(func(fr *http2.Framer) error { return fr.WriteWindowUpdate(id, 1<<31-1) })
			c.write(func(fr *http2.Framer) error { return fr.WriteWindowUpdate(id, 1<<31-1) })
			c.respond(id, "200", "ok", true)
		}},
		{"conn-window-overflow", func(c *rawUpConn, id uint32) {
			c.write(func(fr *http2.Framer) error { return fr.WriteWindowUpdate(0, 1<<31-1) })
			c.respond(id, "200", "ok", true)
		}},
		{"data-on-unopened-stream", func(c *rawUpConn, id uint32) {
			data(c, id+200, true, "stray")
			c.respond(id, "200", "ok", true)
		}},
		{"headers-on-unopened-stream", func(c *rawUpConn, id uint32) {
			a19bHead(c, id+200, true, ":status", "200")
			c.respond(id, "200", "ok", true)
		}},
		{"data-beyond-stream-window", func(c *rawUpConn, id uint32) {
			a19bHead(c, id, false, ":status", "200")
			chunk := strings.Repeat("w", 16384)
			for range 5 {
				data(c, id, false, chunk)
			}
			data(c, id, true, "end")
		}},
		{"goaway-above-sent", func(c *rawUpConn, id uint32) {
			c.write(func(fr *http2.Framer) error { return fr.WriteGoAway(1<<31-1, http2.ErrCodeNo, nil) })
			c.respond(id, "200", "ok", true)
		}},
		{"1xx-flood-then-200", func(c *rawUpConn, id uint32) {
			for range 200 {
				a19bHead(c, id, false, ":status", "103", "link", "</a>")
			}
			c.respond(id, "200", "ok", true)
		}},
		{"settings-initial-window-overflow", func(c *rawUpConn, id uint32) {
			c.write(func(fr *http2.Framer) error { return fr.WriteWindowUpdate(id, 1<<31-1-65535) })
			c.write(func(fr *http2.Framer) error {
				return fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1<<31 - 1})
			})
			c.respond(id, "200", "ok", true)
		}},
	}
}

// Survey (logs only): how sluice and HAProxy answer an h2 client when the
// h2c server misbehaves in each of a19bCases, and whether the next request
// on the same client connection is still served.
func TestA19bServerMisbehaviourSurvey(t *testing.T) {
	if os.Getenv("A19_HAPROXY") == "" {
		t.Skip("a survey beside HAProxy: A19_HAPROXY=1")
	}
	cases := a19bCases()
	st := &a19bStats{}
	addr := a19bRawServer(t, st, nil, func(c *rawUpConn, f *http2.MetaHeadersFrame) {
		if !f.HeadersEnded() || f.PseudoValue("path") == "" {
			return
		}
		p := strings.TrimPrefix(f.PseudoValue("path"), "/")
		for _, cs := range cases {
			if cs.name == p {
				cs.answer(c, f.StreamID)
				return
			}
		}
		c.respond(f.StreamID, "200", "next ok", true)
	})
	for name, front := range a19bFronts(t, `timeout_server = "2s"`, addr) {
		for _, cs := range cases {
			if name == "haproxy" && cs.name == "data-before-headers" {
				// HAProxy 2.6.x aborts on it (BUG_ON htx_get_first_type,
				// http_ana.c:1527): the process dies.
				t.Logf("%-7s %-32s -> haproxy crashes (FATAL bug condition), skipped", name, cs.name)
				continue
			}
			c := a19Dial(t, front, true)
			start := time.Now()
			c.get(1, "/"+cs.name)
			status, body, rst, ok := c.result(1)
			took := time.Since(start).Round(100 * time.Millisecond)
			c.get(3, "/next")
			ns, nb, nr, _ := c.result(3)
			c.mu.Lock()
			var heads []string
			if s := c.streams[1]; s != nil {
				for _, h := range s.heads {
					var fs []string
					for _, f := range h.Fields {
						fs = append(fs, f.Name+"="+f.Value)
					}
					heads = append(heads, strings.Join(fs, ","))
				}
			}
			c.mu.Unlock()
			if len(body) > 40 {
				body = body[:40] + "..."
			}
			t.Logf("%-7s %-32s -> %q %q rst=%v ended=%v in %v heads=%v | next: %q %q %v", name, cs.name, status, body, rst, ok, took, heads, ns, nb, nr)
		}
	}
}

// a19bOne serves each request head with answer on a raw h2c server and
// returns what an h2 client through sluice (timeout_server 3s) got.
func a19bOne(t *testing.T, answer func(c *rawUpConn, id uint32)) (status, body string, rst http2.ErrCode, heads []http2.MetaHeadersFrame) {
	st := &a19bStats{}
	addr := a19bRawServer(t, st, nil, func(c *rawUpConn, f *http2.MetaHeadersFrame) {
		if f.PseudoValue("path") != "" {
			answer(c, f.StreamID)
		}
	})
	front := a19Front(t, "", "proto = \"h2c\"\ntimeout_server = \"3s\"", addr)
	c := a19Dial(t, front, true)
	c.get(1, "/")
	status, body, rst, _ = c.result(1)
	c.mu.Lock()
	heads = c.streams[1].heads
	c.mu.Unlock()
	return
}

// Finding 3. A response the server ends in a 1xx HEADERS (END_STREAM on
// an interim head), or a 101 to an HTTP/2 request (RFC 9113 §8.6 forbids
// it), can never be followed by a final response: sluice waits for one
// until timeout_server and answers 504 (blaming a slow server, counted as
// a timeout). HAProxy ends the stream at once (REFUSED_STREAM for the
// first, 502 for the second).
func TestA19bInterimEndStreamIsNotATimeout(t *testing.T) {
	for _, cs := range []struct {
		name string
		end  bool
		code string
	}{{"103 END_STREAM", true, "103"}, {"101", false, "101"}} {
		status, _, rst, _ := a19bOne(t, func(c *rawUpConn, id uint32) { a19bHead(c, id, cs.end, ":status", cs.code) })
		if status == "504" {
			t.Errorf("%s: 504 after timeout_server for a response that had ended (reset %v); want 502 or a reset at once", cs.name, rst)
		}
	}
}

// Finding 4. ":status 099" from the server passes the 3-digit check and
// goes to the client as ":status 99", a status no HTTP/2 peer may send
// (RFC 9110 §15: three digits, 100..599). HAProxy resets the stream
// (INTERNAL_ERROR).
func TestA19bStatusOutOfRange(t *testing.T) {
	status, _, rst, _ := a19bOne(t, func(c *rawUpConn, id uint32) { c.respond(id, "099", "ok", true) })
	if len(status) != 3 && rst == 0 {
		t.Fatalf("client got :status %q", status)
	}
}

// Finding 5. A response whose DATA exceed its content-length (RFC 9113
// §8.1.1: malformed; an intermediary must not forward it) reaches the
// client whole, 5 bytes under "content-length: 2": a client behind a
// further HTTP/1 hop reads the surplus as the next response. HAProxy
// forwards at most the 2 bytes announced.
func TestA19bContentLengthMismatchForwarded(t *testing.T) {
	status, body, rst, heads := a19bOne(t, func(c *rawUpConn, id uint32) {
		a19bHead(c, id, false, ":status", "200", "content-length", "2")
		c.write(func(fr *http2.Framer) error { return fr.WriteData(id, true, []byte("hello")) })
	})
	cl := ""
	for _, h := range heads {
		for _, f := range h.Fields {
			if f.Name == "content-length" {
				cl = f.Value
			}
		}
	}
	if rst == 0 && cl == "2" && len(body) > 2 {
		t.Fatalf("status %s, content-length %s, %d body bytes relayed: %q", status, cl, len(body), body)
	}
	if len(body) > 2 || rst == 0 {
		t.Fatalf("status %s, %q, reset %v: want at most the 2 bytes announced, then a reset", status, body, rst)
	}
}

// Finding 5, HTTP/1 client: the 2 bytes announced, then the connection
// closes (the excess never on the wire, no keep-alive after a broken
// response).
func TestA19bContentLengthExcessH1(t *testing.T) {
	st := &a19bStats{}
	addr := a19bRawServer(t, st, nil, func(c *rawUpConn, f *http2.MetaHeadersFrame) {
		id := f.StreamID
		a19bHead(c, id, false, ":status", "200", "content-length", "2")
		c.write(func(fr *http2.Framer) error { return fr.WriteData(id, true, []byte("hello")) })
	})
	front := a19Front(t, "", "proto = \"h2c\"", addr)
	conn := testutil.Dial(t, front)
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /next HTTP/1.1\r\nHost: x\r\n\r\n")
	got, err := io.ReadAll(conn)
	if err != nil {
		t.Fatalf("%v after %q (want the connection closed)", err, got)
	}
	_, body, _ := strings.Cut(string(got), "\r\n\r\n")
	if body != "he" {
		t.Fatalf("client read %q", got)
	}
}

// HTTP/1 clients (h1.go exchange, writeThenRead on reused connections)
// through a pool of 2 idle server connections, with every framing of
// a19Mixed and two more server habits: a close right after a keep-alive
// response ("shut"), a half-close after it ("half"). Every answer must be
// the request's own. A POST that lands on a connection the server is
// closing may get a 502 (a CI run hit that window once); a GET is retried.
//
// Not here: bytes a server writes after a complete response in a later
// write. They are caught when they arrive before the connection's next
// reuse (TestLateBytesBeforeReuseAreCaught); one that is taken again in
// between, microseconds later, reads them as its answer — the window every
// pooling proxy has (HAProxy's idle connections are watched by its poller
// between two loop turns). A CI run under load hit it here.
func TestA19bH1NoResponseMixUp(t *testing.T) {
	srv := a19Serve(t, func(w *bufio.Writer, head string, body []byte, c net.Conn) bool {
		path := strings.Fields(requestLine(head))[1]
		resp := "resp:" + path
		switch strings.Split(path, "/")[1] {
		case "late":
			fmt.Fprintf(w, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(resp), resp)
			w.Flush()
			w.WriteString(a19Smuggled)
			return true
		case "shut":
			fmt.Fprintf(w, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(resp), resp)
			return false
		case "half":
			fmt.Fprintf(w, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(resp), resp)
			w.Flush()
			c.(*net.TCPConn).CloseWrite()
			return true
		}
		return a19Mixed(w, head, body, c)
	})
	front := a19Front(t, "", "pool_max_idle = 2", srv.addr)
	kinds := []string{"cl", "chunked", "close", "1xx", "extra", "shut", "half", "head", "204", "echo"}
	var bad, postRefused atomic.Int64
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tr := &http.Transport{MaxIdleConnsPerHost: 1}
			defer tr.CloseIdleConnections()
			cl := &http.Client{Transport: tr, Timeout: 20 * time.Second}
			for i := range 60 {
				kind := kinds[(g*7+i)%len(kinds)]
				path := fmt.Sprintf("/%s/%d-%d", kind, g, i)
				method, want := "GET", "resp:"+path
				var rb io.Reader
				switch kind {
				case "head":
					method, want = "HEAD", ""
				case "204":
					want = ""
				case "echo":
					method, rb = "POST", strings.NewReader("b"+path)
					want = "resp:" + path + ":b" + path
				}
				req, _ := http.NewRequest(method, "http://"+front+path, rb)
				resp, err := cl.Do(req)
				if err != nil {
					if kind != "204" {
						bad.Add(1)
						t.Errorf("%s: %v", path, err)
					}
					continue
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if method == "POST" && resp.StatusCode == http.StatusBadGateway {
					// A pooled connection the server was closing
					// ("shut", "half") when the POST went on it: sent
					// once, never again (not idempotent), so a 502 —
					// a refusal, not another request's answer. HAProxy
					// and nginx answer the same in this window.
					postRefused.Add(1)
					continue
				}
				if err == nil && string(b) != want {
					bad.Add(1)
					t.Errorf("%s %s: got %q, want %q", method, path, b, want)
				}
			}
		}()
	}
	wg.Wait()
	if n := postRefused.Load(); n > 0 {
		t.Logf("%d POST(s) answered 502 after an unannounced server close", n)
	}
}

// Bytes a server writes on a kept-alive connection after its response, in
// a later write, are caught if they arrive before the connection is taken
// again: the check before reuse (serverConn.quiet) sees them, closes that
// connection, and the next request goes on a fresh one.
func TestLateBytesBeforeReuseAreCaught(t *testing.T) {
	sendLate, lateWritten := make(chan struct{}), make(chan struct{})
	srv := a19Serve(t, func(w *bufio.Writer, head string, body []byte, c net.Conn) bool {
		path := strings.Fields(requestLine(head))[1]
		resp := "resp:" + path
		fmt.Fprintf(w, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(resp), resp)
		if path == "/one" {
			w.Flush()
			<-sendLate // once the client has its answer: the connection is pooled
			w.WriteString(a19Smuggled)
			w.Flush() // on loopback: in sluice's socket once written
			close(lateWritten)
		}
		return true
	})
	front := a19Front(t, "", "pool_max_idle = 4", srv.addr)
	get := func(path string) string {
		c, err := net.Dial("tcp", front)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", path)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	if got := get("/one"); got != "resp:/one" {
		t.Fatalf("first: %q", got)
	}
	close(sendLate)
	<-lateWritten
	if got := get("/two"); got != "resp:/two" {
		t.Fatalf("second request got %q: the late bytes of the first were taken as its answer", got)
	}
}
