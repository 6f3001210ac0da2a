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
}

// Refusals while parsing a request; each maps to a status code.
var (
	errSmuggling = errors.New("ambiguous message framing")
	errBadTE     = errors.New("unsupported transfer-encoding")
)

func (m *message) reset() {
	m.method, m.target, m.proto, m.reason, m.host = nil, nil, nil, nil, nil
	m.status = 0
	m.fields = m.fields[:0]
	m.contentLength = -1
	m.chunked, m.connClose, m.keepAlive, m.upgrade, m.expectCont, m.http10 = false, false, false, false, false, false
	m.connTokens = m.connTokens[:0]
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
	if !isToken(m.method) || len(m.target) == 0 || bytes.ContainsAny(m.target, " \t\x00\r") {
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
	if len(line) > 13 {
		m.reason = line[13:]
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
		value := bytes.TrimSpace(line[colon+1:])
		if bytes.IndexByte(value, '\r') >= 0 || bytes.IndexByte(value, 0) >= 0 {
			return errBadMessage
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
			if teSeen || !equalFold(value, "chunked") {
				if request {
					return errBadTE
				}
				// A server may send other codings; framing is by close then.
				if !equalFold(value, "chunked") {
					m.chunked = false
					teSeen = true
					continue
				}
			}
			teSeen = true
			m.chunked = true
		case equalFold(name, "connection"):
			forEachToken(value, func(tok []byte) {
				switch {
				case equalFold(tok, "close"):
					m.connClose = true
				case equalFold(tok, "keep-alive"):
					m.keepAlive = true
				case equalFold(tok, "upgrade"):
					m.upgrade = true
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
// §7.6.1 names plus those listed in Connection. Transfer-Encoding and Trailer
// stay, because chunked bodies (and their trailers) are passed on verbatim.
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
