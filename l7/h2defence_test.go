package l7_test

import (
	"bytes"
	"fmt"
	"io"
	"maps"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"sluice/internal/testutil"
	"sluice/l7"
)

// rawH2 is an HTTP/2 client made of a bare Framer: it sends what a test
// tells it, answers SETTINGS, and records what the server sends.
type rawH2 struct {
	conn net.Conn
	fr   *http2.Framer
	wmu  sync.Mutex
	enc  *hpack.Encoder
	hb   bytes.Buffer

	mu      sync.Mutex
	status  map[uint32]string
	body    map[uint32]string
	ended   map[uint32]bool
	resets  map[uint32]http2.ErrCode
	goaways []*http2.GoAwayFrame
	pings   [][8]byte
	pongs   int
	done    chan struct{}
}

func dialRaw(t *testing.T, front string) *rawH2 {
	t.Helper()
	conn := testutil.Dial(t, front)
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	c := &rawH2{conn: conn, fr: http2.NewFramer(conn, conn), status: map[uint32]string{}, body: map[uint32]string{},
		ended: map[uint32]bool{}, resets: map[uint32]http2.ErrCode{}, done: make(chan struct{})}
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.enc = hpack.NewEncoder(&c.hb)
	if _, err := conn.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	c.fr.WriteSettings()
	go c.read()
	return c
}

func (c *rawH2) read() {
	defer close(c.done)
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			return
		}
		c.mu.Lock()
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				c.wmu.Lock()
				c.fr.WriteSettingsAck()
				c.wmu.Unlock()
			}
		case *http2.PingFrame:
			if f.IsAck() {
				c.pongs++
			} else {
				c.pings = append(c.pings, f.Data)
			}
		case *http2.MetaHeadersFrame:
			if s := f.PseudoValue("status"); s != "" {
				c.status[f.StreamID] = s
			}
			if f.StreamEnded() {
				c.ended[f.StreamID] = true
			}
		case *http2.DataFrame:
			c.body[f.StreamID] += string(f.Data())
			if f.StreamEnded() {
				c.ended[f.StreamID] = true
			}
		case *http2.RSTStreamFrame:
			c.resets[f.StreamID] = f.ErrCode
		case *http2.GoAwayFrame:
			c.goaways = append(c.goaways, f)
		}
		c.mu.Unlock()
	}
}

func (c *rawH2) send(fn func(fr *http2.Framer) error) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return fn(c.fr)
}

// headers opens stream id with a GET (END_STREAM: end).
func (c *rawH2) headers(id uint32, host, path string, end bool, extra ...string) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.hb.Reset()
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", host}, {":path", path}} {
		c.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	for i := 0; i+1 < len(extra); i += 2 {
		c.enc.WriteField(hpack.HeaderField{Name: extra[i], Value: extra[i+1]})
	}
	return c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: c.hb.Bytes(), EndStream: end, EndHeaders: true})
}

func (c *rawH2) lastGoAway() *http2.GoAwayFrame {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.goaways) == 0 {
		return nil
	}
	return c.goaways[len(c.goaways)-1]
}

// holdingServer reads requests and never answers.
func holdingServer(t *testing.T) string {
	return rawServer(t, func(c net.Conn) { io.Copy(io.Discard, c) })
}

// CVE-2023-44487: streams opened and reset at once, in a loop, while
// sluice works on them, end in GOAWAY ENHANCE_YOUR_CALM after a bounded
// number, and the work they caused is bounded.
func TestH2RapidResetEndsInCalm(t *testing.T) {
	eng, front := testutil.Start(t, fmt.Sprintf(`
[frontend.web]
mode = "http"
bind = ["{{FRONT}}"]
h2c = true
default_backend = "app"
[backend.app]
[[backend.app.server]]
name = "a"
address = %q
`, holdingServer(t)))
	p := eng.Front.Frontends[0].HTTP()
	c := dialRaw(t, front)
	const tries = 5000
	sent := 0
	for i := range tries {
		id := uint32(2*i + 1)
		if c.headers(id, "x", "/", true) != nil {
			break
		}
		if c.send(func(fr *http2.Framer) error { return fr.WriteRSTStream(id, http2.ErrCodeCancel) }) != nil {
			break
		}
		sent++
		if c.lastGoAway() != nil {
			break
		}
	}
	testutil.WaitFor(t, "GOAWAY", 10*time.Second, func() bool { return c.lastGoAway() != nil })
	g := c.lastGoAway()
	if g.ErrCode != http2.ErrCodeEnhanceYourCalm {
		t.Fatalf("GOAWAY %v, want ENHANCE_YOUR_CALM", g.ErrCode)
	}
	if g.LastStreamID >= 2*tries-1 {
		t.Fatalf("last stream %d: every reset stream was taken", g.LastStreamID)
	}
	if n := p.Counters.H2Calm.Load(); n != 1 {
		t.Fatalf("H2Calm = %d, want 1", n)
	}
	<-c.done
}

