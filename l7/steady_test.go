package l7_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"sluice/internal/testutil"
)

// A transfer that takes 2.5 s and moves bytes all along, with timeouts of
// 2 s: the timeouts are about inactivity, so it must arrive whole. Not
// shorter: a writer blocked on a full socket is woken only once half of
// its send buffer (up to 4 MiB on loopback) has drained, a quarter of the
// transfer at this pace, and a -race run on a busy 2-core CI machine has
// stalled a transfer's goroutines for over 600 ms (with 1 s, a run of three
// packages at once once cut a download at 7.6 of its 8 MiB).
const (
	steadySize  = 8 << 20
	steadyChunk = 32 << 10
	steadyPace  = 10 * time.Millisecond // 32 KiB per 10 ms: about 2.5 s for 8 MiB
)

func steadyConfig(addr string) string {
	return fmt.Sprintf(`
[defaults]
timeout_client = "2s"
timeout_server = "2s"
[frontend.web]
mode = "http"
bind = ["{{FRONT}}"]
default_backend = "app"
[backend.app]
[[backend.app.server]]
name = "a"
address = %q
`, addr)
}

// smallRcvBuf makes the kernel hold little for a slow reader, so that the
// writer on the other side waits for it (loopback buffers grow to MiBs).
type smallRcvBuf struct{ net.Listener }

func (l smallRcvBuf) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetReadBuffer(steadyChunk)
	}
	return c, err
}

// pacedRead reads r in chunks, one per pace, until EOF or an error.
func pacedRead(r io.Reader) (int64, error) {
	buf := make([]byte, steadyChunk)
	var n int64
	for {
		k, err := r.Read(buf)
		n += int64(k)
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		time.Sleep(steadyPace) // the slow reader under test, not synchronization
	}
}

// pacedBody yields steadySize bytes, one chunk per pace, however small
// the reads (an HTTP/2 transport reads a frame's worth, 16 KiB, at a time).
type pacedBody struct{ left, inChunk int }

func (b *pacedBody) Read(p []byte) (int, error) {
	if b.left == 0 {
		return 0, io.EOF
	}
	if b.inChunk == 0 {
		time.Sleep(steadyPace) // the slow writer under test
		b.inChunk = steadyChunk
	}
	n := min(len(p), b.inChunk, b.left)
	for i := range p[:n] {
		p[i] = 'u'
	}
	b.inChunk -= n
	b.left -= n
	return n, nil
}

// readHead reads a response head and returns its status line and
// Content-Length (-1 when absent).
func readHead(t *testing.T, br *bufio.Reader) (string, int) {
	t.Helper()
	status := testutil.ReadLine(t, br)
	cl := -1
	for {
		line := testutil.ReadLine(t, br)
		if line == "" {
			return status, cl
		}
		if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(k, "content-length") {
			fmt.Sscan(strings.TrimSpace(v), &cl)
		}
	}
}

