package l7_test

import (
	"strings"
	"testing"

	"sluice/internal/testutil"
)

// An h2c frontend reads a first request line of no HTTP/1 version as a
// broken HTTP/2 preface (h2spec http2/3.5/2): the connection closes with
// no HTTP/1 answer, counted as a bad request. Without h2c the same bytes
// get the HTTP/1 400, and HTTP/1.x still works on the h2c frontend.
func TestH2CBrokenPreface(t *testing.T) {
	be := serveHTTP(t, named("a"))
	backends := map[string][]string{"app": {be.Addr}}
	h2cEng, h2c := testutil.Start(t, httpConfig("default_backend = \"app\"\nh2c = true", "", backends))
	h1Eng, h1 := testutil.Start(t, httpConfig("default_backend = \"app\"", "", backends))
	const broken = "INVALID CONNECTION PREFACE\r\n\r\n"

	for _, tc := range []struct {
		name, front, req, want string
	}{
		{"h2c broken preface", h2c, broken, ""},
		{"h2c unknown version", h2c, "GET / HTTP/3.7\r\nHost: h\r\n\r\n", ""},
		{"h2c no version", h2c, "GET /\r\n\r\n", ""},
		{"h2c malformed HTTP/1.1", h2c, "GET / HTTP/1.1\r\n\r\n", "HTTP/1.1 400"},
		{"h2c HTTP/1.0", h2c, "GET / HTTP/1.0\r\n\r\n", "HTTP/1.1 200"},
		{"http1 broken preface", h1, broken, "HTTP/1.1 400"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			eng := h2cEng
			if tc.front == h1 {
				eng = h1Eng
			}
			counters := &eng.Front.Frontends[0].HTTP().Counters
			before := counters.BadRequest.Load()
			out := rawExchange(t, tc.front, tc.req)
			if tc.want == "" {
				if out != "" {
					t.Fatalf("got %q, want a close without an answer", out)
				}
			} else if !strings.HasPrefix(out, tc.want) {
				t.Fatalf("got %q, want %s…", statusOf(out), tc.want)
			}
			bad := tc.want == "" || strings.HasSuffix(tc.want, "400")
			if got := counters.BadRequest.Load() - before; bad && got != 1 || !bad && got != 0 {
				t.Errorf("bad requests counted %d", got)
			}
		})
	}
}
