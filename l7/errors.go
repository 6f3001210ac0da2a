package l7

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strconv"
	"time"

	"sluice/backend"
)

// failure is a reason sluice answers a request itself. Every path names the
// failure and leaves the rest to the table below: HTTP/1 through
// clientConn.fail (h1Up.fail for h2c servers), HTTP/2 through h2Stream.fail.
type failure uint8

const (
	failNoRoute        failure = iota + 1 // no route and no default backend
	failNoServer                          // no server of the backend is up
	failQueueTimeout                      // every server stayed full for queue_timeout
	failServerConns                       // the process's server-connection budget is spent
	failConnect                           // connecting failed, retries included: the request was not sent
	failBadResponse                       // the server's answer is no valid response
	failServerError                       // the server closed or broke the exchange before its response
	failServerTimeout                     // the server did not answer within timeout_server
	failClientTimeout                     // the client did not send its request (head or body) in time
	failHeadTooLarge                      // request head over max_header_bytes
	failTooManyHeaders                    // more header lines than max_header_count
	failBadRequest                        // malformed or ambiguous request
	// The edge policy's refusals (counted in policy.Counters); the
	// status is the verdict's, the table's the default.
	failDenied      // a deny rule
	failRateLimited // over rate_limit.requests
	failTarpit      // held by a tarpit (rule or rate limit), then refused
)

// afterFailure is what becomes of an HTTP/1 client connection after the
// answer (an HTTP/2 stream ends alone; its connection goes on).
type afterFailure uint8

const (
	// keepConn: the request never reached a server; its body is read and
	// dropped and the connection serves the next request.
	keepConn afterFailure = iota
	// closeConn: the exchange failed midway (no response byte has
	// reached the client yet); a request with a body gets "Connection:
	// close" and the connection closes, one without goes on.
	closeConn
	// refuseConn: the request stream can no longer be trusted; the
	// connection closes, after letting the client read the answer.
	refuseConn
)

// failures maps each failure to its answer: status, the access log's
// termination, and the client connection's fate. Its counters are in
// countFailure.
var failures = [...]struct {
	status int
	term   string
	after  afterFailure
}{
	failNoRoute:      {404, "no-route", keepConn},
	failNoServer:     {503, "no-server", keepConn},
	failQueueTimeout: {503, "queue-timeout", keepConn},
	failServerConns:  {503, "server-conns", keepConn},
	// HAProxy and Envoy answer a server they could not reach with 503
	// (HAProxy's "SC" termination), nginx with 502; sluice as HAProxy.
	failConnect:        {503, "connect", keepConn},
	failBadResponse:    {502, "bad-response", closeConn},
	failServerError:    {502, "server-error", closeConn},
	failServerTimeout:  {504, "server-timeout", closeConn},
	failClientTimeout:  {408, "client-timeout", refuseConn},
	failHeadTooLarge:   {431, "too-large", refuseConn},
	failTooManyHeaders: {431, "too-large", refuseConn},
	failBadRequest:     {400, "bad-request", refuseConn},
	failDenied:         {403, "denied", keepConn},
	failRateLimited:    {429, "rate-limited", keepConn},
	failTarpit:         {403, "tarpit", keepConn},
}

// countFailure adds f to the refusal counters of the frontend and, for the
// backend's own refusals, of be (nil when none was chosen). The policy's
// refusals are counted by package policy as it decides them.
func (p *Proxy) countFailure(f failure, be *backend.Backend) {
	c := &p.Counters
	if st := failures[f].status; be != nil && st >= 500 {
		// The backend's failures (the table's 5xx): its own count has
		// them, as HAProxy's BACKEND row has its own 503s.
		be.Counters.Resp[st/100].Add(1)
	}
	switch f {
	case failNoRoute:
		c.NoRoute404.Add(1)
	case failNoServer, failQueueTimeout, failConnect:
		// The backend's own NoServer and QueueTimeouts, and the servers'
		// connect errors, are counted where they happen: backend.Connect.
		c.Unavailable503.Add(1)
	case failServerConns:
		c.NoServerConn503.Add(1)
		c.Unavailable503.Add(1)
	case failBadResponse, failServerError:
		c.BadGateway502.Add(1)
	case failServerTimeout:
		c.GatewayTime504.Add(1)
	case failClientTimeout:
		c.Timeout408.Add(1)
	case failTooManyHeaders:
		c.TooManyHeaders.Add(1)
		c.TooLarge431.Add(1)
	case failHeadTooLarge:
		c.TooLarge431.Add(1)
	case failBadRequest:
		c.BadRequest.Add(1)
	}
}

