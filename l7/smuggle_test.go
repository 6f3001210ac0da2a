package l7_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"sluice/engine"
	"sluice/internal/testutil"
)

// recReq is one request as the recording server read it off the wire.
type recReq struct {
	conn     int // which server connection carried it
	raw      string
	method   string
	target   string
	header   [][2]string // in order, as received
	body     string      // decoded
	complete bool
	bad      string // framing the recorder found ambiguous (must never happen)
}

func (r *recReq) get(name string) []string {
	var out []string
	for _, h := range r.header {
		if strings.EqualFold(h[0], name) {
			out = append(out, h[1])
		}
	}
	return out
}

// recorder is a raw-TCP HTTP/1.1 server that records the exact bytes of
// every request it receives and answers each with "resp:<target>", so a
// response that reaches the wrong client shows whose it was. It reads
// strictly (CRLF only, one Content-Length or "Transfer-Encoding: chunked"),
// as the server behind a proxy that normalized the framing should be able
// to. Targets under /resp/ get the canned raw response of that name.
type recorder struct {
	addr   string
	canned map[string]string
	mu     sync.Mutex
	reqs   []recReq
	active atomic.Int64
	conns  atomic.Int64
}

func startRecorder(t *testing.T, canned map[string]string) *recorder {
	rec := &recorder{canned: canned}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rec.addr = ln.Addr().String()
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			rec.active.Add(1)
			id := int(rec.conns.Add(1))
			go func() {
				defer rec.active.Add(-1)
				defer c.Close()
				rec.serve(c, id)
			}()
		}
	}()
	return rec
}

// take returns the requests recorded so far and forgets them.
func (rec *recorder) take() []recReq {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	out := rec.reqs
	rec.reqs = nil
	return out
}

func (rec *recorder) serve(c net.Conn, id int) {
	br := bufio.NewReader(c)
	for {
		req, ok := rec.readOne(br, c, id)
		if req == nil {
			return
		}
		rec.mu.Lock()
		rec.reqs = append(rec.reqs, *req)
		rec.mu.Unlock()
		if !ok || !rec.answer(c, req) {
			return
		}
	}
}

// line reads one line that must end in CRLF.
func crlfLine(br *bufio.Reader, raw *strings.Builder) (string, bool, error) {
	s, err := br.ReadString('\n')
	raw.WriteString(s)
	if err != nil {
		return s, false, err
	}
	if !strings.HasSuffix(s, "\r\n") {
		return s, false, nil
	}
	return s[:len(s)-2], true, nil
}

// readOne reads one request; nil when the connection ended before one began.
func (rec *recorder) readOne(br *bufio.Reader, c net.Conn, id int) (*recReq, bool) {
	var raw strings.Builder
	req := &recReq{conn: id}
	defer func() { req.raw = raw.String() }()
	line, crlf, err := crlfLine(br, &raw)
	if err != nil && raw.Len() == 0 {
		return nil, false
	}
	if err != nil || !crlf {
		req.bad = "request line not ended by CRLF"
		return req, false
	}
	parts := strings.Split(line, " ")
	if len(parts) != 3 || !strings.HasPrefix(parts[2], "HTTP/1.") {
		req.bad = fmt.Sprintf("bad request line %q", line)
		return req, false
	}
	req.method, req.target = parts[0], parts[1]
	for {
		h, crlf, err := crlfLine(br, &raw)
		if err != nil {
			return req, false
		}
		if !crlf {
			req.bad = "header line not ended by CRLF"
			return req, false
		}
		if h == "" {
			break
		}
		name, value, ok := strings.Cut(h, ":")
		if !ok || name == "" || strings.ContainsAny(name, " \t") {
			req.bad = fmt.Sprintf("bad header line %q", h)
			return req, false
		}
		req.header = append(req.header, [2]string{name, strings.Trim(value, " \t")})
	}
	cls, tes := req.get("Content-Length"), req.get("Transfer-Encoding")
	switch {
	case len(cls) > 1 || len(tes) > 1 || len(cls) == 1 && len(tes) == 1:
		req.bad = fmt.Sprintf("ambiguous framing: Content-Length %q, Transfer-Encoding %q", cls, tes)
		return req, false
	case len(tes) == 1 && tes[0] != "chunked":
		req.bad = fmt.Sprintf("Transfer-Encoding %q", tes[0])
		return req, false
	}
	if len(req.get("Expect")) > 0 {
		io.WriteString(c, "HTTP/1.1 100 Continue\r\n\r\n")
	}
	var body strings.Builder
	switch {
	case len(tes) == 1:
		for {
			l, crlf, err := crlfLine(br, &raw)
			if err != nil || !crlf {
				return req, false
			}
			hex, _, _ := strings.Cut(l, ";")
			n, err := strconv.ParseInt(strings.TrimRight(hex, " \t"), 16, 64)
			if err != nil || n < 0 {
				req.bad = fmt.Sprintf("bad chunk size line %q", l)
				return req, false
			}
			if n == 0 {
				for { // trailers
					t, crlf, err := crlfLine(br, &raw)
					if err != nil || !crlf {
						return req, false
					}
					if t == "" {
						break
					}
					req.header = append(req.header, [2]string{"trailer", t})
				}
				break
			}
			data := make([]byte, n+2)
			k, err := io.ReadFull(br, data)
			raw.Write(data[:k])
			if err != nil {
				return req, false
			}
			if string(data[n:]) != "\r\n" {
				req.bad = "chunk data not followed by CRLF"
				return req, false
			}
			body.Write(data[:n])
		}
	case len(cls) == 1:
		n, err := strconv.ParseInt(cls[0], 10, 64)
		if err != nil || n < 0 {
			req.bad = fmt.Sprintf("bad Content-Length %q", cls[0])
			return req, false
		}
		data := make([]byte, n)
		k, err := io.ReadFull(br, data)
		raw.Write(data[:k])
		body.Write(data[:k])
		if err != nil {
			req.body = body.String()
			return req, false
		}
	}
	req.body = body.String()
	req.complete = true
	return req, true
}

