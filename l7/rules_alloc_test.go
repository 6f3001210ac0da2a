package l7

import (
	"strings"
	"testing"
	"time"

	"sluice/conf"
	"sluice/policy"
)

// With a policy, a request costs no allocation either: the decision, the
// edited request head and the edited response head are written into the
// reused buffers.
func TestPolicyAllocatesNothing(t *testing.T) {
	c := fuzzConn()
	c.info.ConnID = "c9"
	c.p.Frontend = "web"
	c.p.Policy = policy.New(&conf.Frontend{Name: "web", Mode: conf.ModeHTTP, Rules: []conf.Rule{
		{Host: "*.example.com", Action: conf.ActionSetHeader, Name: "X-Env", Value: "prod"},
		{Action: conf.ActionAddHeader, Name: "X-Request-Id", Value: "{request_id} {client_ip}"},
		{Action: conf.ActionDelHeader, Name: "Cookie"},
		{Action: conf.ActionSetHeader, Name: "X-Frame-Options", Value: "DENY", Response: true},
		{Header: "X-Debug", Action: conf.ActionDeny, Status: 403},
	}, RateLimit: &conf.RateLimit{Requests: 1 << 30, Period: time.Hour, Action: conf.LimitDeny, TableSize: 10}})
	head := "GET /a?b HTTP/1.1\r\nHost: www.example.com\r\nX-Env: client\r\nCookie: a=b\r\n\r\n"
	if err := c.req.parseRequest([]byte(head)); err != nil {
		t.Fatal(err)
	}
	if err := c.resp.parseResponse([]byte("HTTP/1.1 200 OK\r\nX-Frame-Options: SAMEORIGIN\r\nContent-Length: 0\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	var buf []byte
	one := func() {
		v := h1View(c.req)
		vd := c.p.decide(&v, &c.info)
		c.seq, c.edits = 7, vd.Edits
		buf = c.buildRequestHead(buf[:0])
		buf = c.buildResponseHead(buf, false)
	}
	one()
	got := string(buf)
	for _, want := range []string{"X-Env: prod\r\n", "X-Request-Id: c9-7 192.0.2.1\r\n", "X-Frame-Options: DENY\r\n"} {
		if !strings.Contains(got, want) {
			t.Fatalf("no %q in\n%s", want, got)
		}
	}
	for _, not := range []string{"client", "Cookie", "SAMEORIGIN"} {
		if strings.Contains(got, not) {
			t.Fatalf("%q left in\n%s", not, got)
		}
	}
	if n := testing.AllocsPerRun(100, one); n != 0 {
		t.Fatalf("%v allocations per request with a policy", n)
	}
}
