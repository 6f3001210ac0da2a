package l7_test

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"sluice/internal/testutil"
)

// TestErrorBeforeCloseSaysSo: whenever sluice answers with an error and
// then closes the client connection, the answer says "Connection: close",
// so a keep-alive client does not send its next request into a closing
// socket. An error after which the connection goes on does not say it.
func TestErrorBeforeCloseSaysSo(t *testing.T) {
	readHead := func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			l, err := br.ReadString('\n')
			if err != nil || l == "\r\n" {
				return
			}
		}
	}
	get := "GET / HTTP/1.1\r\nHost: h\r\n\r\n"
	post := "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"
	for _, tc := range []struct {
		desc   string
		server func(c net.Conn) // nil: nothing listens
		req    string
		status int
		closes bool
	}{
		// A request without a body leaves nothing behind its failed
		// exchange: the connection goes on, as HAProxy keeps it.
		{"server closes without answering", func(c net.Conn) { readHead(c) }, get, 502, false},
		{"malformed response head", func(c net.Conn) { readHead(c); io.WriteString(c, "HTTP/1.1 abc\r\n\r\n") }, get, 502, false},
		{"unrequested 101", func(c net.Conn) {
			readHead(c)
			io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n")
		}, get, 502, false},
		{"server timeout", func(c net.Conn) { readHead(c); io.Copy(io.Discard, c) }, get, 504, false},
		// One with a body: where the body stands is not known, it closes.
		{"server closes without answering a POST", func(c net.Conn) { readHead(c) }, post, 502, true},
		{"server timeout on a POST", func(c net.Conn) { readHead(c); io.Copy(io.Discard, c) }, post, 504, true},
		{"connect refused, body too large to drain", nil,
			"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2000000\r\n\r\n", 503, true},
		{"connect refused, no body: the connection goes on", nil, get, 503, false},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			addr := testutil.ClosedAddr(t)
			if tc.server != nil {
				addr = testutil.Serve(t, "s", tc.server).Addr
			}
			_, front := testutil.Start(t, httpConfig(`default_backend = "app"`, "timeout_server = \"300ms\"\nretries = 0",
				map[string][]string{"app": {addr}}))
			c := testutil.Dial(t, front)
			c.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.WriteString(c, tc.req); err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			said := resp.Close // net/http takes "Connection: close" out of the header into Close
			// Does sluice close? A second request on the same connection
			// is answered only when it does not.
			io.WriteString(c, get)
			_, err = br.Peek(1)
			closed := err == io.EOF || errors.Is(err, syscall.ECONNRESET)
			if err != nil && !closed {
				t.Fatalf("after the answer: %v (want an answer or the close)", err)
			}
			if closed != tc.closes {
				t.Fatalf("connection closed = %v, want %v", closed, tc.closes)
			}
			if said != closed {
				t.Errorf("Connection: close said = %v, but the connection closed = %v", said, closed)
			}
		})
	}
}

// TestKeepAliveEmptyLinesTimeOutSilently: between keep-alive requests a
// client that sends only empty lines (which RFC 9112 §2.2 says to skip)
// and then nothing has started no request: when timeout_http_request ends
// the wait, the connection closes without a 408 (and without counting
// one). A request head left half-sent still gets its 408.
func TestKeepAliveEmptyLinesTimeOutSilently(t *testing.T) {
	be := serveHTTP(t, named("a"))
	front := "default_backend = \"app\"\ntimeout_http_request = \"300ms\"\ntimeout_client = \"10s\""
	eng, addr := testutil.Start(t, httpConfig(front, "", map[string][]string{"app": {be.Addr}}))
	counters := &eng.Front.Frontends[0].HTTP().Counters
	for _, tc := range []struct {
		desc, then string
		want408    bool
	}{
		{"empty lines only", "\r\n\r\n", false},
		{"half a head", "GET /b HTTP/1.1\r\nHost: h\r\n", true},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			before := counters.Timeout408.Load()
			c := testutil.Dial(t, addr)
			c.SetDeadline(time.Now().Add(5 * time.Second))
			io.WriteString(c, "GET /a HTTP/1.1\r\nHost: h\r\n\r\n")
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			io.WriteString(c, tc.then)
			rest, err := io.ReadAll(br)
			if err != nil {
				t.Fatalf("after %q: %v (want the close)", tc.then, err)
			}
			got408 := strings.HasPrefix(string(rest), "HTTP/1.1 408 ")
			if got408 != tc.want408 || !got408 && len(rest) > 0 {
				t.Errorf("after %q sluice sent %q, want a 408: %v", tc.then, rest, tc.want408)
			}
			if n := counters.Timeout408.Load() - before; (n == 1) != tc.want408 {
				t.Errorf("408 counter moved by %d", n)
			}
		})
	}
}
