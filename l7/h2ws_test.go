package l7_test

import (
	"bufio"
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"golang.org/x/net/websocket"

	"sluice/internal/testutil"
)

// h2wsClient is an HTTP/2 client made of a bare Framer that speaks RFC
// 8441: frames the server sends come out of frames, copied.
type h2wsClient struct {
	conn     net.Conn
	fr       *http2.Framer
	wmu      sync.Mutex
	frames   chan h2ev
	settings map[http2.SettingID]uint32
}

func dialH2WS(t *testing.T, front string, ack bool) *h2wsClient {
	t.Helper()
	conn := testutil.Dial(t, front)
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	c := &h2wsClient{conn: conn, fr: http2.NewFramer(conn, conn), frames: make(chan h2ev, 1024),
		settings: map[http2.SettingID]uint32{}}
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if _, err := conn.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	c.fr.WriteSettings()
	// The server's SETTINGS, acknowledged before anything else is sent
	// unless the test wants a client that has not seen them.
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		if sf, ok := f.(*http2.SettingsFrame); ok && !sf.IsAck() {
			sf.ForeachSetting(func(s http2.Setting) error { c.settings[s.ID] = s.Val; return nil })
			break
		}
	}
	if ack {
		c.fr.WriteSettingsAck()
	}
	go c.read()
	return c
}

func (c *h2wsClient) read() {
	defer close(c.frames)
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			return
		}
		// Copied: the framer reuses a frame at the next read.
		switch f := f.(type) {
		case *http2.DataFrame:
			if n := uint32(len(f.Data())); n > 0 {
				// Read at once: the windows open as the bytes come.
				c.wmu.Lock()
				c.fr.WriteWindowUpdate(0, n)
				c.fr.WriteWindowUpdate(f.StreamID, n)
				c.wmu.Unlock()
			}
			c.frames <- h2ev{id: f.StreamID, data: true, b: bytes.Clone(f.Data()), end: f.StreamEnded()}
		case *http2.MetaHeadersFrame:
			c.frames <- h2ev{id: f.StreamID, head: true, fields: append([]hpack.HeaderField(nil), f.Fields...),
				status: f.PseudoValue("status"), end: f.StreamEnded()}
		case *http2.RSTStreamFrame:
			c.frames <- h2ev{id: f.StreamID, code: f.ErrCode, rst: true}
		}
	}
}

// h2ev is what the client saw of one frame of a stream.
type h2ev struct {
	id                   uint32
	head, data, rst, end bool
	status               string
	fields               []hpack.HeaderField
	b                    []byte
	code                 http2.ErrCode
}

