package l7_test

import (
	"bytes"
	"net"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"sluice/internal/testutil"
)

// startTinyHTTP1 runs an HTTP/1.1 server on loopback that answers every
// bodiless request with a fixed small response and allocates nothing per
// request, so a benchmark's allocations are sluice's own.
func startTinyHTTP1(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	const resp = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello"
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 16<<10)
				out := make([]byte, 0, 16<<10)
				have := 0
				for {
					n, err := c.Read(buf[have:])
					if err != nil {
						return
					}
					have += n
					out = out[:0]
					for {
						i := bytes.Index(buf[:have], []byte("\r\n\r\n"))
						if i < 0 {
							break
						}
						have = copy(buf, buf[i+4:have])
						out = append(out, resp...)
					}
					if len(out) > 0 {
						if _, err := c.Write(out); err != nil {
							return
						}
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// BenchmarkH2GetToHTTP1 drives GETs over one h2c connection, ten streams
// in flight as h2load -m10 does, through sluice's HTTP/2 path to an
// HTTP/1.1 server: one op is one request (-benchmem: allocations per
// request of the whole process, the client's few included).
func BenchmarkH2GetToHTTP1(b *testing.B) {
	addr := startTinyHTTP1(b)
	_, front := testutil.Start(b, h2Config("default_backend = \"app\"\nh2c = true", "",
		map[string]h2Backend{"app": {extra: "[backend.app.health]\ncheck = \"none\"\n", addrs: []string{addr}}}))
	conn, err := net.Dial("tcp", front)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Minute))
	conn.Write([]byte(http2.ClientPreface))
	fr := http2.NewFramer(conn, conn)
	fr.SetReuseFrames()
	fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 30})
	fr.WriteWindowUpdate(0, 1<<30)
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":path", "/bench"},
		{":authority", "bench.example"}, {"user-agent", "h2bench"}, {"accept", "*/*"}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	block := hb.Bytes()
	id := uint32(1)
	round := func(n int) {
		for range n {
			if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block,
				EndStream: true, EndHeaders: true}); err != nil {
				b.Fatal(err)
			}
			id += 2
		}
		for done := 0; done < n; {
			f, err := fr.ReadFrame()
			if err != nil {
				b.Fatal(err)
			}
			switch f := f.(type) {
			case *http2.DataFrame:
				if f.StreamEnded() {
					done++
				}
			case *http2.HeadersFrame:
				if f.StreamEnded() {
					done++
				}
			case *http2.RSTStreamFrame, *http2.GoAwayFrame:
				b.Fatalf("got %v", f)
			}
		}
	}
	round(10) // warm: the server connections and the settings exchange
	b.ReportAllocs()
	b.ResetTimer()
	for left := b.N; left > 0; left -= 10 {
		round(min(left, 10))
	}
}