const l7MaxStreams = 100

// CVE-2024-27316: a header block that never ends (empty CONTINUATION
// frames) ends the connection with ENHANCE_YOUR_CALM.
func TestH2ContinuationFlood(t *testing.T) {
	addr, _ := startHTTP(t, reporter("s1"), false)
	eng, front := testutil.Start(t, h2Config("default_backend = \"app\"\nh2c = true", "",
		map[string]h2Backend{"app": {addrs: []string{addr}}}))
	c := dialRaw(t, front)
	c.wmu.Lock()
	c.hb.Reset()
	c.enc.WriteField(hpack.HeaderField{Name: ":method", Value: "GET"})
	err := c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: c.hb.Bytes()})
	for i := 0; i < 10000 && err == nil; i++ {
		err = c.fr.WriteContinuation(1, false, nil)
	}
	c.wmu.Unlock()
	<-c.done
	g := c.lastGoAway()
	if g == nil || g.ErrCode != http2.ErrCodeEnhanceYourCalm {
		t.Fatalf("GOAWAY %v, want ENHANCE_YOUR_CALM", g)
	}
	if n := eng.Front.Frontends[0].HTTP().Counters.H2Calm.Load(); n != 1 {
		t.Fatalf("H2Calm = %d", n)
	}
}

// PING and SETTINGS floods: each costs a reply, so past a bound (net of
// requests served) the connection ends with ENHANCE_YOUR_CALM; until
// then every PING is answered. The flood goes in one write of just
// enough frames to cross the bound: a client still flooding after the
// GOAWAY (its reader behind on the replies) outlasts sluice's linger, and
// the close with unread input resets the connection, the GOAWAY with it.
func TestH2ControlFloods(t *testing.T) {
	addr, _ := startHTTP(t, reporter("s1"), false)
	for _, kind := range []string{"ping", "settings"} {
		t.Run(kind, func(t *testing.T) {
			_, front := testutil.Start(t, h2Config("default_backend = \"app\"\nh2c = true", "",
				map[string]h2Backend{"app": {addrs: []string{addr}}}))
			c := dialRaw(t, front)
			const sent = l7.H2MaxMeanless + 1 // with the preface's SETTINGS: one past the bound
			var flood bytes.Buffer
			fr := http2.NewFramer(&flood, nil)
			for i := range sent {
				if kind == "ping" {
					fr.WritePing(false, [8]byte{byte(i), byte(i >> 8)})
				} else {
					fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 65535})
				}
			}
			if err := c.send(func(*http2.Framer) error { _, err := c.conn.Write(flood.Bytes()); return err }); err != nil {
				t.Fatal(err)
			}
			<-c.done
			g := c.lastGoAway()
			if g == nil || g.ErrCode != http2.ErrCodeEnhanceYourCalm {
				t.Fatalf("GOAWAY %v, want ENHANCE_YOUR_CALM", g)
			}
			if kind == "ping" {
				c.mu.Lock()
				defer c.mu.Unlock()
				// The preface's SETTINGS counted too.
				if c.pongs < l7.H2MaxMeanless-1 || c.pongs >= sent {
					t.Fatalf("%d of %d PINGs answered, want all up to the bound (%d)", c.pongs, sent, l7.H2MaxMeanless)
				}
			}
		})
	}
}

// At most 100 streams in progress per connection: the next is refused
// (REFUSED_STREAM, counted); the others go on.
func TestH2MaxConcurrentStreams(t *testing.T) {
	eng, front := testutil.Start(t, fmt.Sprintf(`
[frontend.web]
mode = "http"
bind = ["{{FRONT}}"]
h2c = true
default_backend = "app"
[backend.app]
[[backend.app.server]]
name = "a"
address = %q
`, holdingServer(t)))
	openPastTheLimit(t, dialRaw(t, front), 1, eng.Front.Frontends[0].HTTP())
}

// openPastTheLimit opens the limit's worth of streams from id first on
// (to a server that never answers), then one more, and checks that only
// that one is refused and counted.
func openPastTheLimit(t *testing.T, c *rawH2, first uint32, p *l7.Proxy) {
	t.Helper()
	for i := range l7MaxStreams + 1 {
		if err := c.headers(first+uint32(2*i), "x", "/", true); err != nil {
			t.Fatal(err)
		}
	}
	last := first + uint32(2*l7MaxStreams)
	testutil.WaitFor(t, "the stream past the limit refused", 5*time.Second, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.resets[last] == http2.ErrCodeRefusedStream
	})
	c.mu.Lock()
	resets := maps.Clone(c.resets)
	c.mu.Unlock()
	if len(resets) != 1 {
		t.Fatalf("streams reset: %v; want only %d, the one past the %d open", resets, last, l7MaxStreams)
	}
	if got := p.Counters.H2Refused.Load(); got != 1 {
		t.Fatalf("H2Refused = %d, want 1", got)
	}
}

