package l7

import (
	"bytes"
	"errors"
)

// field is one header line; both slices point into the head buffer.
type field struct {
	name, value []byte
}

// message is a parsed request or response head. Slices point into the
// headReader's buffer and are valid until the next read on it. A message is
// reused across requests of a connection, so parsing allocates nothing once
// its fields slice has grown.
type message struct {
	// Request line, or status line (proto, status, reason in method/target).
	method, target, proto []byte
	status                int
	reason                []byte

	fields []field

	contentLength int64 // -1: none
	chunked       bool
	connClose     bool // Connection: close, or HTTP/1.0 without keep-alive
	keepAlive     bool // Connection: keep-alive (matters for HTTP/1.0)
	upgrade       bool // Connection: upgrade and an Upgrade header
	expectCont    bool
	host          []byte
	http10        bool
	connTokens    [][]byte // other tokens of Connection: headers to drop
	// te holds the Transfer-Encoding values of a response, forwarded as
	// they came (the framing they imply is the one we used).
	te [][]byte

	// maxFields is the most header lines accepted (0: no limit); set
	// once per connection, kept across reset.
	maxFields int
	// targetBuf holds an origin-form target made from an absolute-form
	// one, when the path cannot be a slice of the head.
	targetBuf []byte
}

// Refusals while parsing a request; each maps to a status code.
var (
	errSmuggling = errors.New("ambiguous message framing")
	errBadTE     = errors.New("unsupported transfer-encoding")
	// errTooManyFields: more header lines than max_header_count (431).
	errTooManyFields = errors.New("too many header fields")
)

func (m *message) reset() {
	m.method, m.target, m.proto, m.reason, m.host = nil, nil, nil, nil, nil
	m.status = 0
	m.fields = m.fields[:0]
	m.contentLength = -1
	m.chunked, m.connClose, m.keepAlive, m.upgrade, m.expectCont, m.http10 = false, false, false, false, false, false
	m.connTokens = m.connTokens[:0]
	m.te = m.te[:0]
}

// parseRequest parses a request head as returned by readHead.
func (m *message) parseRequest(head []byte) error {
	m.reset()
	line, rest := cutLine(head)
	sp1 := bytes.IndexByte(line, ' ')
	if sp1 <= 0 {
		return errBadMessage
	}
	sp2 := bytes.IndexByte(line[sp1+1:], ' ')
	if sp2 <= 0 {
		return errBadMessage
	}
	m.method = line[:sp1]
	m.target = line[sp1+1 : sp1+1+sp2]
	m.proto = line[sp1+2+sp2:]
	if !isToken(m.method) || !validTarget(m.target) {
		return errBadMessage
	}
	switch string(m.proto) {
	case "HTTP/1.1":
	case "HTTP/1.0":
		m.http10 = true
	default:
		return errBadMessage
	}
	if err := m.parseFields(rest, true); err != nil {
		return err
	}
	if !m.http10 && m.host == nil {
		return errBadMessage // RFC 9112 §3.2: a 1.1 request without Host is refused
	}
	if err := m.originForm(); err != nil {
		return err
	}
	if m.http10 && m.chunked {
		// RFC 9112 §6.1: the framing of a 1.0 message with
		// Transfer-Encoding is faulty; a 1.0 server may read the chunks
		// as the next request.
		return errBadTE
	}
	if m.http10 && !m.keepAlive {
		m.connClose = true
	}
	return nil
}

// parseResponse parses a status line and headers from a server.
func (m *message) parseResponse(head []byte) error {
	m.reset()
	line, rest := cutLine(head)
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' {
		return errBadMessage
	}
	m.proto = line[:8]
	m.http10 = line[7] == '0'
	st := line[9:12]
	for _, c := range st {
		if c < '0' || c > '9' {
			return errBadMessage
		}
	}
	m.status = int(st[0]-'0')*100 + int(st[1]-'0')*10 + int(st[2]-'0')
	if m.status < 100 || len(line) > 12 && line[12] != ' ' {
		return errBadMessage // "000", "2000": not a status code
	}
	if len(line) > 13 {
		m.reason = line[13:]
		if !validValue(m.reason) {
			return errBadMessage // a bare CR or NUL in the reason is not passed on
		}
	}
	if err := m.parseFields(rest, false); err != nil {
		return err
	}
	if m.http10 && !m.keepAlive {
		m.connClose = true
	}
	return nil
}

