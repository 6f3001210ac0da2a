package l7

import (
	"math/bits"
	"net"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"sluice/backend"
	"sluice/conf"
	"sluice/policy"
)

// The edge policy ([[frontend.NAME.rule]], [frontend.NAME.rate_limit]) on
// the HTTP paths: one decision per request for HTTP/1 and HTTP/2 alike
// (decide), the answers sluice gives for it (deny, redirect, tarpit), and
// the header edits the writers of the request and response heads apply.
// A request's edits travel as the bit mask of its Verdict; with no policy
// every path pays one nil check.

// Get returns the first value of the header name (any case), or nil: the
// policy.Headers of a request.
func (m *message) Get(name string) []byte { return m.get(name) }

// policyRequest is what the policy looks at of a request.
func policyRequest(v *reqView, info *ConnInfo) policy.Request {
	return policy.Request{Client: info.Client.Addr(), TLS: info.TLS,
		Method: v.method, Host: v.host, Path: v.path, Headers: v.m}
}

// decide asks the frontend's policy (p.Policy, not nil) about a request.
func (p *Proxy) decide(v *reqView, info *ConnInfo) policy.Verdict {
	req := policyRequest(v, info)
	return p.Policy.CheckRequest(&req, time.Now())
}

// appendLocation appends the Location of a Redirect verdict.
func (p *Proxy) appendLocation(b []byte, vd policy.Verdict, v *reqView, info *ConnInfo) []byte {
	req := policyRequest(v, info)
	return p.Policy.Rules.AppendLocation(b, vd, &req)
}

// policyStatus is the status to answer a verdict with: its own, or the
// default of its kind when it has none.
func policyStatus(vd policy.Verdict, f failure) int {
	if vd.Status != 0 {
		return vd.Status
	}
	if vd.Outcome == policy.Redirect {
		return conf.DefaultRedirectCode
	}
	return failures[f].status
}

// policyFailure names a Deny or Tarpit verdict for the failure table.
func policyFailure(vd policy.Verdict) failure {
	switch {
	case vd.Outcome == policy.Tarpit:
		return failTarpit
	case vd.Limited:
		return failRateLimited
	}
	return failDenied
}

// hold waits d for a Tarpit verdict. It ends early, false, when the client
// leaves (conn, an HTTP/1 client's connection; nil: not watched), done
// closes (an HTTP/2 stream's context) or the process stops.
func (p *Proxy) hold(d time.Duration, conn net.Conn, done <-chan struct{}) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	var gone chan struct{}
	if conn != nil {
		gone = make(chan struct{})
		if stop := backend.WatchGone(conn, func() { close(gone) }); stop != nil {
			defer stop()
		}
	}
	select {
	case <-t.C:
		return true
	case <-gone:
	case <-done:
	case <-p.stopCtx().Done():
	}
	return false
}

// vars are the values header templates of the current request may use;
// seq is its number on its connection (HTTP/1) or its stream id (HTTP/2).
func (p *Proxy) vars(info *ConnInfo, seq uint64) policy.Vars {
	return policy.Vars{Client: info.Client, Frontend: p.Frontend, SNI: info.SNI, ConnID: info.ConnID, Seq: seq}
}

// dropsField reports whether the edits of a request leave out a field of
// its request (response false) or response head.
func (p *Proxy) dropsField(edits uint64, response bool, name []byte) bool {
	return edits != 0 && p.Policy.Rules.Drops(edits, response, name)
}

// appendEdits appends, as HTTP/1 header lines, the headers the edits
// write on the request (response false) or response side.
func (p *Proxy) appendEdits(b []byte, edits uint64, response bool, info *ConnInfo, seq uint64) []byte {
	if edits == 0 {
		return b // inlined: no call without edits
	}
	return p.appendEditLines(b, edits, response, info, seq)
}

func (p *Proxy) appendEditLines(b []byte, edits uint64, response bool, info *ConnInfo, seq uint64) []byte {
	r := p.Policy.Rules
	vars := p.vars(info, seq)
	for m := r.Adds(edits, response); m != 0; m &= m - 1 {
		e := r.Edit(bits.TrailingZeros64(m))
		b = append(b, e.Name...)
		b = append(b, ": "...)
		b = appendValue(b, e, &vars)
		b = append(b, "\r\n"...)
	}
	return b
}

// appendValue appends an edit's value for vars without the control
// characters that could split a header or smuggle one in: conf refuses
// them in the configured part, and the writers here do not rely on it.
func appendValue(b []byte, e *policy.Edit, vars *policy.Vars) []byte {
	n := len(b)
	b = e.AppendValue(b, vars)
	j := n
	for i := n; i < len(b); i++ {
		if c := b[i]; c >= ' ' && c != 0x7f || c == '\t' {
			b[j] = c
			j++
		}
	}
	return b[:j]
}

