package l7

import (
	"bytes"
	"strconv"
	"time"
)

// ACMEChallenges answers ACME http-01 validations (package acme's
// Manager): the body for a token of an order in progress, false for any
// other request.
type ACMEChallenges interface {
	HTTPChallenge(method, host, target string) (body []byte, ok bool)
}

var acmePrefix = []byte("/.well-known/acme-challenge/")

// acmeChallenge answers the current request when it is an http-01
// validation (before routing and rules: the ACME server must reach it
// whatever they say). handled says it was; the connection then closes.
func (c *clientConn) acmeChallenge(v *reqView, x *exchange) (handled bool) {
	if c.p.ACME == nil || !bytes.HasPrefix(v.path, acmePrefix) {
		return false
	}
	body, ok := c.p.ACME.HTTPChallenge(string(v.method), string(v.host), string(v.path))
	if !ok {
		return false
	}
	out := append(c.out[:0], "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: "...)
	out = strconv.AppendInt(out, int64(len(body)), 10)
	out = append(append(out, "\r\n\r\n"...), body...)
	c.out = out
	c.dl.forget()
	c.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	c.conn.Write(out)
	c.p.count(nil, 200, int64(len(out)))
	x.status, x.bytesOut, x.backend = 200, int64(len(out)), "<acme>"
	c.log(x)
	return true
}