func (m *message) parseFields(rest []byte, request bool) error {
	var cl []byte
	teSeen := false
	for len(rest) > 0 {
		var line []byte
		line, rest = cutLine(rest)
		if len(line) == 0 {
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			return errBadMessage // obs-fold: refused, as RFC 9112 §5.2 allows
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return errBadMessage
		}
		name := line[:colon]
		if !isToken(name) { // also refuses "Name : value"
			return errBadMessage
		}
		value := trimOWS(line[colon+1:])
		if !validValue(value) {
			return errBadMessage // CR, NUL, \v, \f…: never trimmed away, never forwarded
		}
		if m.maxFields > 0 && len(m.fields) >= m.maxFields {
			return errTooManyFields
		}
		m.fields = append(m.fields, field{name: name, value: value})
		switch {
		case equalFold(name, "content-length"):
			if !isDigits(value) {
				return errBadMessage
			}
			if cl != nil && !bytes.Equal(cl, value) {
				return errSmuggling
			}
			cl = value
		case equalFold(name, "transfer-encoding"):
			if request {
				// Requests: exactly one "chunked", nothing else.
				if teSeen || !equalFold(value, "chunked") {
					return errBadTE
				}
				teSeen, m.chunked = true, true
				continue
			}
			// A response is chunked when chunked is its last coding
			// (RFC 9112 §6.3); chunked anywhere else is broken, and other
			// codings alone are framed by close.
			teSeen = true
			m.te = append(m.te, value)
			bad := false
			forEachToken(value, func(tok []byte) {
				if m.chunked {
					bad = true // something after chunked
				}
				m.chunked = equalFold(tok, "chunked")
			})
			if bad {
				return errBadTE
			}
		case equalFold(name, "connection"):
			forEachToken(value, func(tok []byte) {
				switch {
				case equalFold(tok, "close"):
					m.connClose = true
				case equalFold(tok, "keep-alive"):
					m.keepAlive = true
				case equalFold(tok, "upgrade"):
					m.upgrade = true
				case equalFold(tok, "content-length"), equalFold(tok, "transfer-encoding"), equalFold(tok, "host"):
					// The framing and Host are never the peer's to drop:
					// dropping them is how a body becomes a request.
				default:
					m.connTokens = append(m.connTokens, tok)
				}
			})
		case equalFold(name, "host"):
			if m.host != nil {
				return errBadMessage
			}
			m.host = value
		case equalFold(name, "expect"):
			if equalFold(value, "100-continue") {
				m.expectCont = true
			}
		}
	}
	if teSeen && cl != nil {
		if request {
			return errSmuggling // RFC 9112 §6.1: refuse, never guess
		}
		cl = nil // a response: Transfer-Encoding wins
	}
	if cl != nil {
		n, ok := parseDigits(cl)
		if !ok {
			return errBadMessage
		}
		m.contentLength = n
	}
	if m.upgrade && m.get("upgrade") == nil {
		m.upgrade = false
	}
	return nil
}

// get returns the first value of the named header, or nil.
func (m *message) get(name string) []byte {
	for _, f := range m.fields {
		if equalFold(f.name, name) {
			return f.value
		}
	}
	return nil
}

// hopByHop reports whether a header must not be forwarded: the ones RFC 9110
// §7.6.1 names plus those listed in Connection. Trailer stays, because
// chunked bodies (and their trailers) are passed on verbatim; the framing
// headers and Host are never hop-by-hop here (see framing).
func (m *message) hopByHop(name []byte) bool {
	switch len(name) {
	case 2:
		if equalFold(name, "te") {
			return true
		}
	case 7:
		if equalFold(name, "upgrade") {
			return !m.upgrade
		}
	case 10:
		if equalFold(name, "connection") || equalFold(name, "keep-alive") {
			return true
		}
	case 16:
		if equalFold(name, "proxy-connection") {
			return true
		}
	}
	for _, t := range m.connTokens {
		if bytes.EqualFold(t, name) {
			return true
		}
	}
	return false
}

// framing reports whether name is a header the head writers drop and write
// again from the parsed message: Content-Length, Transfer-Encoding (and the
// request writer does the same with Host). What reaches the next hop is then
// the framing we used, once, whatever the peer sent (duplicates, a
// Connection header naming them).
func framing(name []byte) bool {
	switch len(name) {
	case 14:
		return equalFold(name, "content-length")
	case 17:
		return equalFold(name, "transfer-encoding")
	}
	return false
}