// answer writes the response to req; false when the connection must close.
func (rec *recorder) answer(c net.Conn, req *recReq) bool {
	if name, ok := strings.CutPrefix(req.target, "/resp/"); ok {
		_, err := io.WriteString(c, rec.canned[name])
		return err == nil && !strings.Contains(rec.canned[name], "Connection: close")
	}
	if req.target == "/ws" && len(req.get("Upgrade")) > 0 {
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
		io.Copy(c, c)
		return false
	}
	body := "resp:" + req.target
	var err error
	if req.method == "HEAD" {
		_, err = fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", len(body))
	} else {
		_, err = fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	}
	closing := false
	for _, v := range req.get("Connection") {
		closing = closing || strings.EqualFold(v, "close")
	}
	return err == nil && !closing
}

// smuggleCase is one input of the corpus.
type smuggleCase struct {
	name string
	req  string // raw bytes the client sends at once
	// status is the final status of each response the client must get, in
	// order; 1xx responses are skipped.
	status []int
	// server lists the targets of the complete requests the server must
	// get, in order; the bodies of the "resp:" responses must match them.
	server []string
	// closes: the client connection ends after those responses (a
	// refusal, a 1.0 request without keep-alive). Otherwise a follow-up
	// request on it must get its own answer.
	closes bool
	// partial: the server may also see one incomplete request (a head
	// forwarded before its body turned out broken).
	partial bool
	head    bool // the responses are to HEAD requests
	check   func(t *testing.T, got []recReq, bodies []string, heads []http.Header)
	// client replaces the response reading (for raw checks, tunnels).
	client func(t *testing.T, c net.Conn, r *bufio.Reader)
}

const smuggled = "GET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n"

func ok(name, req string, targets ...string) smuggleCase {
	st := make([]int, len(targets))
	for i := range st {
		st[i] = 200
	}
	return smuggleCase{name: name, req: req, status: st, server: targets}
}

func refused(name, req string, status int) smuggleCase {
	return smuggleCase{name: name, req: req, status: []int{status}, closes: true}
}

// badBody is a request whose head is fine and whose body is not: the head
// may reach the server, the client gets 400 and nothing more.
func badBody(name, req string) smuggleCase {
	return smuggleCase{name: name, req: req, status: []int{400}, closes: true, partial: true}
}

func chunkedPost(body string) string {
	return "POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" + body
}

func withHeader(h string) string { return "GET /h HTTP/1.1\r\nHost: h\r\n" + h + "\r\n\r\n" }

func manyHeaders(n int) string {
	var b strings.Builder
	b.WriteString("GET /many HTTP/1.1\r\nHost: h\r\n")
	for i := 1; i < n; i++ {
		fmt.Fprintf(&b, "a%d:\r\n", i)
	}
	b.WriteString("\r\n")
	return b.String()
}

func bodyIs(want string) func(*testing.T, []recReq, []string, []http.Header) {
	return func(t *testing.T, got []recReq, _ []string, _ []http.Header) {
		if got[0].body != want {
			t.Errorf("server got body %q, want %q", got[0].body, want)
		}
	}
}

func serverHeader(name string, want ...string) func(*testing.T, []recReq, []string, []http.Header) {
	return func(t *testing.T, got []recReq, _ []string, _ []http.Header) {
		if v := got[0].get(name); strings.Join(v, "|") != strings.Join(want, "|") {
			t.Errorf("server got %s %q, want %q\n%s", name, v, want, got[0].raw)
		}
	}
}

func both(fs ...func(*testing.T, []recReq, []string, []http.Header)) func(*testing.T, []recReq, []string, []http.Header) {
	return func(t *testing.T, got []recReq, b []string, h []http.Header) {
		for _, f := range fs {
			f(t, got, b, h)
		}
	}
}

// canned server responses, by the name after /resp/.
var cannedResponses = map[string]string{
	"conn-cl":       "HTTP/1.1 200 OK\r\nConnection: Content-Length\r\nContent-Length: 5\r\n\r\nhello",
	"conn-te":       "HTTP/1.1 200 OK\r\nConnection: Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
	"conn-both":     "HTTP/1.1 200 OK\r\nConnection: keep-alive, Content-Length, Transfer-Encoding\r\nContent-Length: 5\r\n\r\nhello",
	"dup-cl":        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
	"diff-cl":       "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
	"cl-te":         "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
	"chunked-gzip":  "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
	"te-twice":      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
	"vt-value":      "HTTP/1.1 200 OK\r\nX-A: a\vb\r\nContent-Length: 5\r\n\r\nhello",
	"cr-value":      "HTTP/1.1 200 OK\r\nX-A: a\rb\r\nContent-Length: 5\r\n\r\nhello",
	"obs-fold":      "HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 5\r\n\r\nhello",
	"space-colon":   "HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\nhello",
	"cl-plus":       "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello",
	"too-many":      "HTTP/1.1 200 OK\r\n" + strings.Repeat("X-A: 1\r\n", 150) + "Content-Length: 5\r\n\r\nhello",
	"lf-only":       "HTTP/1.1 200 OK\nContent-Length: 5\n\nhello",
	"chunk-ext-cr":  "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;a\rb\r\nhello\r\n0\r\n\r\n",
	"trailer":       "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
	"conn-hop":      "HTTP/1.1 200 OK\r\nConnection: X-Secret\r\nX-Secret: s\r\nContent-Length: 5\r\n\r\nhello",
	"cr-reason":     "HTTP/1.1 200 O\rK\r\nContent-Length: 5\r\n\r\nhello",
	"status-000":    "HTTP/1.1 000 OK\r\nContent-Length: 5\r\n\r\nhello",
	"status-2000":   "HTTP/1.1 2000 OK\r\nContent-Length: 5\r\n\r\nhello",
	"no-framing-ka": "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nhello",
}

