package l7

import (
	"bytes"
	"context"

	"sluice/backend"
)

// pickServer chooses and acquires a server of be for one request. With
// sticky = "cookie", a request whose cookie names an available server goes
// there; otherwise the backend picks (waiting in its queue when every server
// is full) and setCookie says the response must carry the new server's id.
// cookie is the value of the request's sticky cookie, nil when absent. The
// error is backend.ErrNoServer or backend.ErrQueueTimeout (both 503).
func pickServer(be *backend.Backend, cl *backend.Client, cookie []byte, skip *backend.Server) (srv *backend.Server, setCookie bool, err error) {
	if be.Sticky == "cookie" && cookie != nil && skip == nil {
		// A map lookup with string(bytes) does not allocate.
		if s := be.ServerByID(string(cookie)); s != nil && s.Available() && s.TryAcquire() {
			return s, false, nil
		}
	}
	srv, err = be.PickWait(context.Background(), cl, skip)
	if err != nil {
		return nil, false, err
	}
	return srv, be.Sticky == "cookie" && (cookie == nil || !bytes.Equal(cookie, []byte(srv.ID))), nil
}

// cookie returns the value of the named cookie in the Cookie headers of
// the request, or nil: the same parse for both paths.
func (v *reqView) cookie(name string) []byte {
	if v.m != nil {
		for _, f := range v.m.fields {
			if equalFold(f.name, "cookie") {
				if c := cookieIn(f.value, name); c != nil {
					return c
				}
			}
		}
		return nil
	}
	for _, s := range v.h["Cookie"] {
		if c := cookieIn([]byte(s), name); c != nil {
			return c
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
