package l7_test

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
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
	for _, tc := range []struct {
		desc   string
		server func(c net.Conn) // nil: nothing listens
		req    string
		status int
		closes bool
	}{
		{"server closes without answering", func(c net.Conn) { readHead(c) }, get, 502, true},
		{"malformed response head", func(c net.Conn) { readHead(c); io.WriteString(c, "HTTP/1.1 abc\r\n\r\n") }, get, 502, true},
		{"unrequested 101", func(c net.Conn) {
			readHead(c)
			io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n")
		}, get, 502, true},
		{"server timeout", func(c net.Conn) { readHead(c); io.Copy(io.Discard, c) }, get, 504, true},
		{"connect refused, body too large to drain", nil,
			"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2000000\r\n\r\n", 502, true},
		{"connect refused, no body: the connection goes on", nil, get, 502, false},
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