// failureOf names the failure of an error from picking a server or from a
// round trip to one.
func failureOf(err error) failure {
	var ne net.Error
	switch {
	case errors.Is(err, backend.ErrQueueTimeout):
		return failQueueTimeout
	case errors.Is(err, backend.ErrNoServer):
		return failNoServer
	case errors.Is(err, errServerConns):
		return failServerConns
	case backend.IsConnectError(err):
		return failConnect
	case errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout():
		return failServerTimeout
	}
	return failServerError
}

// errorHeaders are the headers of every answer sluice produces, both paths,
// besides Content-Length and Connection.
var errorHeaders = [...][2]string{{"Content-Type", "text/html"}, {"Cache-Control", "no-cache"}}

// defaultPages are the bodies of the errors sluice produces, built once.
var defaultPages = func() map[int][]byte {
	m := map[int][]byte{}
	for _, s := range []int{400, 403, 404, 408, 413, 429, 431, 500, 502, 503, 504} {
		m[s] = []byte("<html><body><h1>" + strconv.Itoa(s) + " " + http.StatusText(s) + "</h1></body></html>\n")
	}
	return m
}()

// errorPage is the body of sluice's own answer of status: the frontend's
// error_page_NNN, else a short default.
func (p *Proxy) errorPage(status int) []byte {
	if body, ok := p.ErrorPages[status]; ok {
		return body
	}
	if body, ok := defaultPages[status]; ok {
		return body
	}
	return []byte("<html><body><h1>" + strconv.Itoa(status) + " " + http.StatusText(status) + "</h1></body></html>\n")
}

// errorResponse builds a whole error response for the HTTP/1 path.
func (p *Proxy) errorResponse(b []byte, status int, close bool) []byte {
	body := p.errorPage(status)
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, ' ')
	b = append(b, http.StatusText(status)...)
	for _, h := range errorHeaders {
		b = append(b, "\r\n"...)
		b = append(b, h[0]...)
		b = append(b, ": "...)
		b = append(b, h[1]...)
	}
	b = append(b, "\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(len(body)), 10)
	if close {
		b = append(b, "\r\nConnection: close"...)
	}
	b = append(b, "\r\n\r\n"...)
	return append(b, body...)
}

// fail answers the current HTTP/1 request for failure f: counted, logged
// and the connection kept or closed as the table says. be is the chosen
// backend, nil before routing. It returns whether the connection may serve
// another request.
func (c *clientConn) fail(f failure, be *backend.Backend, x *exchange) bool {
	return c.failStatus(f, failures[f].status, be, x)
}

// failStatus is fail answering status instead of the table's (the
// policy's refusals answer the status their rule says).
func (c *clientConn) failStatus(f failure, status int, be *backend.Backend, x *exchange) bool {
	a := &failures[f]
	c.p.countFailure(f, be)
	x.terminated = a.term
	switch a.after {
	case refuseConn:
		c.refuse(status, x)
		return false
	case closeConn:
		if c.hasBody() {
			// Where the body stands is not known: the connection ends.
			c.reply(status, x, true)
			return false
		}
		// A request without a body left nothing behind it: the client
		// may send the next one, as HAProxy keeps the connection after
		// its own 502 and 504.
		return c.reply(status, x, false)
	}
	// The request was not sent: its body is still to be read.
	if !c.req.chunked && c.req.contentLength > maxDiscard {
		c.reply(status, x, true)
		return false
	}
	return c.reply(status, x, false) && c.discardBody()
}

// reply answers the current request with an error sluice produced. It
// returns whether the connection may serve another request. closing says
// the caller will close the connection after it whatever the request
// asked (the exchange failed midway): the answer then says so, and a
// keep-alive client does not send its next request into a closing socket.
func (c *clientConn) reply(status int, x *exchange, closing bool) bool {
	close := closing || c.req.connClose || c.p.draining.Load() || c.req.http10
	c.out = c.p.errorResponse(c.out[:0], status, close)
	if equalFold(c.req.method, "HEAD") {
		// No body to a HEAD (RFC 9110 §9.3.2), or the next response on a
		// kept connection would start with it; Content-Length still says
		// what a GET would get.
		c.out = c.out[:len(c.out)-len(c.p.errorPage(status))]
	}
	c.dl.forget()
	c.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := c.conn.Write(c.out)
	c.p.count(nil, status, int64(len(c.out)))
	x.status = status
	x.bytesOut = int64(len(c.out))
	c.log(x)
	return err == nil && !close
}

// refuse answers with an error and the connection closes after it: used
// when the request stream can no longer be trusted (400, 408, 431).
func (c *clientConn) refuse(status int, x *exchange) {
	c.reply(status, x, true)
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
