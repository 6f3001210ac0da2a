package l7

import (
	"bytes"

	"sluice/backend"
)

// pinned is the server a request's sticky cookie names (sticky =
// "cookie"), for Backend.Connect to try first; nil without one. cookie is
// the cookie's value, nil when absent.
func pinned(be *backend.Backend, cookie []byte) *backend.Server {
	if cookie == nil {
		return nil
	}
	// A map lookup with string(bytes) does not allocate.
	return be.ServerByID(string(cookie))
}

// setCookie reports whether the response from srv must carry the sticky
// cookie: sticky = "cookie" and the request's cookie did not name srv.
func setCookie(be *backend.Backend, cookie []byte, srv *backend.Server) bool {
	return be.Sticky == "cookie" && (cookie == nil || !bytes.Equal(cookie, []byte(srv.ID)))
}

// cookie returns the value of the named cookie in the Cookie headers of
// the request, or nil: the same parse for both paths.
func (v *reqView) cookie(name string) []byte {
	for _, f := range v.m.fields {
		if equalFold(f.name, "cookie") {
			if c := cookieIn(f.value, name); c != nil {
				return c
			}
		}
	}
	return nil
}

// cookieIn returns the value of cookie name in one Cookie header value, or
// nil.
func cookieIn(v []byte, name string) []byte {
	for len(v) > 0 {
		var pair []byte
		if i := bytes.IndexByte(v, ';'); i >= 0 {
			pair, v = v[:i], v[i+1:]
		} else {
			pair, v = v, nil
		}
		pair = bytes.TrimLeft(pair, " \t")
		if len(pair) > len(name) && pair[len(name)] == '=' && string(pair[:len(name)]) == name {
			return bytes.TrimRight(pair[len(name)+1:], " \t")
		}
	}
	return nil
}

// appendStickyCookie appends the Set-Cookie value that binds the client to
// the server of id, for both paths. The value is the server's opaque id,
// never its address.
func appendStickyCookie(b []byte, name, id string) []byte {
	b = append(b, name...)
	b = append(b, '=')
	b = append(b, id...)
	return append(b, "; Path=/; HttpOnly"...)
}