// validTarget accepts a request target of visible ASCII without a
// fragment (RFC 9112 §3.2: none is sent; HAProxy refuses "#" too).
func validTarget(t []byte) bool {
	if len(t) == 0 {
		return false
	}
	for _, c := range t {
		if c <= ' ' || c >= 0x7f || c == '#' {
			return false
		}
	}
	return true
}

// validValue accepts a field value without control characters other than
// HTAB (RFC 9110 §5.5); obs-text (0x80-0xff) is allowed.
func validValue(v []byte) bool {
	for _, c := range v {
		if c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// trimOWS trims optional white space (SP, HTAB) only: other bytes such as
// \v or \f are not white space in HTTP and must be seen by validValue.
func trimOWS(v []byte) []byte {
	for len(v) > 0 && (v[0] == ' ' || v[0] == '\t') {
		v = v[1:]
	}
	for len(v) > 0 && (v[len(v)-1] == ' ' || v[len(v)-1] == '\t') {
		v = v[:len(v)-1]
	}
	return v
}

// originForm turns an absolute-form target ("http://host/path?q") into the
// authority it names and an origin-form target (RFC 9112 §3.2.2): the
// authority replaces Host, which must then agree with it, and the server
// gets "/path?q". "*" (OPTIONS) and CONNECT's authority form pass as they
// are; any other target that is not origin-form is refused.
func (m *message) originForm() error {
	t := m.target
	switch {
	case t[0] == '/':
		return nil
	case len(t) == 1 && t[0] == '*' && equalFold(m.method, "OPTIONS"):
		return nil
	case equalFold(m.method, "CONNECT"):
		return nil
	}
	var rest []byte
	https := false
	switch {
	case len(t) > 7 && equalFold(t[:7], "http://"):
		rest = t[7:]
	case len(t) > 8 && equalFold(t[:8], "https://"):
		rest, https = t[8:], true
	default:
		return errBadMessage
	}
	end := len(rest)
	for i, c := range rest {
		if c == '/' || c == '?' {
			end = i
			break
		}
	}
	auth, path := rest[:end], rest[end:]
	if len(auth) == 0 || bytes.IndexByte(auth, '@') >= 0 {
		return errBadMessage // no host, or userinfo (deprecated, and a way to disguise one)
	}
	if m.host != nil && !sameAuthority(auth, m.host, https) {
		return errBadMessage // HAProxy: 400 too
	}
	m.host = auth
	if len(path) > 0 && path[0] == '/' {
		m.target = path
		return nil
	}
	m.targetBuf = append(append(m.targetBuf[:0], '/'), path...)
	m.target = m.targetBuf
	return nil
}

// sameAuthority compares an absolute-form authority with a Host value,
// case-insensitively, a default port (":80", ":443" for https) being the
// same as none.
func sameAuthority(a, h []byte, https bool) bool {
	def := ":80"
	if https {
		def = ":443"
	}
	a = bytes.TrimSuffix(a, []byte(def))
	h = bytes.TrimSuffix(h, []byte(def))
	return bytes.EqualFold(a, h)
}

func cutLine(b []byte) (line, rest []byte) {
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		line, rest = b, nil
	} else {
		line, rest = b[:i], b[i+1:]
	}
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, rest
}

// equalFold compares ASCII case-insensitively without allocating.
func equalFold[T ~[]byte | ~string](b []byte, s T) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		c, d := b[i], s[i]
		if c == d {
			continue
		}
		if c|0x20 != d|0x20 || c|0x20 < 'a' || c|0x20 > 'z' {
			return false
		}
	}
	return true
}

func isDigits(b []byte) bool {
	if len(b) == 0 || len(b) > 18 {
		return false
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func parseDigits(b []byte) (int64, bool) {
	if !isDigits(b) {
		return 0, false
	}
	var n int64
	for _, c := range b {
		n = n*10 + int64(c-'0')
	}
	return n, true
}

var tokenTable = func() (t [256]bool) {
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-32] = true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

func isToken(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if !tokenTable[c] {
			return false
		}
	}
	return true
}

func forEachToken(v []byte, fn func([]byte)) {
	for len(v) > 0 {
		i := bytes.IndexByte(v, ',')
		var tok []byte
		if i < 0 {
			tok, v = v, nil
		} else {
			tok, v = v[:i], v[i+1:]
		}
		tok = bytes.TrimSpace(tok)
		if len(tok) > 0 {
			fn(tok)
		}
	}
}
