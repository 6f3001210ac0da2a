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

// cookieValue returns the value of cookie name in the Cookie headers of m,
// or nil.
func (m *message) cookieValue(name string) []byte {
	for _, f := range m.fields {
		if !equalFold(f.name, "cookie") {
			continue
		}
		v := f.value
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
	}
	return nil
}

// appendStickyCookie adds the Set-Cookie header that binds the client to srv.
// The value is the server's opaque id, never its address.
func appendStickyCookie(b []byte, name string, srv *backend.Server) []byte {
	b = append(b, "Set-Cookie: "...)
	b = append(b, name...)
	b = append(b, '=')
	b = append(b, srv.ID...)
	return append(b, "; Path=/; HttpOnly\r\n"...)
}
