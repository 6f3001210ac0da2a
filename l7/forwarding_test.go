package l7

import (
	"strings"
	"testing"
)

// The HTTP/1 path writes the forwarding headers into its head buffer:
// once the buffer has grown, a request costs no allocation.
func TestBuildRequestHeadAllocatesNothing(t *testing.T) {
	c := fuzzConn()
	head := "GET /a?b HTTP/1.1\r\nHost: example.com\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-For: 10.0.0.2\r\n" +
		"Forwarded: for=10.0.0.1\r\nX-Forwarded-Proto: gopher\r\nCookie: a=b\r\n\r\n"
	if err := c.req.parseRequest([]byte(head)); err != nil {
		t.Fatal(err)
	}
	buf := c.buildRequestHead(nil)
	want := "X-Forwarded-For: 10.0.0.1, 10.0.0.2, 192.0.2.1\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Port: 80\r\n" +
		"Forwarded: for=10.0.0.1, for=192.0.2.1;proto=http;host=\"example.com\"\r\n\r\n"
	if !strings.HasSuffix(string(buf), want) || strings.Contains(string(buf), "gopher") {
		t.Fatalf("head:\n%s", buf)
	}
	if n := testing.AllocsPerRun(100, func() { buf = c.buildRequestHead(buf[:0]) }); n != 0 {
		t.Fatalf("%v allocations per request head", n)
	}
}

// Every failure has an answer in the one table, and the HTTP/1 answer is
// built into the head buffer without allocation, as both paths' page.
func TestFailureTableAndErrorResponse(t *testing.T) {
	p := &Proxy{ErrorPages: map[int][]byte{503: []byte("busy\n")}}
	for f := failNoRoute; int(f) < len(failures); f++ {
		if a := failures[f]; a.status == 0 || a.term == "" {
			t.Errorf("failure %d has no answer in the table", f)
		}
	}
	buf := p.errorResponse(nil, 503, true)
	want := "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/html\r\nCache-Control: no-cache\r\nContent-Length: 5\r\nConnection: close\r\n\r\nbusy\n"
	if string(buf) != want {
		t.Fatalf("answer:\n%q\nwant\n%q", buf, want)
	}
	if n := testing.AllocsPerRun(100, func() { buf = p.errorResponse(buf[:0], 502, false) }); n != 0 {
		t.Fatalf("%v allocations per error answer", n)
	}
}
