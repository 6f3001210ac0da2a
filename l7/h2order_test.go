package l7_test

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"sluice/internal/testutil"
)

// seqH2 is a raw HTTP/2 client that reads frames in order on the test's
// goroutine, for cases where the order of what sluice sends matters.
type seqH2 struct {
	t    *testing.T
	conn net.Conn
	fr   *http2.Framer
	enc  *hpack.Encoder
	hb   bytes.Buffer
}

func dialSeq(t *testing.T, front string, settings ...http2.Setting) *seqH2 {
	t.Helper()
	conn := testutil.Dial(t, front)
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	c := &seqH2{t: t, conn: conn, fr: http2.NewFramer(conn, conn)}
	c.enc = hpack.NewEncoder(&c.hb)
	conn.Write([]byte(http2.ClientPreface))
	c.fr.WriteSettings(settings...)
	// sluice's SETTINGS, then its ACK of ours.
	for acked := false; !acked; {
		switch f := c.next().(type) {
		case *http2.SettingsFrame:
			if f.IsAck() {
				acked = true
			} else {
				c.fr.WriteSettingsAck()
			}
		}
	}
	return c
}

func (c *seqH2) next() http2.Frame {
	c.t.Helper()
	f, err := c.fr.ReadFrame()
	if err != nil {
		c.t.Fatalf("read frame: %v", err)
	}
	return f
}

// until reads frames up to the first match.
func (c *seqH2) until(match func(http2.Frame) bool) http2.Frame {
	c.t.Helper()
	for {
		f := c.next()
		if match(f) {
			return f
		}
	}
}

func (c *seqH2) headers(id uint32, method, path string, end bool, extra ...string) {
	c.hb.Reset()
	for _, f := range [][2]string{{":method", method}, {":scheme", "http"}, {":authority", "x"}, {":path", path}} {
		c.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	for i := 0; i+1 < len(extra); i += 2 {
		c.enc.WriteField(hpack.HeaderField{Name: extra[i], Value: extra[i+1]})
	}
	if err := c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: c.hb.Bytes(), EndStream: end, EndHeaders: true}); err != nil {
		c.t.Fatal(err)
	}
}

// A SETTINGS_INITIAL_WINDOW_SIZE that opens the window of a stream
// waiting to send is acknowledged before the DATA it allows (h2spec
// 6.9.2/1 drops frames read while it waits for the ACK, and timed out).
func TestH2WindowOpenedBySettingsAfterAck(t *testing.T) {
	addr, _ := startHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(strings.Repeat("x", 1000)))
	}), false)
	_, front := testutil.Start(t, h2Config("default_backend = \"app\"\nh2c = true", "",
		map[string]h2Backend{"app": {addrs: []string{addr}}}))
	for i := range 20 {
		c := dialSeq(t, front, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
		c.headers(1, "GET", "/", true)
		// The response head comes; its body waits for a window.
		c.until(func(f http2.Frame) bool { _, ok := f.(*http2.HeadersFrame); return ok })
		c.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1})
		f := c.next()
		if sf, ok := f.(*http2.SettingsFrame); !ok || !sf.IsAck() {
			t.Fatalf("try %d: %v before the SETTINGS ACK", i, f.Header())
		}
		if d, ok := c.next().(*http2.DataFrame); !ok || len(d.Data()) != 1 {
			t.Fatalf("try %d: want a DATA frame of 1 byte, got %v", i, d)
		}
		c.conn.Close()
	}
}

// A request body still coming when the response has ended is read to
// the client's END_STREAM and checked against its content-length (the
// stream is half-closed, not closed): too much is PROTOCOL_ERROR, not
// STREAM_CLOSED (h2spec 8.1.2.6/1 raced on which came first); the right
// length closes the stream quietly. A body too large for the window left
// is stopped with RST_STREAM NO_ERROR (RFC 9113 §8.1).
func TestH2BodyCheckedAfterResponse(t *testing.T) {
	// The server answers as soon as it has the head, body or not, once
	// per connection.
	addr := rawServer(t, func(c net.Conn) {
		c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nearly"))
		io.Copy(io.Discard, c)
	})
	_, front := testutil.Start(t, h2Config("default_backend = \"app\"\nh2c = true", "",
		map[string]h2Backend{"app": {addrs: []string{addr}}}))
	for _, tc := range []struct {
		name   string
		length string
		body   string
		reset  bool
		want   http2.ErrCode
	}{
		{"too long", "1", "test", true, http2.ErrCodeProtocol},
		{"too short", "8", "test", true, http2.ErrCodeProtocol},
		{"exact", "4", "test", false, 0},
		{"beyond the window", "1000000", "", true, http2.ErrCodeNo},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialSeq(t, front)
			c.headers(1, "POST", "/", false, "content-length", tc.length)
			c.until(func(f http2.Frame) bool { return f.Header().Flags.Has(http2.FlagDataEndStream) })
			if tc.body != "" {
				c.fr.WriteData(1, true, []byte(tc.body))
				// Its answer comes before the PING's, both from the reader.
				c.fr.WritePing(false, [8]byte{1})
			}
			for {
				switch f := c.next().(type) {
				case *http2.RSTStreamFrame:
					if f.ErrCode != tc.want {
						t.Fatalf("RST_STREAM %v, want %v", f.ErrCode, tc.want)
					}
					return
				case *http2.GoAwayFrame:
					t.Fatalf("GOAWAY %v", f.ErrCode)
				case *http2.PingFrame:
					if tc.reset {
						t.Fatalf("no RST_STREAM %v before the PING ACK", tc.want)
					}
					return
				}
			}
		})
	}
}
