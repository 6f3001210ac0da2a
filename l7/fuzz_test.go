package l7

import (
	"bytes"
	"net/netip"
	"testing"
)

var requestSeeds = []string{
	"GET / HTTP/1.1\r\nHost: h\r\n\r\n",
	"GET /a?b=c HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
	"POST /innocent HTTP/1.1\r\nHost: h\r\nConnection: Content-Length\r\nContent-Length: 5\r\n\r\nhello",
	"POST /c HTTP/1.1\r\nHost: h\r\nConnection: Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n5;e=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
	"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding : chunked\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
	"GET http://internal.example/x?y HTTP/1.1\r\nHost: internal.example\r\n\r\n",
	"GET http://h HTTP/1.0\r\n\r\n",
	"GET https://h:443?q HTTP/1.1\r\nHost: h\r\n\r\n",
	"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
	"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n",
	"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
	"GET / HTTP/1.1\nHost: h\nX-A: a\tb\n\n",
	"GET / HTTP/1.1\r\nHost: h\r\nX-A: a\vb\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: h\r\nX-A: a\r\n b\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n",
}

var responseSeeds = []string{
	"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
	"HTTP/1.1 200 OK\r\nConnection: Content-Length\r\nContent-Length: 5\r\n\r\nhello",
	"HTTP/1.1 200 OK\r\nConnection: Transfer-Encoding, X-A\r\nX-A: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
	"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
	"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
	"HTTP/1.1 100 Continue\r\n\r\n",
	"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
	"HTTP/1.1 200\r\nContent-Length: 5, 5\r\n\r\n",
	"HTTP/1.1 200 OK\nContent-Length: 5\n\nhello",
}

// headOf returns what readHead would return for data: up to the empty line
// that ends the head, or all of it.
func headOf(data []byte) []byte {
	if i, _ := headEnd(data, 0); i >= 0 {
		return data[:i+1]
	}
	return data
}

func fuzzConn() *clientConn {
	m := new(msgPair)
	return &clientConn{
		p:    &Proxy{Port: "80"},
		info: ConnInfo{Client: netip.MustParseAddrPort("192.0.2.1:1234")},
		addr: "192.0.2.1",
		msgs: m,
		req:  &m.req,
		resp: &m.resp,
	}
}

// framingFields counts the Content-Length and Transfer-Encoding lines.
func framingFields(m *message) (cl, te int) {
	for _, f := range m.fields {
		switch {
		case equalFold(f.name, "content-length"):
			cl++
		case equalFold(f.name, "transfer-encoding"):
			te++
		}
	}
	return cl, te
}

// FuzzParseRequest: the request parser never panics, and a request it
// accepts, written for the server by buildRequestHead, parses again to the
// same method, target, Host and framing, with one framing header at most.
func FuzzParseRequest(f *testing.F) {
	for _, s := range requestSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c := fuzzConn()
		c.req.maxFields = 100
		if err := c.req.parseRequest(headOf(data)); err != nil {
			return
		}
		// Chunk lines of whatever follows: no panic, whatever they are.
		for rest := data; len(rest) > 0; {
			var line []byte
			line, rest = cutLine(rest)
			parseChunkSize(line)
			validTrailer(line)
		}
		out := c.buildRequestHead(nil)
		head := headOf(out)
		if !bytes.HasSuffix(out, []byte("\r\n\r\n")) || len(head) != len(out)-2 {
			t.Fatalf("head written for the server does not end where expected:\n%q", out)
		}
		var again message
		if err := again.parseRequest(head); err != nil {
			t.Fatalf("request written for the server does not parse (%v):\n%q\nfrom\n%q", err, out, data)
		}
		req := c.req
		switch {
		case !bytes.Equal(again.method, req.method), !bytes.Equal(again.target, req.target):
			t.Fatalf("request line changed: %q %q -> %q %q", req.method, req.target, again.method, again.target)
		case !bytes.Equal(again.host, req.host):
			t.Fatalf("Host changed: %q -> %q", req.host, again.host)
		case again.chunked != req.chunked, again.contentLength != req.contentLength:
			t.Fatalf("framing changed: chunked %v, length %d -> chunked %v, length %d\n%q",
				req.chunked, req.contentLength, again.chunked, again.contentLength, out)
		case again.http10 != req.http10, again.upgrade != req.upgrade:
			t.Fatalf("version or upgrade changed:\n%q\n%q", data, out)
		}
		if again.target[0] != '/' && !(len(again.target) == 1 && again.target[0] == '*') && !equalFold(again.method, "CONNECT") {
			t.Fatalf("target sent to the server is not origin-form: %q", again.target)
		}
		if cl, te := framingFields(&again); cl+te > 1 {
			t.Fatalf("%d Content-Length and %d Transfer-Encoding lines sent:\n%q", cl, te, out)
		}
	})
}

// FuzzParseResponse: the response parser never panics, and a response it
// accepts, written for the client by buildResponseHead, parses again to
// the same status and framing, never with both framing headers.
func FuzzParseResponse(f *testing.F) {
	for _, s := range responseSeeds {
		f.Add([]byte(s), false)
	}
	f.Fuzz(func(t *testing.T, data []byte, close bool) {
		c := fuzzConn()
		c.resp.maxFields = 100
		if err := c.resp.parseResponse(headOf(data)); err != nil {
			return
		}
		out := c.buildResponseHead(nil, close)
		head := headOf(out)
		var again message
		if err := again.parseResponse(head); err != nil {
			t.Fatalf("response written for the client does not parse (%v):\n%q\nfrom\n%q", err, out, data)
		}
		resp := c.resp
		if again.status != resp.status || again.chunked != resp.chunked || again.contentLength != resp.contentLength {
			t.Fatalf("status or framing changed: %d chunked %v length %d -> %d chunked %v length %d\n%q\nfrom\n%q",
				resp.status, resp.chunked, resp.contentLength, again.status, again.chunked, again.contentLength, out, data)
		}
		if cl, te := framingFields(&again); cl > 1 || cl > 0 && te > 0 {
			t.Fatalf("%d Content-Length and %d Transfer-Encoding lines sent:\n%q", cl, te, out)
		}
		if close && resp.status >= 200 && !again.connClose {
			t.Fatalf("closing response without Connection: close:\n%q", out)
		}
	})
}
