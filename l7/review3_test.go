package l7_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"sluice/internal/testutil"
)

// Review of issue 15 (third pass): a 2xx answering CONNECT turns the server
// connection into a tunnel to a host the client chose (RFC 9110 §9.3.6).
// With "Content-Length: 0" on that 2xx, sluice took it for an ordinary
// empty response and pooled the connection: every later client's request
// went through the attacker's tunnel and got the attacker's host's answer.
// HAProxy tunnels that one client and never reuses the connection.
func TestConnectTunnelIsNeverPooled(t *testing.T) {
	_, addr := testutil.Start(t, httpConfig(`default_backend = "app"`, "", map[string][]string{"app": {connectBackend(t)}}))
	a := testutil.Dial(t, addr)
	a.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(a, "CONNECT evil.example:80 HTTP/1.1\r\nHost: evil.example:80\r\n\r\n")
	if resp, err := http.ReadResponse(bufio.NewReader(a), nil); err == nil {
		resp.Body.Close()
	}
	a.Close()
	for i := range 3 {
		path := fmt.Sprintf("/victim%d", i)
		out := rawExchange(t, addr, "GET "+path+" HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
		if !strings.HasSuffix(out, "resp:"+path) {
			t.Fatalf("after a CONNECT, a new client asking %s got %q: its request went through another client's tunnel", path, out)
		}
	}
}

// connectBackend is a forward proxy behind sluice: it answers CONNECT with
// 2xx and "Content-Length: 0", after which the connection is a tunnel to
// the host the client named, simulated by answering "tunnel:HOST" to
// whatever comes next; other requests get "resp:PATH".
func connectBackend(t *testing.T) string {
	be := testutil.Serve(t, "fwdproxy", func(c net.Conn) {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(c)
		tunnel := ""
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			for {
				h, err := br.ReadString('\n')
				if err != nil {
					return
				}
				if h == "\r\n" {
					break
				}
			}
			f := strings.Fields(line)
			if len(f) < 2 {
				return
			}
			var body string
			switch {
			case tunnel != "":
				// What the client's chosen host answers through the tunnel.
				body = "tunnel:" + tunnel
			case f[0] == "CONNECT":
				tunnel = f[1]
				io.WriteString(c, "HTTP/1.1 200 Connection established\r\nContent-Length: 0\r\n\r\n")
				continue
			default:
				body = "resp:" + f[1]
			}
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		}
	})
	return be.Addr
}
