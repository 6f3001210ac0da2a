package l7_test

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"sluice/internal/testutil"
)

// openConns is a real HTTP/1.1 server on loopback that answers every
// request with a large body and counts the connections it has open now.
type openConns struct {
	addr string
	open atomic.Int64
	peak atomic.Int64
}

func serveLarge(t *testing.T, size int) *openConns {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &openConns{addr: ln.Addr().String()}
	body := bytes.Repeat([]byte("x"), size)
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", fmt.Sprint(len(body)))
			w.Write(body)
		}),
		ConnState: func(_ net.Conn, s http.ConnState) {
			switch s {
			case http.StateNew:
				n := b.open.Add(1)
				for p := b.peak.Load(); n > p && !b.peak.CompareAndSwap(p, n); p = b.peak.Load() {
				}
			case http.StateClosed, http.StateHijacked:
				b.open.Add(-1)
			}
		},
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return b
}

// stallClient is an HTTP/2 client written with the bare Framer: it sets
// SETTINGS_INITIAL_WINDOW_SIZE = 0, opens streams and never sends
// WINDOW_UPDATE, so no response byte can move. It answers SETTINGS and
// PING as a live client (or an attacker) would.
type stallClient struct {
	conn net.Conn
	fr   *http2.Framer
	wmu  sync.Mutex

	mu         sync.Mutex
	status     map[uint32]string // :status of each stream's response
	reset      map[uint32]bool   // streams the server reset
	maxStreams uint32            // the server's SETTINGS_MAX_CONCURRENT_STREAMS
	done       chan struct{}     // closed when the connection ends
}

func dialStall(t *testing.T, front string) *stallClient {
	t.Helper()
	conn := testutil.Dial(t, front)
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	c := &stallClient{conn: conn, fr: http2.NewFramer(conn, conn),
		status: map[uint32]string{}, reset: map[uint32]bool{}, done: make(chan struct{})}
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if _, err := conn.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	if err := c.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0}); err != nil {
		t.Fatal(err)
	}
	go c.read()
	return c
}

func (c *stallClient) read() {
	defer close(c.done)
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			return
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if f.IsAck() {
				continue
			}
			if v, ok := f.Value(http2.SettingMaxConcurrentStreams); ok {
				c.mu.Lock()
				c.maxStreams = v
				c.mu.Unlock()
			}
			c.wmu.Lock()
			c.fr.WriteSettingsAck()
			c.wmu.Unlock()
		case *http2.PingFrame:
			if !f.IsAck() {
				c.wmu.Lock()
				c.fr.WritePing(true, f.Data)
				c.wmu.Unlock()
			}
		case *http2.MetaHeadersFrame:
			c.mu.Lock()
			c.status[f.StreamID] = f.PseudoValue("status")
			c.mu.Unlock()
		case *http2.RSTStreamFrame:
			c.mu.Lock()
			c.reset[f.StreamID] = true
			c.mu.Unlock()
		}
	}
}

// open starts n GET streams for path.
func (c *stallClient) open(t *testing.T, host, path string, n int) {
	t.Helper()
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	c.wmu.Lock()
	defer c.wmu.Unlock()
	for i := range n {
		hb.Reset()
		for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", host}, {":path", path}} {
			enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
		err := c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: uint32(2*i + 1), BlockFragment: hb.Bytes(),
			EndStream: true, EndHeaders: true})
		if err != nil {
			t.Fatal(err)
		}
	}
}

func (c *stallClient) count(status string) (withStatus, reset int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range c.status {
		if s == status {
			withStatus++
		}
	}
	return withStatus, len(c.reset)
}

// Issue 15: a client that keeps its flow-control window shut pinned a
// server connection per stream for ever. Each such stream must end after
// timeout_client and give its server connection back.
func TestH2StalledStreamsReleaseServerConns(t *testing.T) {
	be := serveLarge(t, 1<<20)
	const streams = 20
	_, front := testutil.Start(t, fmt.Sprintf(`
[defaults]
timeout_client = "300ms"
timeout_server = "300ms"
[frontend.web]
mode = "http"
bind = ["{{FRONT}}"]
h2c = true
default_backend = "app"
[backend.app]
[[backend.app.server]]
name = "a"
address = %q
`, be.addr))

	c := dialStall(t, front)
	c.open(t, front, "/big", streams)
	testutil.WaitFor(t, "every stream at the server", 5*time.Second, func() bool { return be.peak.Load() == streams })
	testutil.WaitFor(t, "the server connections of the stalled streams closed", 10*time.Second, func() bool {
		return be.open.Load() == 0
	})
	testutil.WaitFor(t, "every stalled stream reset", 5*time.Second, func() bool {
		_, reset := c.count("")
		return reset == streams
	})
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.maxStreams == 0 || c.maxStreams > 100 {
		t.Fatalf("SETTINGS_MAX_CONCURRENT_STREAMS = %d, want a bound of at most 100", c.maxStreams)
	}
}

// Issue 15: server connections count against global.maxconn, however many
// streams a client opens; past the budget a stream is answered 503.
func TestServerConnsBoundedByMaxconn(t *testing.T) {
	be := serveLarge(t, 1<<20)
	const maxconn, streams = 4, 10
	eng, front := testutil.Start(t, fmt.Sprintf(`
[global]
maxconn = %d
[defaults]
timeout_client = "30s"
[frontend.web]
mode = "http"
bind = ["{{FRONT}}"]
h2c = true
default_backend = "app"
[backend.app]
[[backend.app.server]]
name = "a"
address = %q
`, maxconn, be.addr))
	p := eng.Front.Frontends[0].HTTP()

	c := dialStall(t, front)
	c.open(t, front, "/big", streams)
	testutil.WaitFor(t, "streams past the budget answered 503", 5*time.Second, func() bool {
		n, _ := c.count("503")
		return n == streams-maxconn
	})
	if got := be.peak.Load(); got > maxconn {
		t.Fatalf("%d server connections at once, budget %d", got, maxconn)
	}
	if got := p.Counters.NoServerConn503.Load(); got != streams-maxconn {
		t.Fatalf("NoServerConn503 = %d, want %d", got, streams-maxconn)
	}

	// The slots come back when the client goes: an HTTP/1 request (the
	// lean path, same budget) then gets through.
	c.conn.Close()
	testutil.WaitFor(t, "the server connections given back", 10*time.Second, func() bool {
		return be.open.Load() == 0 && p.ServerConns.Open() == 0
	})
	resp := rawExchange(t, front, "GET /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	if !strings.HasPrefix(resp, "HTTP/1.1 200") {
		t.Fatalf("after the budget came back: %q", statusOf(resp))
	}
	// And the lean path is refused too while the budget is spent.
	c2 := dialStall(t, front)
	c2.open(t, front, "/big", maxconn)
	testutil.WaitFor(t, "the budget spent again", 5*time.Second, func() bool { return p.ServerConns.Open() == maxconn })
	resp = rawExchange(t, front, "GET /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	if !strings.HasPrefix(resp, "HTTP/1.1 503") {
		t.Fatalf("HTTP/1 request with the budget spent: %q", statusOf(resp))
	}
}