// A stream whose response and request both ended is closed for the client
// (RFC 9113 §5.1.2) even while its goroutine still winds down: a client
// that read its end may open the limit's worth of new streams at once, and
// only the one past them is refused (h2load -m100 met REFUSED_STREAM on
// 1-6% of streams when the goroutines were counted).
func TestH2FinishedStreamsLeaveTheLimit(t *testing.T) {
	hold := make(chan struct{})
	var release sync.Once
	l7.SetStreamDoneHook(func(target string) {
		if target == "/winds-down" {
			<-hold
		}
	})
	t.Cleanup(func() {
		release.Do(func() { close(hold) })
		l7.SetStreamDoneHook(nil)
	})
	eng, front := testutil.Start(t, fmt.Sprintf(`
[frontend.web]
mode = "http"
bind = ["{{FRONT}}"]
h2c = true
max_header_bytes = 4096
default_backend = "app"
[backend.app]
[[backend.app.server]]
name = "a"
address = %q
`, holdingServer(t)))
	// Let the held goroutine go before the engine stops (cleanups run last
	// registered first): the stop waits for it.
	t.Cleanup(func() { release.Do(func() { close(hold) }) })
	p := eng.Front.Frontends[0].HTTP()
	c := dialRaw(t, front)
	// Stream 1 is answered by sluice itself (431) and its goroutine is
	// then held as it ends.
	if err := c.headers(1, "x", "/winds-down", true, "x-big", strings.Repeat("a", 6000)); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "stream 1 answered whole", 5*time.Second, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.ended[1]
	})
	c.mu.Lock()
	status := c.status[1]
	c.mu.Unlock()
	if status != "431" {
		t.Fatalf("stream 1: status %q, want 431", status)
	}
	openPastTheLimit(t, c, 3, p)
}

// A header list over max_header_bytes is answered 431 on its stream; the
// connection goes on.
func TestH2HeaderListTooLarge(t *testing.T) {
	addr, _ := startHTTP(t, reporter("s1"), false)
	_, front := testutil.Start(t, h2Config("default_backend = \"app\"\nh2c = true\nmax_header_bytes = 4096", "",
		map[string]h2Backend{"app": {addrs: []string{addr}}}))
	c := dialRaw(t, front)
	if err := c.headers(1, "x", "/big", true, "x-big", strings.Repeat("a", 6000)); err != nil {
		t.Fatal(err)
	}
	if err := c.headers(3, "x", "/small", true); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "both answered", 5*time.Second, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.ended[1] && c.ended[3]
	})
	c.mu.Lock() // the client's reader goes on filling these maps
	defer c.mu.Unlock()
	if c.status[1] != "431" || c.status[3] != "200" || !strings.Contains(c.body[3], "path=/small") {
		t.Fatalf("statuses %q %q", c.status[1], c.status[3])
	}
}

// Graceful drain (RFC 9113 §6.8): a first GOAWAY with 2^31-1 and a PING;
// a stream the client sends before it answers the PING is still served,
// and the final GOAWAY names it; the connection then closes.
func TestH2DrainServesStreamsInFlight(t *testing.T) {
	addr, _ := startHTTP(t, reporter("s1"), false)
	eng, front := testutil.Start(t, h2Config("default_backend = \"app\"\nh2c = true", "",
		map[string]h2Backend{"app": {addrs: []string{addr}}}))
	c := dialRaw(t, front)
	if err := c.headers(1, "x", "/one", true); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "stream 1 answered", 5*time.Second, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.ended[1]
	})
	eng.Front.Frontends[0].HTTP().Drain()
	var ping [8]byte
	testutil.WaitFor(t, "first GOAWAY and PING", 5*time.Second, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		if len(c.goaways) == 1 && len(c.pings) == 1 {
			ping = c.pings[0]
			return true
		}
		return false
	})
	if g := c.lastGoAway(); g.LastStreamID != 1<<31-1 || g.ErrCode != http2.ErrCodeNo {
		t.Fatalf("first GOAWAY %d %v", g.LastStreamID, g.ErrCode)
	}
	// On the wire before the client saw the GOAWAY: must be served.
	if err := c.headers(3, "x", "/three", true); err != nil {
		t.Fatal(err)
	}
	c.send(func(fr *http2.Framer) error { return fr.WritePing(true, ping) })
	<-c.done // the connection closes by itself
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.goaways) != 2 || c.goaways[1].LastStreamID != 3 {
		t.Fatalf("GOAWAYs %v, want a final one naming stream 3", c.goaways)
	}
	if c.status[3] != "200" || !strings.Contains(c.body[3], "path=/three") || !c.ended[3] {
		t.Fatalf("stream 3: %q %q", c.status[3], c.body[3])
	}
}
