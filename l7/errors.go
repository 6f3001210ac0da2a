package l7

import (
	"net/http"
	"strconv"
	"time"
)

// defaultPage is the short body of an error sluice itself produces.
func defaultPage(status int) []byte {
	text := http.StatusText(status)
	return []byte("<html><body><h1>" + strconv.Itoa(status) + " " + text + "</h1></body></html>\n")
}

// errorResponse builds a whole error response.
func (p *Proxy) errorResponse(b []byte, status int, close bool) []byte {
	body, ok := p.ErrorPages[status]
	if !ok {
		body = defaultPage(status)
	}
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, ' ')
	b = append(b, http.StatusText(status)...)
	b = append(b, "\r\nContent-Type: text/html\r\nCache-Control: no-cache\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(len(body)), 10)
	if close {
		b = append(b, "\r\nConnection: close"...)
	}
	b = append(b, "\r\n\r\n"...)
	return append(b, body...)
}

// reply answers the current request with an error sluice produced. It
// returns whether the connection may serve another request. closing says
// the caller will close the connection after it whatever the request
// asked (the exchange failed midway): the answer then says so, and a
// keep-alive client does not send its next request into a closing socket.
func (c *clientConn) reply(status int, x *exchange, closing bool) bool {
	close := closing || c.req.connClose || c.p.draining.Load() || c.req.http10
	c.out = c.p.errorResponse(c.out[:0], status, close)
	c.dl.forget()
	c.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := c.conn.Write(c.out)
	c.p.count(nil, status, int64(len(c.out)))
	x.status = status
	x.bytesOut = int64(len(c.out))
	c.log(x)
	return err == nil && !close
}

// replyThenDiscard answers with an error and drops the request body so the
// connection can go on; a body too large to be worth reading closes it,
// and the answer says so.
func (c *clientConn) replyThenDiscard(status int, x *exchange) bool {
	if !c.req.chunked && c.req.contentLength > maxDiscard {
		return c.reply(status, x, true) && false
	}
	return c.reply(status, x, false) && c.discardBody()
}

// refuse answers with an error and the connection closes after it: used
// when the request stream can no longer be trusted (400, 408, 431).
func (c *clientConn) refuse(status int, x *exchange) {
	c.out = c.p.errorResponse(c.out[:0], status, true)
	c.dl.forget()
	c.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	c.conn.Write(c.out)
	c.p.count(nil, status, int64(len(c.out)))
	x.status = status
	x.bytesOut = int64(len(c.out))
	x.terminated = "refused"
	c.log(x)
	// Let the client read the answer before the close (a reset could
	// destroy it): stop our side and drain a little of what it sent.
	if tc, ok := c.conn.(interface{ CloseWrite() error }); ok {
		tc.CloseWrite()
		c.conn.SetReadDeadline(time.Now().Add(time.Second))
		buf := make([]byte, 4096)
		for i := 0; i < 16; i++ {
			if _, err := c.conn.Read(buf); err != nil {
				break
			}
		}
	}
}
