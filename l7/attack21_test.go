package l7_test

import (
	"bufio"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"sluice/conf"
)

// Attack review of the edge policy (issue 21): inputs a client chooses to
// slip past a rule, on HTTP/1.1 and h2c alike.

// rawStatus sends one raw HTTP/1.1 request to addr and returns the status
// line and the Location of the answer.
func rawStatus(t *testing.T, addr, req string) (string, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.Status, resp.Header.Get("Location")
}

// TestAttack21HeaderValueEveryLine: a "Name: value" condition holds when
// any field line of that name has the value, or any element of a comma
// list does (HAProxy's hdr() -m str): a client must not slip past a deny
// with a decoy line before the real one.
func TestAttack21HeaderValueEveryLine(t *testing.T) {
	var hits atomic.Int64
	srv, _ := startHTTP(t, headerServer(&hits), false)
	f := startRuleFront(t, conf.Frontend{Rules: []conf.Rule{
		{Header: "X-Debug", HeaderVal: "1", HasHeaderVal: true, Action: conf.ActionDeny, Status: 404},
	}}, srv, "")
	for _, pr := range protos {
		t.Run(pr.name, func(t *testing.T) {
			c := newClient(t, "127.0.0.2", pr.h2)
			for _, tc := range []struct {
				hdr    []string
				status int
			}{
				{[]string{"X-Debug", "1"}, 404},
				{[]string{"X-Debug", "0", "X-Debug", "1"}, 404},
				{[]string{"x-debug", "0", "X-DEBUG", "1"}, 404},
				{[]string{"X-Debug", "0, 1"}, 404},
				{[]string{"X-Debug", "0,1 "}, 404},
				{[]string{"X-Debug", "0"}, 200},
				{[]string{"X-Debug", "10, 01"}, 200},
			} {
				resp, _ := c.do(t, "GET", "http://"+f.addr+"/", "", "", tc.hdr...)
				if resp.StatusCode != tc.status {
					t.Errorf("%q: %d, want %d", tc.hdr, resp.StatusCode, tc.status)
				}
			}
		})
	}
}

// TestAttack21HostTrailingDot: "old.example.com." is the same host as
// "old.example.com" (an absolute name; nginx and most servers serve it
// as such), so a host rule holds for both, exact and wildcard.
func TestAttack21HostTrailingDot(t *testing.T) {
	var hits atomic.Int64
	srv, _ := startHTTP(t, headerServer(&hits), false)
	f := startRuleFront(t, conf.Frontend{Rules: []conf.Rule{
		{Host: "old.example.com", Action: conf.ActionDeny, Status: 403},
		{Host: "*.internal.example", Action: conf.ActionDeny, Status: 403},
	}}, srv, "")
	for _, pr := range protos {
		t.Run(pr.name, func(t *testing.T) {
			c := newClient(t, "127.0.0.2", pr.h2)
			for _, host := range []string{"old.example.com", "old.example.com.", "OLD.example.com.:8080", "a.internal.example.", "a.internal.example.:80"} {
				if resp, _ := c.do(t, "GET", "http://"+f.addr+"/", host, ""); resp.StatusCode != 403 {
					t.Errorf("Host %q: %d, want 403", host, resp.StatusCode)
				}
			}
			before := hits.Load()
			if resp, _ := c.do(t, "GET", "http://"+f.addr+"/", "new.example.com.", ""); resp.StatusCode != 200 || hits.Load() != before+1 {
				t.Errorf("Host new.example.com.: %d, want 200 from the server", resp.StatusCode)
			}
		})
	}
}

// TestAttack21RedirectHostNotAHost: a scheme redirect writes the client's
// Host into Location; a Host that is not a host name or address (with an
// optional port) gets 400 rather than a Location pointing elsewhere
// ("evil@a", "evil/x", "a\@evil") or silently changed ("a b" → "ab").
func TestAttack21RedirectHostNotAHost(t *testing.T) {
	var hits atomic.Int64
	srv, _ := startHTTP(t, headerServer(&hits), false)
	f := startRuleFront(t, conf.Frontend{Rules: []conf.Rule{
		{Action: conf.ActionRedirect, Scheme: "https", Code: 301},
	}}, srv, "")
	for _, host := range []string{"evil.com@a.com", "evil.com/x", `a.com\@evil.com`, "a.com evil", "a.com?x=", `"a.com"`, "a.com:80:90", "a.com:8x", "[::1", "//evil.com"} {
		status, loc := rawStatus(t, f.addr, "GET /p?q HTTP/1.1\r\nHost: "+host+"\r\n\r\n")
		if !strings.HasPrefix(status, "400") {
			t.Errorf("Host %q: %s Location %q, want 400", host, status, loc)
		}
	}
	for host, want := range map[string]string{
		"a.com": "https://a.com/p?q", "A.com:8080": "https://A.com/p?q", "[::1]:80": "https://[::1]/p?q",
		"192.0.2.1": "https://192.0.2.1/p?q", "a-b_c.example.": "https://a-b_c.example./p?q",
	} {
		status, loc := rawStatus(t, f.addr, "GET /p?q HTTP/1.1\r\nHost: "+host+"\r\n\r\n")
		if !strings.HasPrefix(status, "301") || loc != want {
			t.Errorf("Host %q: %s Location %q, want 301 %q", host, status, loc, want)
		}
	}
	if hits.Load() != 0 {
		t.Error("a redirected request reached the server")
	}
}
