package policy

import "bytes"

// Host and header inputs a client chooses, read the way the server
// behind will read them, so that a rule cannot be slipped past by
// spelling (attack review of issue 21).

// matchHost is a Host value as host conditions compare it: without its
// port and without the trailing dot of an absolute name
// ("Old.Example.com.:8080" → "Old.Example.com"), which names the same
// host to DNS and to the servers behind (nginx strips it too).
func matchHost(h []byte) []byte {
	h = hostOnly(h)
	if n := len(h); n > 1 && h[n-1] == '.' {
		h = h[:n-1]
	}
	return h
}

// MatchHost is matchHost for the routes of package l7, so that a route
// and a rule read one Host alike.
func MatchHost(h []byte) []byte { return matchHost(h) }

// validAuthority reports whether a Host value is a host name or address
// with an optional port (RFC 3986 §3.2.2: reg-name of letters, digits
// and "-._~", or an IP literal in brackets), all a scheme redirect may
// copy into Location: "evil@a", "evil/x", "a\@evil" or "a b" would make
// it point elsewhere or be changed on the way.
func validAuthority(h []byte) bool {
	host, port := h, []byte(nil)
	if len(h) > 0 && h[0] == '[' {
		end := bytes.IndexByte(h, ']')
		if end < 2 {
			return false
		}
		for _, c := range h[1:end] {
			if !(isHex(c) || c == ':' || c == '.') {
				return false
			}
		}
		host, port = nil, h[end+1:]
		if len(port) > 0 && port[0] != ':' {
			return false
		}
	} else if i := bytes.IndexByte(h, ':'); i >= 0 {
		host, port = h[:i], h[i:]
	}
	if len(port) > 0 { // ":" and up to 5 digits
		if len(port) > 6 {
			return false
		}
		for _, c := range port[1:] {
			if c < '0' || c > '9' {
				return false
			}
		}
	}
	if host == nil {
		return true // the IP literal, checked above
	}
	if len(host) == 0 {
		return false
	}
	for _, c := range host {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~') {
			return false
		}
	}
	return true
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// ValueMatcher is what a Headers may also offer: whether any field line
// of name (any case) holds value by ValueIn. A request can carry a name
// on several lines; a condition on the first only would let a client
// slip past a deny with a decoy line before the real one.
type ValueMatcher interface {
	HasValue(name, value string) bool
}

// ValueIn reports whether a field value v is want, or (want holding no
// comma) one of the elements of its comma-separated list, blanks around
// them ignored: HAProxy's hdr() -m str, which a server folding the lines
// of a name into one list reads alike.
func ValueIn(v []byte, want string) bool {
	if string(v) == want {
		return true
	}
	if want == "" || bytes.IndexByte(v, ',') < 0 {
		return false
	}
	for len(v) > 0 {
		el := v
		if i := bytes.IndexByte(v, ','); i >= 0 {
			el, v = v[:i], v[i+1:]
		} else {
			v = nil
		}
		if string(bytes.Trim(el, " \t")) == want {
			return true
		}
	}
	return false
}

// headerHas is a header condition "Name: value" over req's headers.
func headerHas(h Headers, name, value string) bool {
	if vm, ok := h.(ValueMatcher); ok {
		return vm.HasValue(name, value)
	}
	v := h.Get(name)
	return v != nil && ValueIn(v, value)
}