func (c *h2wsClient) headers(t *testing.T, id uint32, end bool, kv ...string) {
	t.Helper()
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for i := 0; i+1 < len(kv); i += 2 {
		enc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hb.Bytes(), EndStream: end, EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
}

func (c *h2wsClient) data(t *testing.T, id uint32, b []byte, end bool) {
	t.Helper()
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.fr.WriteData(id, end, b); err != nil {
		t.Fatal(err)
	}
}

// next is the next frame of stream id.
func (c *h2wsClient) next(t *testing.T, id uint32) h2ev {
	t.Helper()
	for f := range c.frames {
		if f.id == id {
			return f
		}
	}
	t.Fatalf("stream %d: connection closed", id)
	return h2ev{}
}

// answer reads stream id's response: status, body, reset code.
func (c *h2wsClient) answer(t *testing.T, id uint32) (string, string, http2.ErrCode) {
	t.Helper()
	var status string
	var body []byte
	for {
		f := c.next(t, id)
		switch {
		case f.head:
			status = f.status
		case f.data:
			body = append(body, f.b...)
		case f.rst:
			return status, string(body), f.code
		}
		if f.end {
			return status, string(body), 0
		}
	}
}

// wsFrame is a client's masked WebSocket frame (RFC 6455 §5.2).
func wsFrame(op byte, payload []byte) []byte {
	b := []byte{0x80 | op}
	switch n := len(payload); {
	case n < 126:
		b = append(b, 0x80|byte(n))
	default:
		b = append(b, 0x80|126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	}
	mask := [4]byte{1, 2, 3, 4}
	b = append(b, mask[:]...)
	for i, ch := range payload {
		b = append(b, ch^mask[i%4])
	}
	return b
}

// wsRead reads one server WebSocket frame (unmasked) from stream id.
func (c *h2wsClient) wsRead(t *testing.T, id uint32, pending *[]byte) (op byte, payload []byte) {
	t.Helper()
	for {
		if b := *pending; len(b) >= 2 {
			n, hl := int(b[1]&0x7f), 2
			if n == 126 && len(b) >= 4 {
				n, hl = int(binary.BigEndian.Uint16(b[2:])), 4
			}
			if n != 126 && len(b) >= hl+n {
				op, payload = b[0]&0x0f, bytes.Clone(b[hl:hl+n])
				*pending = b[hl+n:]
				return op, payload
			}
		}
		f := c.next(t, id)
		if !f.data {
			t.Fatalf("stream %d: %+v while reading WebSocket frames", id, f)
		}
		*pending = append(*pending, f.b...)
		if f.end && len(*pending) == 0 {
			t.Fatal("END_STREAM before a WebSocket frame")
		}
	}
}

// wsEcho is a real WebSocket server (x/net/websocket) echoing every
// message; it records the subprotocols it was offered.
func wsEcho(t *testing.T) (string, chan string) {
	offered := make(chan string, 16)
	srv := websocket.Server{
		Handshake: func(cfg *websocket.Config, r *http.Request) error {
			offered <- strings.Join(cfg.Protocol, ",") + "|" + r.URL.Path
			return nil
		},
		Handler: func(ws *websocket.Conn) {
			defer ws.Close() // the server's close frame
			for {
				var b []byte
				if websocket.Message.Receive(ws, &b) != nil || websocket.Message.Send(ws, b) != nil {
					return
				}
			}
		},
	}
	addr, _ := startHTTP(t, srv, false)
	return addr, offered
}

func wsConfig(addr string) string {
	return fmt.Sprintf(`
[frontend.web]
mode = "http"
bind = ["{{FRONT}}"]
h2c = true
default_backend = "app"
[backend.app]
[[backend.app.server]]
name = "a"
address = %q
`, addr)
}

func extConnect(path string, extra ...string) []string {
	return append([]string{":method", "CONNECT", ":protocol", "websocket", ":scheme", "http", ":path", path, ":authority", "x"}, extra...)
}

// RFC 8441: a WebSocket opened with extended CONNECT over HTTP/2 reaches an
// HTTP/1.1 WebSocket server, and messages go both ways, more than a
// stream window's worth, until the close handshake ends the stream.
func TestH2WebSocketTunnel(t *testing.T) {
	addr, offered := wsEcho(t)
	eng, front := testutil.Start(t, wsConfig(addr))
	p := eng.Front.Frontends[0].HTTP()
	c := dialH2WS(t, front, true)
	if v, ok := c.settings[http2.SettingEnableConnectProtocol]; !ok || v != 1 {
		t.Fatalf("SETTINGS_ENABLE_CONNECT_PROTOCOL = %d (%v), want 1", v, ok)
	}
	c.headers(t, 1, false, extConnect("/chat", "sec-websocket-protocol", "chat", "sec-websocket-version", "13")...)
	f := c.next(t, 1)
	if !f.head || f.status != "200" || f.end {
		t.Fatalf("answer %+v, want :status 200", f)
	}
	if v := f.fields; !hasField(v, "sec-websocket-protocol", "chat") || hasField(v, "sec-websocket-accept", "") || hasField(v, "upgrade", "") {
		t.Fatalf("answer fields %v", v)
	}
	if got := <-offered; got != "chat|/chat" {
		t.Fatalf("server saw %q", got)
	}
	var pending []byte
	msg := bytes.Repeat([]byte("0123456789abcdef"), 500) // 8000 bytes
	for i := range 40 {                                  // 320 kB: several stream windows each way
		msg[0] = byte('A' + i%26)
		c.data(t, 1, wsFrame(0x2, msg), false)
		op, got := c.wsRead(t, 1, &pending)
		if op != 0x2 || !bytes.Equal(got, msg) {
			t.Fatalf("message %d: op %x, %d bytes back", i, op, len(got))
		}
	}
	c.data(t, 1, wsFrame(0x8, []byte{0x03, 0xe8}), false)
	if op, _ := c.wsRead(t, 1, &pending); op != 0x8 {
		t.Fatalf("op %x, want the server's close", op)
	}
	// The server closes its connection: END_STREAM.
	for {
		fr := c.next(t, 1)
		if !fr.data {
			t.Fatalf("%+v, want END_STREAM", fr)
		}
		if fr.end {
			break
		}
	}
	c.data(t, 1, nil, true)
	testutil.WaitFor(t, "bytes counted", 5*time.Second, func() bool {
		return p.Counters.BytesIn.Load() >= 40*8000 && p.Counters.BytesOut.Load() >= 40*8000
	})
	// The connection serves on.
	c.headers(t, 3, true, ":method", "GET", ":scheme", "http", ":path", "/", ":authority", "x")
	if st, _, _ := c.answer(t, 3); st != "400" && st != "200" && st != "426" {
		t.Fatalf("next request: %q", st)
	}
}

func hasField(fs []hpack.HeaderField, name, value string) bool {
	for _, f := range fs {
		if f.Name == name && (value == "" || f.Value == value) {
			return true
		}
	}
	return false
}

// What is not a WebSocket over HTTP/2 is refused, each in its own way.
func TestH2WebSocketRefusals(t *testing.T) {
	addr, _ := wsEcho(t)
	_, front := testutil.Start(t, wsConfig(addr))
	c := dialH2WS(t, front, true)

	// Plain CONNECT (no :protocol) is not proxied: 400, as before.
	c.headers(t, 1, false, ":method", "CONNECT", ":authority", "x:443")
	if st, _, _ := c.answer(t, 1); st != "400" {
		t.Fatalf("plain CONNECT: %q, want 400", st)
	}
	// A protocol sluice cannot carry: 400.
	c.headers(t, 3, false, ":method", "CONNECT", ":protocol", "foo", ":scheme", "http", ":path", "/", ":authority", "x")
	if st, _, _ := c.answer(t, 3); st != "400" {
		t.Fatalf(":protocol foo: %q, want 400", st)
	}
	// :protocol on anything but CONNECT, or without :path: malformed.
	c.headers(t, 5, true, ":method", "GET", ":protocol", "websocket", ":scheme", "http", ":path", "/", ":authority", "x")
	if _, _, code := c.answer(t, 5); code != http2.ErrCodeProtocol {
		t.Fatalf(":protocol on GET: %v, want PROTOCOL_ERROR", code)
	}
	c.headers(t, 7, false, ":method", "CONNECT", ":protocol", "websocket", ":scheme", "http", ":authority", "x")
	if _, _, code := c.answer(t, 7); code != http2.ErrCodeProtocol {
		t.Fatalf("extended CONNECT without :path: %v, want PROTOCOL_ERROR", code)
	}

	// Before the client acknowledged our SETTINGS it cannot know extended
	// CONNECT is allowed (RFC 8441 §3): malformed.
	early := dialH2WS(t, front, false)
	early.headers(t, 1, false, extConnect("/chat")...)
	if _, _, code := early.answer(t, 1); code != http2.ErrCodeProtocol {
		t.Fatalf("before the SETTINGS ACK: %v, want PROTOCOL_ERROR", code)
	}
}

// A server that does not switch protocols has its answer relayed as the
// response; one that switches without proving it read the key is a 502.
func TestH2WebSocketServerRefuses(t *testing.T) {
	no, _ := startHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "websocket" || r.Header.Get("Sec-WebSocket-Key") == "" || r.Method != "GET" {
			w.WriteHeader(400)
			return
		}
		w.WriteHeader(403)
		io.WriteString(w, "no websocket here")
	}), false)
	_, front := testutil.Start(t, wsConfig(no))
	c := dialH2WS(t, front, true)
	c.headers(t, 1, false, extConnect("/chat")...)
	if st, body, _ := c.answer(t, 1); st != "403" || body != "no websocket here" {
		t.Fatalf("got %q %q, want the server's 403", st, body)
	}

	liar := rawServer(t, func(conn net.Conn) {
		// rawServer has read the request head.
		io.WriteString(conn, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: bm90IHRoZSBhY2NlcHQ=\r\n\r\n")
		io.Copy(io.Discard, conn)
	})
	_, front2 := testutil.Start(t, wsConfig(liar))
	c2 := dialH2WS(t, front2, true)
	c2.headers(t, 1, false, extConnect("/chat")...)
	if st, _, _ := c2.answer(t, 1); st != "502" {
		t.Fatalf("wrong Sec-WebSocket-Accept: %q, want 502", st)
	}
}

