package l7_test

import (
	"io"
	"net/http"
	"net/http/cookiejar"
	"strings"
	"testing"

	"sluice/internal/testutil"
)

// TestStickyCookie: the first response sets a cookie with an opaque server
// id; 100 requests carrying it all land on that server although the
// backend round-robins; when that server goes down the next request lands
// elsewhere and the cookie is reset to the new server.
func TestStickyCookie(t *testing.T) {
	a := serveHTTP(t, named("a"))
	b := serveHTTP(t, named("b"))
	e, front := testutil.Start(t, httpConfig(`default_backend = "app"`,
		"sticky = \"cookie\"\nsticky_cookie = \"SRV\"\nretries = 0",
		map[string][]string{"app": {a.Addr, b.Addr}}))

	jar, _ := cookiejar.New(nil)
	client := &http.Client{Jar: jar}
	get := func() (server string, setCookie string) {
		t.Helper()
		resp, err := client.Get("http://" + front + "/")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		return resp.Header.Get("X-Server"), resp.Header.Get("Set-Cookie")
	}

	first, sc := get()
	if !strings.HasPrefix(sc, "SRV=") {
		t.Fatalf("first response sets %q, want a SRV cookie", sc)
	}
	if strings.Contains(sc, "127.0.0.1") {
		t.Fatalf("cookie %q leaks the server address", sc)
	}
	for i := 0; i < 100; i++ {
		s, sc := get()
		if s != first {
			t.Fatalf("request %d went to %s, want %s (sticky)", i, s, first)
		}
		if sc != "" {
			t.Fatalf("request %d re-set the cookie (%q) although it was valid", i, sc)
		}
	}

	// Take the sticky server down: the client moves and gets a new cookie.
	be := e.Backends["app"]
	name := map[string]string{"a": "app1", "b": "app2"}[first]
	be.Server(name).SetUp(false)
	moved, sc := get()
	if moved == first {
		t.Fatalf("request went to %s, which is down", moved)
	}
	if !strings.HasPrefix(sc, "SRV=") {
		t.Fatalf("failover response sets %q, want a new SRV cookie", sc)
	}
	for i := 0; i < 10; i++ {
		if s, _ := get(); s != moved {
			t.Fatalf("after failover request %d went to %s, want %s", i, s, moved)
		}
	}
}

// TestStickyCookieWithoutCookieRoundRobins: clients without the cookie are
// balanced as usual, each getting the cookie of the server that answered.
func TestStickyCookieWithoutCookieRoundRobins(t *testing.T) {
	a := serveHTTP(t, named("a"))
	b := serveHTTP(t, named("b"))
	_, front := testutil.Start(t, httpConfig(`default_backend = "app"`,
		"sticky = \"cookie\"\nsticky_cookie = \"SRV\"",
		map[string][]string{"app": {a.Addr, b.Addr}}))
	ids := map[string]string{}
	for i := 0; i < 4; i++ {
		resp, err := http.Get("http://" + front + "/")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		s := resp.Header.Get("X-Server")
		c := resp.Header.Get("Set-Cookie")
		if prev, ok := ids[s]; ok && prev != c {
			t.Fatalf("server %s got two cookies: %q and %q", s, prev, c)
		}
		ids[s] = c
	}
	if len(ids) != 2 || ids["a"] == ids["b"] {
		t.Fatalf("cookies by server: %v, want two distinct", ids)
	}
}