// Issue 15: timeout_client and timeout_server were set once before the body
// and never moved, so a slow but steady transfer was cut.
func TestSteadyTransfersOutliveTimeouts(t *testing.T) {
	t.Run("download to a slow reader", func(t *testing.T) {
		be := serveLarge(t, steadySize)
		_, front := testutil.Start(t, steadyConfig(be.addr))
		c := testutil.Dial(t, front)
		c.SetReadBuffer(steadyChunk)
		c.SetDeadline(time.Now().Add(20 * time.Second))
		fmt.Fprintf(c, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
		br := bufio.NewReaderSize(c, steadyChunk)
		status, cl := readHead(t, br)
		if !strings.HasPrefix(status, "HTTP/1.1 200") || cl != steadySize {
			t.Fatalf("%s, Content-Length %d", status, cl)
		}
		n, err := pacedRead(io.LimitReader(br, int64(cl)))
		if err != nil || n != steadySize {
			t.Fatalf("got %d of %d bytes: %v", n, steadySize, err)
		}
	})

	// The upload cases: the server answers with the byte count it read.
	upload := func(t *testing.T, slowServer bool) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !slowServer {
				n, err := io.Copy(io.Discard, r.Body)
				if err != nil {
					http.Error(w, err.Error(), 500)
					return
				}
				fmt.Fprint(w, n)
				return
			}
			// A slow reader that shows it is alive: a byte of response per
			// chunk read, then the count. (Kernel buffers would otherwise
			// hold seconds of body after the proxy sent its last byte.)
			rc := http.NewResponseController(w)
			rc.EnableFullDuplex()
			w.WriteHeader(200)
			buf := make([]byte, steadyChunk)
			var n int64
			for {
				k, err := r.Body.Read(buf)
				n += int64(k)
				if err != nil {
					break
				}
				w.Write([]byte("."))
				rc.Flush()
				time.Sleep(steadyPace) // the slow reader under test
			}
			fmt.Fprint(w, n)
		})}
		go srv.Serve(smallRcvBuf{ln})
		t.Cleanup(func() { srv.Close() })
		_, front := testutil.Start(t, steadyConfig(ln.Addr().String()))

		var body io.Reader = &pacedBody{left: steadySize}
		if slowServer {
			body = bytes.NewReader(bytes.Repeat([]byte("u"), steadySize))
		}
		req, _ := http.NewRequest("POST", "http://"+front+"/up", body)
		req.ContentLength = steadySize
		resp, err := (&http.Client{Timeout: 20 * time.Second}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		got, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || string(bytes.TrimLeft(got, ".")) != fmt.Sprint(steadySize) {
			t.Fatalf("%s: %q", resp.Status, got)
		}
	}
	t.Run("upload from a slow writer", func(t *testing.T) { upload(t, false) })
	t.Run("upload to a slow server", func(t *testing.T) { upload(t, true) })

	// A reader that stops is still cut, and its server connection freed.
	t.Run("stalled reader is cut", func(t *testing.T) {
		be := serveLarge(t, steadySize)
		_, front := testutil.Start(t, steadyConfig(be.addr))
		c := testutil.Dial(t, front)
		c.SetReadBuffer(steadyChunk)
		c.SetDeadline(time.Now().Add(20 * time.Second))
		fmt.Fprintf(c, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
		testutil.WaitFor(t, "the request at the server", 5*time.Second, func() bool { return be.peak.Load() == 1 })
		testutil.WaitFor(t, "the server connection of the stalled reader closed", 10*time.Second, func() bool {
			return be.open.Load() == 0
		})
		got, _ := io.ReadAll(c)
		if len(got) >= steadySize {
			t.Fatalf("a stalled reader got the whole body (%d bytes)", len(got))
		}
	})
}

// The same on the net/http side: an HTTP/2 client reading slowly (its
// window opens as it reads) and one sending its body slowly to an h2c
// server, with timeouts far shorter than the transfers.
func TestSteadyHTTP2TransfersOutliveTimeouts(t *testing.T) {
	// The client's own limit only ends a hung test: a transfer paced to
	// 2.5 s can take three times that under -race on a loaded machine.
	client := h2cClient()
	client.Timeout = 2 * time.Minute
	t.Run("download to a slow reader", func(t *testing.T) {
		be := serveLarge(t, steadySize)
		_, front := testutil.Start(t, strings.Replace(steadyConfig(be.addr), "mode = \"http\"", "mode = \"http\"\nh2c = true", 1))
		resp, err := client.Get("http://" + front + "/big")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		n, err := pacedRead(resp.Body)
		if err != nil || n != steadySize {
			t.Fatalf("got %d of %d bytes: %v", n, steadySize, err)
		}
	})
	t.Run("upload from a slow writer to an h2c server", func(t *testing.T) {
		addr, _ := startHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n, err := io.Copy(io.Discard, r.Body)
			if err != nil {
				http.Error(w, err.Error(), 500)
				return
			}
			fmt.Fprint(w, n)
		}), true)
		cfg := strings.Replace(steadyConfig(addr), "mode = \"http\"", "mode = \"http\"\nh2c = true", 1)
		_, front := testutil.Start(t, strings.Replace(cfg, "[backend.app]", "[backend.app]\nproto = \"h2c\"", 1))
		req, _ := http.NewRequest("POST", "http://"+front+"/up", &pacedBody{left: steadySize})
		req.ContentLength = steadySize
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		got, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || string(got) != fmt.Sprint(steadySize) {
			t.Fatalf("%s: %q", resp.Status, got)
		}
	})
}