// wsRawServer accepts WebSocket handshakes by hand (RFC 6455 §4.2.2) and
// then hands each connection, its head read, to fn.
func wsRawServer(t *testing.T, fn func(c net.Conn, r *bufio.Reader)) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	// The accept loop counts in wg too, so that no Add races the Wait.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(30 * time.Second))
				r := bufio.NewReader(c)
				req, err := http.ReadRequest(r)
				if err != nil {
					return
				}
				h := sha1.Sum([]byte(req.Header.Get("Sec-WebSocket-Key") + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
				fmt.Fprintf(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
					base64.StdEncoding.EncodeToString(h[:]))
				fn(c, r)
			}()
		}
	}()
	return ln.Addr().String()
}

// The client's END_STREAM half-closes the server connection, whose answer
// still reaches the client before the server's close ends the stream.
func TestH2WebSocketHalfClose(t *testing.T) {
	got := make(chan string, 1)
	addr := wsRawServer(t, func(c net.Conn, r *bufio.Reader) {
		b, _ := io.ReadAll(r) // to the half-close
		got <- string(b)
		io.WriteString(c, "bye")
	})
	_, front := testutil.Start(t, wsConfig(addr))
	c := dialH2WS(t, front, true)
	c.headers(t, 1, false, extConnect("/")...)
	if f := c.next(t, 1); f.status != "200" {
		t.Fatalf("%+v, want 200", f)
	}
	c.data(t, 1, []byte("ping"), true)
	if st, body, code := c.answer(t, 1); st != "" || body != "bye" || code != 0 {
		t.Fatalf("got %q %q %v, want bye and END_STREAM", st, body, code)
	}
	if s := <-got; s != "ping" {
		t.Fatalf("server read %q", s)
	}
}

// RST_STREAM from the client closes the server connection; a tunnel
// where nothing moves for timeout_tunnel is reset and closed too.
func TestH2WebSocketResetAndIdle(t *testing.T) {
	closed := make(chan struct{}, 4)
	addr := wsRawServer(t, func(c net.Conn, r *bufio.Reader) {
		io.Copy(io.Discard, r)
		closed <- struct{}{}
	})
	_, front := testutil.Start(t, wsConfig(addr)+"\n[defaults]\ntimeout_tunnel = \"300ms\"\n")
	c := dialH2WS(t, front, true)
	c.headers(t, 1, false, extConnect("/")...)
	if f := c.next(t, 1); f.status != "200" {
		t.Fatalf("%+v, want 200", f)
	}
	c.wmu.Lock()
	c.fr.WriteRSTStream(1, http2.ErrCodeCancel)
	c.wmu.Unlock()
	<-closed

	c.headers(t, 3, false, extConnect("/")...)
	if f := c.next(t, 3); f.status != "200" {
		t.Fatalf("%+v, want 200", f)
	}
	if _, _, code := c.answer(t, 3); code != http2.ErrCodeCancel {
		t.Fatalf("idle tunnel: %v, want RST_STREAM CANCEL", code)
	}
	<-closed
}