// encodeEdits encodes, as HTTP/2 fields, the headers the edits write on
// the request (response false) or response side. lname is scratch space
// for the value.
func (p *Proxy) encodeEdits(e *hpack.Encoder, edits uint64, response bool, info *ConnInfo, seq uint64, scratch *[]byte) {
	if edits != 0 {
		p.encodeEditFields(e, edits, response, info, seq, scratch)
	}
}

func (p *Proxy) encodeEditFields(e *hpack.Encoder, edits uint64, response bool, info *ConnInfo, seq uint64, scratch *[]byte) {
	r := p.Policy.Rules
	vars := p.vars(info, seq)
	for m := r.Adds(edits, response); m != 0; m &= m - 1 {
		ed := r.Edit(bits.TrailingZeros64(m))
		*scratch = appendValue((*scratch)[:0], ed, &vars)
		e.WriteField(hpack.HeaderField{Name: ed.Lower, Value: stringOf(*scratch)})
	}
}

// encodeEdits encodes the headers the stream's edits write on the
// request (response false) or response side.
func (s *h2Stream) encodeEdits(e *hpack.Encoder, edits uint64, response bool) {
	s.c.p.encodeEdits(e, edits, response, &s.c.info, uint64(s.id), &s.val)
}

// answerPolicy answers an HTTP/1 request the policy did not pass (deny,
// redirect, tarpit) and reports whether the connection may serve another
// request: kept, as after a 404, once the request's body is read and
// dropped.
func (c *clientConn) answerPolicy(vd policy.Verdict, v *reqView, x *exchange) bool {
	switch vd.Outcome {
	case policy.Redirect:
		return c.redirect(vd, v, x)
	case policy.Tarpit:
		if !c.p.hold(vd.Hold, c.conn, nil) {
			x.terminated = "client"
			c.log(x)
			return false
		}
	}
	f := policyFailure(vd)
	return c.failStatus(f, policyStatus(vd, f), nil, x)
}

// redirect answers a Redirect verdict: its code, Location, no body.
func (c *clientConn) redirect(vd policy.Verdict, v *reqView, x *exchange) bool {
	p := c.p
	req := c.req
	status := policyStatus(vd, 0)
	close := req.connClose || p.draining.Load() || req.http10 || !req.chunked && req.contentLength > maxDiscard
	b := appendStatusLine(c.out[:0], status)
	b = append(b, "Location: "...)
	b = p.appendLocation(b, vd, v, &c.info)
	b = append(b, "\r\nContent-Length: 0\r\n"...)
	if close {
		b = append(b, "Connection: close\r\n"...)
	}
	c.out = append(b, "\r\n"...)
	c.dl.forget()
	c.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := c.conn.Write(c.out)
	p.count(nil, status, int64(len(c.out)))
	x.status, x.bytesOut, x.terminated = status, int64(len(c.out)), "redirect"
	c.log(x)
	return err == nil && !close && c.discardBody()
}

// answerPolicy answers an HTTP/2 stream the policy did not pass.
func (s *h2Stream) answerPolicy(vd policy.Verdict, v *reqView, x *exchange) {
	switch vd.Outcome {
	case policy.Redirect:
		s.redirect(vd, v, x)
		return
	case policy.Tarpit:
		if !s.c.p.hold(vd.Hold, nil, s.ctx.Done()) {
			x.terminated = "client"
			s.abort(http2.ErrCodeCancel)
			s.log(x)
			return
		}
	}
	f := policyFailure(vd)
	s.failStatus(f, policyStatus(vd, f), nil, x)
}

// redirect answers a Redirect verdict on a stream: its code and Location
// in a HEADERS frame that ends it.
func (s *h2Stream) redirect(vd policy.Verdict, v *reqView, x *exchange) {
	p := s.c.p
	status := policyStatus(vd, 0)
	var buf [512]byte
	loc := p.appendLocation(buf[:0], vd, v, &s.c.info)
	s.sendHead(func(e *hpack.Encoder) {
		s.status(e, status)
		e.WriteField(hpack.HeaderField{Name: "location", Value: stringOf(loc)})
	}, true)
	p.count(nil, status, 0)
	x.status, x.terminated = status, "redirect"
	s.endBody()
	s.log(x)
}

// HasValue reports whether any field line of name (any case) holds value
// (policy.ValueIn): the policy.ValueMatcher of a request.
func (m *message) HasValue(name, value string) bool {
	for _, f := range m.fields {
		if equalFold(f.name, name) && policy.ValueIn(f.value, value) {
			return true
		}
	}
	return false
}