func smuggleCorpus() []smuggleCase {
	admin := "GET /admin/secret HTTP/1.1\r\nHost: h\r\n\r\n"
	adminChunk := fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(admin), admin)
	cs := []smuggleCase{
		// The critical hole: a Connection token naming the framing.
		withCheck(ok("Connection: Content-Length", "POST /innocent HTTP/1.1\r\nHost: h\r\nConnection: Content-Length\r\nContent-Length: "+strconv.Itoa(len(admin))+"\r\n\r\n"+admin, "/innocent"),
			both(bodyIs(admin), serverHeader("Content-Length", strconv.Itoa(len(admin))))),
		withCheck(ok("Connection: content-length lower case", "POST /innocent HTTP/1.1\r\nHost: h\r\nConnection: content-length\r\nContent-Length: "+strconv.Itoa(len(admin))+"\r\n\r\n"+admin, "/innocent"),
			bodyIs(admin)),
		withCheck(ok("Connection: keep-alive, Content-Length", "POST /innocent HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Content-Length\r\nContent-Length: "+strconv.Itoa(len(admin))+"\r\n\r\n"+admin, "/innocent"),
			bodyIs(admin)),
		withCheck(ok("Connection: Transfer-Encoding", "POST /innocent HTTP/1.1\r\nHost: h\r\nConnection: Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n"+adminChunk, "/innocent"),
			both(bodyIs(admin), serverHeader("Transfer-Encoding", "chunked"))),
		withCheck(ok("Connection: Content-Length, Transfer-Encoding on chunked", "POST /innocent HTTP/1.1\r\nHost: h\r\nConnection: Content-Length, Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n"+adminChunk, "/innocent"),
			bodyIs(admin)),
		withCheck(ok("Connection: Host", "GET /h HTTP/1.1\r\nHost: h\r\nConnection: Host\r\n\r\n", "/h"), serverHeader("Host", "h")),
		withCheck(ok("Connection naming an ordinary header drops it", "GET /h HTTP/1.1\r\nHost: h\r\nConnection: X-Hop\r\nX-Hop: 1\r\n\r\n", "/h"), serverHeader("X-Hop")),
		{name: "Connection: close, Content-Length", req: "POST /innocent HTTP/1.1\r\nHost: h\r\nConnection: close, Content-Length\r\nContent-Length: " + strconv.Itoa(len(admin)) + "\r\n\r\n" + admin,
			status: []int{200}, server: []string{"/innocent"}, closes: true, check: bodyIs(admin)},
		withCheck(ok("two Connection headers naming the framing", "POST /innocent HTTP/1.1\r\nHost: h\r\nConnection: Content-Length\r\nConnection: Transfer-Encoding\r\nContent-Length: "+strconv.Itoa(len(admin))+"\r\n\r\n"+admin, "/innocent"),
			bodyIs(admin)),
		withCheck(ok("HTTP/1.0 keep-alive naming Content-Length", "POST /innocent HTTP/1.0\r\nConnection: keep-alive, Content-Length\r\nContent-Length: "+strconv.Itoa(len(admin))+"\r\n\r\n"+admin, "/innocent"),
			bodyIs(admin)),

		// Server responses naming their own framing in Connection.
		respCase("response Connection: Content-Length", "conn-cl", "hello"),
		respCase("response Connection: Transfer-Encoding", "conn-te", "hello"),
		respCase("response Connection naming both", "conn-both", "hello"),
		withClientCheck(respCase("response duplicate identical Content-Length", "dup-cl", "hello"), func(t *testing.T, h http.Header) {
			if v := h.Values("Content-Length"); len(v) != 1 {
				t.Errorf("client got Content-Length %q, want one", v)
			}
		}),
		withClientCheck(respCase("response Content-Length with Transfer-Encoding", "cl-te", "hello"), func(t *testing.T, h http.Header) {
			if v := h.Values("Content-Length"); len(v) != 0 {
				t.Errorf("client got Content-Length %q beside chunked", v)
			}
		}),
		respCase("response trailers pass", "trailer", "hello"),
		withClientCheck(respCase("response Connection-named header dropped", "conn-hop", "hello"), func(t *testing.T, h http.Header) {
			if h.Get("X-Secret") != "" {
				t.Errorf("X-Secret reached the client")
			}
		}),
		respBad("response differing Content-Length", "diff-cl"),
		respBad("response chunked then gzip", "chunked-gzip"),
		respBad("response Transfer-Encoding twice", "te-twice"),
		respBad("response \\v in a value", "vt-value"),
		respBad("response CR in a value", "cr-value"),
		respBad("response obs-fold", "obs-fold"),
		respBad("response space before colon", "space-colon"),
		respBad("response Content-Length +5", "cl-plus"),
		respBad("response 150 headers", "too-many"),
		respBad("response bare CR in the reason", "cr-reason"),
		respBad("response status 000", "status-000"),
		respBad("response status 2000", "status-2000"),
		{name: "response LF-only lines", req: "GET /resp/lf-only HTTP/1.1\r\nHost: h\r\n\r\n", status: []int{200}, server: []string{"/resp/lf-only"},
			check: func(t *testing.T, _ []recReq, b []string, _ []http.Header) {
				if b[0] != "hello" {
					t.Errorf("body %q", b[0])
				}
			}},
		{name: "response framed by close", req: "GET /resp/no-framing-ka HTTP/1.1\r\nHost: h\r\n\r\n", status: []int{200}, server: []string{"/resp/no-framing-ka"}, closes: true},
		{name: "response chunk extension with bare CR", req: "GET /resp/chunk-ext-cr HTTP/1.1\r\nHost: h\r\n\r\n", server: []string{"/resp/chunk-ext-cr"}, closes: true,
			client: func(t *testing.T, c net.Conn, r *bufio.Reader) {
				all, _ := io.ReadAll(r)
				if bytes.Contains(all, []byte("a\rb")) {
					t.Errorf("bare CR in a chunk extension reached the client: %q", all)
				}
			}},

		// CL.TE, TE.CL and TE.TE.
		refused("CL.TE", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG"+smuggled, 400),
		refused("TE.CL", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n5c\r\n"+smuggled+"\r\n0\r\n\r\n", 400),
		refused("TE.TE chunked with trailing space and CL", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nTransfer-Encoding: chunked \r\n\r\n0\r\n\r\n"+smuggled, 400),
		refused("TE xchunked", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"+smuggled, 400),
		refused("TE xchunked with CL", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"+smuggled, 400),
		refused("TE space before colon", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n"+smuggled, 400),
		refused("TE tab before colon", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding\t: chunked\r\n\r\n0\r\n\r\n"+smuggled, 400),
		refused("TE tab value with CL", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding:\tchunked\r\n\r\n0\r\n\r\n"+smuggled, 400),
		refused("TE duplicate", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"+smuggled, 400),
		refused("TE duplicate with other", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n\r\n0\r\n\r\n"+smuggled, 400),
		refused("TE chunked, identity", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n"+smuggled, 400),
		refused("TE identity, chunked", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n"+smuggled, 400),
		refused("TE gzip, chunked", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"+smuggled, 400),
		refused("TE quoted", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: \"chunked\"\r\n\r\n0\r\n\r\n"+smuggled, 400),
		refused("TE chunk", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunk\r\n\r\n0\r\n\r\n"+smuggled, 400),
		refused("TE with parameter", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked;q=1\r\n\r\n0\r\n\r\n"+smuggled, 400),
		refused("TE vertical tab", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: \vchunked\r\n\r\n0\r\n\r\n"+smuggled, 400),
		refused("TE form feed", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\f\r\n\r\n0\r\n\r\n"+smuggled, 400),
		refused("TE NUL", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\x00\r\n\r\n0\r\n\r\n"+smuggled, 400),
		refused("TE name NUL", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding\x00: chunked\r\n\r\n0\r\n\r\n"+smuggled, 400),
		refused("TE obs-folded", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n"+smuggled, 400),
		refused("TE in obs-fold line", "POST / HTTP/1.1\r\nHost: h\r\nX-A: a\r\n Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"+smuggled, 400),
		refused("TE with LF-only lines and CL", "POST / HTTP/1.1\nHost: h\nContent-Length: 5\nTransfer-Encoding: chunked\n\n0\n\n"+smuggled, 400),
		refused("TE on HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n5c\r\n"+smuggled+"\r\n0\r\n\r\n", 400),
		refused("TE empty", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:\r\n\r\n0\r\n\r\n"+smuggled, 400),
		withCheck(ok("TE chunked trailing space alone", "POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked \r\n\r\n5\r\nhello\r\n0\r\n\r\n", "/c"),
			both(bodyIs("hello"), serverHeader("Transfer-Encoding", "chunked"))),
		withCheck(ok("TE upper case", "POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: CHUNKED\r\n\r\n5\r\nhello\r\n0\r\n\r\n", "/c"),
			both(bodyIs("hello"), serverHeader("Transfer-Encoding", "chunked"))),
		withCheck(ok("TE tab value", "POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:\tchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", "/c"), bodyIs("hello")),
		withCheck(ok("Transfer_Encoding is another header", "POST /c HTTP/1.1\r\nHost: h\r\nTransfer_Encoding: chunked\r\nContent-Length: 5\r\n\r\nhello", "/c"),
			both(bodyIs("hello"), serverHeader("Content-Length", "5"))),

		// Content-Length forms.
		refused("CL plus sign", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +5\r\n\r\nhello"+smuggled, 400),
		refused("CL minus sign", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -5\r\n\r\nhello"+smuggled, 400),
		refused("CL hex", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0x5\r\n\r\nhello"+smuggled, 400),
		refused("CL decimal point", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5.0\r\n\r\nhello"+smuggled, 400),
		refused("CL exponent", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1e1\r\n\r\nhello"+smuggled, 400),
		refused("CL list", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\n\r\nhello"+smuggled, 400),
		refused("CL list no space", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5,5\r\n\r\nhello"+smuggled, 400),
		refused("CL inner space", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5 0\r\n\r\nhello"+smuggled, 400),
		refused("CL empty", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: \r\n\r\nhello"+smuggled, 400),
		refused("CL overflow", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999\r\n\r\nhello"+smuggled, 400),
		refused("CL vertical tab", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: \v5\r\n\r\nhello"+smuggled, 400),
		refused("CL form feed", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\f\r\n\r\nhello"+smuggled, 400),
		refused("CL differing duplicates", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 50\r\n\r\nhello"+smuggled, 400),
		refused("CL space before colon", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length : 5\r\n\r\nhello"+smuggled, 400),
		refused("CL name with space", "POST / HTTP/1.1\r\nHost: h\r\nContent Length: 5\r\n\r\nhello"+smuggled, 400),
		withCheck(ok("CL identical duplicates forwarded once", "POST /d HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", "/d"),
			both(bodyIs("hello"), serverHeader("Content-Length", "5"))),
		withCheck(ok("CL leading zero", "POST /d HTTP/1.1\r\nHost: h\r\nContent-Length: 05\r\n\r\nhello", "/d"),
			both(bodyIs("hello"), serverHeader("Content-Length", "5"))),
		withCheck(ok("CL surrounded by spaces", "POST /d HTTP/1.1\r\nHost: h\r\nContent-Length:  5 \r\n\r\nhello", "/d"), bodyIs("hello")),
		withCheck(ok("CL zero", "POST /d HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n", "/d"), serverHeader("Content-Length", "0")),
		withCheck(ok("CL body holding a request", "POST /d HTTP/1.1\r\nHost: h\r\nContent-Length: "+strconv.Itoa(len(smuggled))+"\r\n\r\n"+smuggled, "/d"), bodyIs(smuggled)),
		withCheck(ok("CL body then a pipelined request", "POST /d HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"+smuggled, "/d", "/smuggled"), bodyIs("hello")),

		// Chunked bodies.
		withCheck(ok("chunked valid", chunkedPost("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"), "/c"), bodyIs("hello world")),
		withCheck(ok("chunked upper-case hex", chunkedPost("A\r\n0123456789\r\n0\r\n\r\n"), "/c"), bodyIs("0123456789")),
		withCheck(ok("chunked extension", chunkedPost("5;name=value\r\nhello\r\n0;last\r\n\r\n"), "/c"), bodyIs("hello")),
		withCheck(ok("chunked quoted extension", chunkedPost("5;name=\"a b\"\r\nhello\r\n0\r\n\r\n"), "/c"), bodyIs("hello")),
		withCheck(ok("chunked size then white space", chunkedPost("5 \r\nhello\r\n0\r\n\r\n"), "/c"), bodyIs("hello")),
		withCheck(ok("chunked LF-only lines", chunkedPost("5\nhello\n0\n\n"), "/c"), bodyIs("hello")),
		withCheck(ok("chunked leading zeros", chunkedPost("005\r\nhello\r\n00\r\n\r\n"), "/c"), bodyIs("hello")),
		withCheck(ok("chunked trailer", chunkedPost("5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n"), "/c"), serverHeader("trailer", "X-T: 1")),
		withCheck(ok("chunked then a pipelined request", chunkedPost("5\r\nhello\r\n0\r\n\r\n")+smuggled, "/c", "/smuggled"), bodyIs("hello")),
		withCheck(ok("chunked body holding a request", chunkedPost(fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(smuggled), smuggled)), "/c"), bodyIs(smuggled)),
		badBody("chunk extension with bare CR", chunkedPost("5;a\rb\r\nhello\r\n0\r\n\r\n")+smuggled),
		badBody("chunk extension with NUL", chunkedPost("5;a\x00b\r\nhello\r\n0\r\n\r\n")+smuggled),
		badBody("chunk extension with vertical tab", chunkedPost("5;a\vb\r\nhello\r\n0\r\n\r\n")+smuggled),
		badBody("chunk extension without semicolon", chunkedPost("5 garbage\r\nhello\r\n0\r\n\r\n")+smuggled),
		badBody("chunk size overflow", chunkedPost("ffffffffffffffffff\r\nhello\r\n0\r\n\r\n")+smuggled),
		badBody("chunk size 16 digits", chunkedPost("1000000000000005\r\nhello\r\n0\r\n\r\n")+smuggled),
		badBody("chunk size negative", chunkedPost("-5\r\nhello\r\n0\r\n\r\n")+smuggled),
		badBody("chunk size 0x", chunkedPost("0x5\r\nhello\r\n0\r\n\r\n")+smuggled),
		badBody("chunk size leading space", chunkedPost(" 5\r\nhello\r\n0\r\n\r\n")+smuggled),
		badBody("chunk size empty", chunkedPost("\r\nhello\r\n0\r\n\r\n")+smuggled),
		badBody("chunk size bare CR", chunkedPost("5\rX\r\nhello\r\n0\r\n\r\n")+smuggled),
		badBody("chunk data longer than size", chunkedPost("3\r\nhello\r\n0\r\n\r\n")+smuggled),
		badBody("chunk data without CRLF", chunkedPost("5\r\nhello0\r\n\r\n")+smuggled),
		badBody("chunk trailer with bare CR", chunkedPost("5\r\nhello\r\n0\r\nX-T: a\rb\r\n\r\n")+smuggled),
		badBody("chunk trailer with control character", chunkedPost("5\r\nhello\r\n0\r\nX-T: a\x01b\r\n\r\n")+smuggled),
		badBody("chunk trailer obs-fold", chunkedPost("5\r\nhello\r\n0\r\nX-T: a\r\n b\r\n\r\n")+smuggled),
		badBody("chunk trailer without colon", chunkedPost("5\r\nhello\r\n0\r\ngarbage\r\n\r\n")+smuggled),
		badBody("chunk trailer name with space", chunkedPost("5\r\nhello\r\n0\r\nX T: 1\r\n\r\n")+smuggled),

		// Header lines.
		refused("header value vertical tab", withHeader("X-A: a\vb"), 400),
		refused("header value form feed", withHeader("X-A: a\fb"), 400),
		refused("header value leading vertical tab", withHeader("X-A:\va"), 400),
		refused("header value trailing form feed", withHeader("X-A: a\f"), 400),
		refused("header value NUL", withHeader("X-A: a\x00b"), 400),
		refused("header value bare CR", withHeader("X-A: a\rb"), 400),
		refused("header value \\x01", withHeader("X-A: a\x01b"), 400),
		refused("header value \\x1f", withHeader("X-A: a\x1fb"), 400),
		refused("header value DEL", withHeader("X-A: a\x7fb"), 400),
		refused("header value ESC", withHeader("X-A: \x1b[31m"), 400),
		refused("header name with space", withHeader("X A: b"), 400),
		refused("header name empty", withHeader(": b"), 400),
		refused("header name NUL", withHeader("X\x00A: b"), 400),
		refused("header name with parenthesis", withHeader("X(A): b"), 400),
		refused("header name non-ASCII", withHeader("X\xc3\xa9: b"), 400),
		refused("header without colon", withHeader("X-A b"), 400),
		refused("obs-fold", withHeader("X-A: a\r\n b"), 400),
		refused("obs-fold with tab", withHeader("X-A: a\r\n\tb"), 400),
		refused("Host twice", withHeader("Host: other"), 400),
		refused("Host space before colon", "GET / HTTP/1.1\r\nHost : h\r\n\r\n", 400),
		refused("Host with control character", "GET / HTTP/1.1\r\nHost: h\x01\r\n\r\n", 400),
		refused("HTTP/1.1 without Host", "GET / HTTP/1.1\r\n\r\n", 400),
		withCheck(ok("header value with tab", withHeader("X-A: a\tb"), "/h"), serverHeader("X-A", "a\tb")),
		withCheck(ok("header value obs-text", withHeader("X-A: caf\xc3\xa9"), "/h"), serverHeader("X-A", "caf\xc3\xa9")),
		withCheck(ok("header value empty", withHeader("X-A:"), "/h"), serverHeader("X-A", "")),
		ok("100 headers", manyHeaders(100), "/many"),
		refused("101 headers", manyHeaders(101), 431),
		refused("10000 headers", manyHeaders(10000), 431),

		// Request line and target.
		refused("target control character", "GET /a\x01b HTTP/1.1\r\nHost: h\r\n\r\n", 400),
		refused("target tab", "GET /a\tb HTTP/1.1\r\nHost: h\r\n\r\n", 400),
		refused("target DEL", "GET /a\x7f HTTP/1.1\r\nHost: h\r\n\r\n", 400),
		refused("target NUL", "GET /a\x00 HTTP/1.1\r\nHost: h\r\n\r\n", 400),
		refused("target fragment", "GET /a#frag HTTP/1.1\r\nHost: h\r\n\r\n", 400),
		refused("target non-ASCII", "GET /caf\xc3\xa9 HTTP/1.1\r\nHost: h\r\n\r\n", 400),
		refused("target relative", "GET a HTTP/1.1\r\nHost: h\r\n\r\n", 400),
		refused("target * without OPTIONS", "GET * HTTP/1.1\r\nHost: h\r\n\r\n", 400),
		refused("double space in request line", "GET  / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
		refused("trailing space in request line", "GET / HTTP/1.1 \r\nHost: h\r\n\r\n", 400),
		refused("bare CR ends request line", "GET / HTTP/1.1\rHost: h\r\n\r\n", 400),
		refused("method with parenthesis", "G(T / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
		refused("method NUL", "G\x00T / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
		refused("unknown version", "GET / HTTP/1.2\r\nHost: h\r\n\r\n", 400),
		refused("lower-case version", "GET / http/1.1\r\nHost: h\r\n\r\n", 400),
		refused("HTTP/0.9 request", "GET /\r\n\r\n", 400),
		ok("OPTIONS *", "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n", "*"),
		ok("empty lines before request line", "\r\n\r\nGET /e HTTP/1.1\r\nHost: h\r\n\r\n", "/e"),
		ok("LF-only request", "GET /lf HTTP/1.1\nHost: h\n\n", "/lf"),
		ok("mixed line endings", "GET /mix HTTP/1.1\r\nHost: h\nX-A: 1\r\n\n", "/mix"),

		// Absolute-form targets.
		refused("absolute-form Host mismatch", "GET http://internal.example/ HTTP/1.1\r\nHost: public.example\r\n\r\n", 400),
		refused("absolute-form port mismatch", "GET http://h:8080/ HTTP/1.1\r\nHost: h\r\n\r\n", 400),
		refused("absolute-form userinfo", "GET http://a@h/ HTTP/1.1\r\nHost: h\r\n\r\n", 400),
		refused("absolute-form empty authority", "GET http:///x HTTP/1.1\r\nHost: h\r\n\r\n", 400),
		refused("absolute-form other scheme", "GET ftp://h/x HTTP/1.1\r\nHost: h\r\n\r\n", 400),
		refused("absolute-form fragment", "GET http://h/#x HTTP/1.1\r\nHost: h\r\n\r\n", 400),
		withCheck(ok("absolute-form forwarded origin-form", "GET http://internal.example/p?q=1 HTTP/1.1\r\nHost: internal.example\r\n\r\n", "/p?q=1"),
			serverHeader("Host", "internal.example")),
		ok("absolute-form without path", "GET http://h HTTP/1.1\r\nHost: h\r\n\r\n", "/"),
		ok("absolute-form query without path", "GET http://h?q=1 HTTP/1.1\r\nHost: h\r\n\r\n", "/?q=1"),
		ok("absolute-form upper-case scheme and host", "GET HTTP://H/x HTTP/1.1\r\nHost: h\r\n\r\n", "/x"),
		ok("absolute-form default port", "GET http://h:80/x HTTP/1.1\r\nHost: h\r\n\r\n", "/x"),
		ok("absolute-form https default port", "GET https://h:443/x HTTP/1.1\r\nHost: h\r\n\r\n", "/x"),
		withCheck(smuggleCase{name: "absolute-form HTTP/1.0 without Host", req: "GET http://internal.example/x HTTP/1.0\r\n\r\n",
			status: []int{200}, server: []string{"/x"}, closes: true}, serverHeader("Host", "internal.example")),

		// Expect, Upgrade.
		withCheck(ok("Expect: 100-continue", "POST /e HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello", "/e"), bodyIs("hello")),
		withCheck(ok("Expect: 100-continue chunked", "POST /e HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", "/e"), bodyIs("hello")),
		withCheck(ok("Upgrade without Connection: upgrade is dropped", "GET /u HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n", "/u"), serverHeader("Upgrade")),
		ok("Upgrade answered 200 stays HTTP", "GET /u HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n", "/u"),
		{name: "Upgrade answered 101 tunnels", req: "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", server: []string{"/ws"}, closes: true,
			client: func(t *testing.T, c net.Conn, r *bufio.Reader) {
				resp, err := http.ReadResponse(r, nil)
				if err != nil || resp.StatusCode != 101 {
					t.Fatalf("got %v %v, want 101", resp, err)
				}
				io.WriteString(c, "ping")
				b := make([]byte, 4)
				if _, err := io.ReadFull(r, b); err != nil || string(b) != "ping" {
					t.Fatalf("tunnel echoed %q, %v", b, err)
				}
			}},

		// HTTP/1.0 and pipelining.
		{name: "HTTP/1.0 closes", req: "GET /a HTTP/1.0\r\n\r\n", status: []int{200}, server: []string{"/a"}, closes: true},
		ok("HTTP/1.0 keep-alive", "GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", "/a"),
		{name: "HTTP/1.0 keep-alive then pipelined", req: "GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /b HTTP/1.0\r\n\r\n",
			status: []int{200, 200}, server: []string{"/a", "/b"}, closes: true},
		ok("HTTP/1.0 keep-alive then pipelined 1.1", "GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n", "/a", "/b"),
		withCheck(ok("HTTP/1.0 keep-alive POST then pipelined", "POST /a HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", "/a", "/b"), bodyIs("hello")),
		ok("pipelined three", "GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\nGET /3 HTTP/1.1\r\nHost: h\r\n\r\n", "/1", "/2", "/3"),
		{name: "pipelined after Connection: close is not served", req: "GET /1 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n" + smuggled,
			status: []int{200}, server: []string{"/1"}, closes: true},
		{name: "pipelined after a refusal is not served", req: "GET /a#x HTTP/1.1\r\nHost: h\r\n\r\n" + smuggled, status: []int{400}, closes: true},
		{name: "HEAD response with Content-Length", req: "HEAD /hd HTTP/1.1\r\nHost: h\r\n\r\n", status: []int{200}, server: []string{"/hd"}, head: true},
		withCheck(ok("GET with a body", "GET /g HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello", "/g"), bodyIs("hello")),
		ok("lower-case method", "get /m HTTP/1.1\r\nHost: h\r\n\r\n", "/m"),
	}
	return cs
}

func withCheck(c smuggleCase, f func(*testing.T, []recReq, []string, []http.Header)) smuggleCase {
	c.check = f
	return c
}

func withClientCheck(c smuggleCase, f func(*testing.T, http.Header)) smuggleCase {
	prev := c.check
	c.check = func(t *testing.T, got []recReq, b []string, h []http.Header) {
		if prev != nil {
			prev(t, got, b, h)
		}
		f(t, h[0])
	}
	return c
}

// respCase: the server answers with a canned response that the client must
// get framed so that the next request on its connection works.
func respCase(name, canned, body string) smuggleCase {
	return smuggleCase{name: name, req: "GET /resp/" + canned + " HTTP/1.1\r\nHost: h\r\n\r\n",
		status: []int{200}, server: []string{"/resp/" + canned},
		check: func(t *testing.T, _ []recReq, b []string, _ []http.Header) {
			if b[0] != body {
				t.Errorf("client got body %q, want %q", b[0], body)
			}
		}}
}

// respBad: a server response sluice cannot frame safely is a 502.
func respBad(name, canned string) smuggleCase {
	return smuggleCase{name: name, req: "GET /resp/" + canned + " HTTP/1.1\r\nHost: h\r\n\r\n",
		status: []int{502}, server: []string{"/resp/" + canned}, closes: true}
}

// TestSmugglingCorpus sends each input of the corpus through sluice to a
// recording server and checks both ends: what the server read (how many
// complete requests, their framing) and what the client got, then that a
// follow-up request, on the client's connection and on a new one reusing
// the pooled server connection, gets its own response and no one else's.
func TestSmugglingCorpus(t *testing.T) {
	cases := smuggleCorpus()
	if len(cases) < 100 {
		t.Fatalf("corpus has %d cases, want at least 100", len(cases))
	}
	rec := startRecorder(t, cannedResponses)
	front := "default_backend = \"app\"\ntimeout_http_request = \"2s\"\n"
	eng, addr := testutil.Start(t, httpConfig(front, "", map[string][]string{"app": {rec.addr}}))
	seenNames := map[string]bool{}
	for i, tc := range cases {
		if seenNames[tc.name] {
			t.Fatalf("duplicate case name %q", tc.name)
		}
		seenNames[tc.name] = true
		t.Run(tc.name, func(t *testing.T) {
			runSmuggleCase(t, eng, rec, addr, i, tc)
		})
	}
}

// quiesce closes the pooled server connections and waits until the
// recorder has read everything sent to it; it returns what it read.
func quiesce(t *testing.T, eng *engine.Engine, rec *recorder) []recReq {
	p := eng.Front.Frontends[0].HTTP()
	testutil.WaitFor(t, "server connections to end", 5*time.Second, func() bool {
		p.CloseIdle()
		return rec.active.Load() == 0
	})
	return rec.take()
}

func runSmuggleCase(t *testing.T, eng *engine.Engine, rec *recorder, addr string, i int, tc smuggleCase) {
	quiesce(t, eng, rec) // what an earlier failed case left behind
	c := testutil.Dial(t, addr)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, tc.req); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(c)
	var bodies []string
	var heads []http.Header
	if tc.client != nil {
		tc.client(t, c, r)
	} else {
		for k, want := range tc.status {
			var req *http.Request
			if tc.head {
				req = &http.Request{Method: "HEAD"}
			}
			var resp *http.Response
			var err error
			for {
				resp, err = http.ReadResponse(r, req)
				if err != nil || resp.StatusCode >= 200 || resp.StatusCode == 101 {
					break
				}
			}
			if err != nil {
				t.Fatalf("response %d: %v", k+1, err)
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatalf("response %d body: %v", k+1, err)
			}
			if resp.StatusCode != want {
				t.Fatalf("response %d: status %d, want %d (body %q)", k+1, resp.StatusCode, want, b)
			}
			bodies = append(bodies, string(b))
			heads = append(heads, resp.Header)
		}
	}
	// The answers from the server, in order, are those of its requests.
	var fromServer []string
	for _, b := range bodies {
		if strings.HasPrefix(b, "resp:") {
			fromServer = append(fromServer, strings.TrimPrefix(b, "resp:"))
		}
	}
	for k, got := range fromServer {
		if k >= len(tc.server) || got != tc.server[k] {
			t.Errorf("client got the response to %q, want %q", got, tc.server)
		}
	}
	same := fmt.Sprintf("/same-%d", i)
	if tc.closes {
		rest, _ := io.ReadAll(r)
		if len(rest) > 0 {
			t.Errorf("after the expected responses the client got more (a smuggled answer?): %q", rest)
		}
	} else {
		followUp(t, c, r, same)
	}
	next := fmt.Sprintf("/next-%d", i)
	c2 := testutil.Dial(t, addr)
	c2.SetDeadline(time.Now().Add(5 * time.Second))
	followUp(t, c2, bufio.NewReader(c2), next)
	c.Close()
	c2.Close()

	got := quiesce(t, eng, rec)
	var complete []recReq
	var targets []string
	partials := 0
	for _, g := range got {
		if g.bad != "" {
			t.Errorf("server read ambiguous framing: %s\n%q", g.bad, g.raw)
		}
		if !g.complete {
			partials++
			continue
		}
		complete = append(complete, g)
		targets = append(targets, g.target)
	}
	want := append([]string{}, tc.server...)
	if !tc.closes {
		want = append(want, same)
	}
	want = append(want, next)
	if strings.Join(targets, " ") != strings.Join(want, " ") {
		t.Errorf("server got requests %q, want %q", targets, want)
		for _, g := range got {
			t.Logf("server read %q", g.raw)
		}
	}
	if partials > 1 || partials == 1 && !tc.partial {
		t.Errorf("server got %d incomplete requests", partials)
	}
	if tc.check != nil && !t.Failed() {
		tc.check(t, complete, bodies, heads)
	}
}

// followUp sends a GET for target on c and checks it gets its own answer.
func followUp(t *testing.T, c net.Conn, r *bufio.Reader, target string) {
	t.Helper()
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: h\r\n\r\n", target)
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatalf("follow-up %s: %v", target, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "resp:"+target {
		t.Fatalf("follow-up %s got %d %q: another request's response", target, resp.StatusCode, b)
	}
}

// TestMaxHeaderCount: more header lines than max_header_count is a 431,
// counted apart from the other 431s; the limit is the frontend's.
func TestMaxHeaderCount(t *testing.T) {
	rec := startRecorder(t, nil)
	front := "default_backend = \"app\"\nmax_header_count = 10\n"
	eng, addr := testutil.Start(t, httpConfig(front, "", map[string][]string{"app": {rec.addr}}))
	c := &eng.Front.Frontends[0].HTTP().Counters
	if out := rawExchange(t, addr, manyHeaders(10)[:len(manyHeaders(10))-2]+"Connection: close\r\n\r\n"); !strings.HasPrefix(out, "HTTP/1.1 431") {
		t.Fatalf("11 header lines with max_header_count = 10: %q", statusOf(out))
	}
	if out := rawExchange(t, addr, manyHeaders(9)[:len(manyHeaders(9))-2]+"Connection: close\r\n\r\n"); !strings.HasPrefix(out, "HTTP/1.1 200") {
		t.Fatalf("10 header lines with max_header_count = 10: %q", statusOf(out))
	}
	if n, m := c.TooManyHeaders.Load(), c.TooLarge431.Load(); n != 1 || m != 1 {
		t.Fatalf("TooManyHeaders = %d, TooLarge431 = %d, want 1 and 1", n, m)
	}
}

// TestAbsoluteFormRouting: an absolute-form target is routed by its
// authority, and the server of that route gets the origin form.
func TestAbsoluteFormRouting(t *testing.T) {
	pub, internal := startRecorder(t, nil), startRecorder(t, nil)
	front := `default_backend = "pub"
[[frontend.web.route]]
host = "internal.example"
backend = "internal"
`
	_, addr := testutil.Start(t, httpConfig(front, "", map[string][]string{"pub": {pub.addr}, "internal": {internal.addr}}))
	for _, tc := range []struct{ req, status, body string }{
		{"GET http://internal.example/x?y HTTP/1.0\r\n\r\n", "200", "resp:/x?y"},
		{"GET http://internal.example:80/x HTTP/1.1\r\nHost: internal.example\r\nConnection: close\r\n\r\n", "200", "resp:/x"},
		{"GET http://internal.example/x HTTP/1.1\r\nHost: public.example\r\nConnection: close\r\n\r\n", "400", ""},
		{"GET http://public.example/x HTTP/1.1\r\nHost: internal.example\r\nConnection: close\r\n\r\n", "400", ""},
	} {
		out := rawExchange(t, addr, tc.req)
		if !strings.HasPrefix(out, "HTTP/1.1 "+tc.status) || !strings.HasSuffix(out, tc.body) {
			t.Errorf("%q: got %q", tc.req, out)
		}
	}
	if got := pub.take(); len(got) != 0 {
		t.Errorf("the public backend got %d requests, want none", len(got))
	}
}
