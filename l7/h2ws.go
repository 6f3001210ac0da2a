package l7

import (
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"io"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"sluice/backend"
)

// WebSocket over HTTP/2 (RFC 8441) to HTTP/1.1 servers, as HAProxy does: an
// extended CONNECT stream (:protocol websocket) becomes a GET with Upgrade
// on a server connection of its own; on 101 the stream answers 200 and its
// DATA frames carry the WebSocket bytes both ways, under the stream's flow
// control, idle for at most timeout_tunnel. The server connection is never
// pooled, before or after.

// wsGUID is RFC 6455 §1.3's constant for Sec-WebSocket-Accept.
const wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

func wsProtocol(p string) bool { return strings.EqualFold(p, "websocket") }

// waitLimit is how long the stream waits for the client to move: a tunnel
// waits timeout_tunnel, a request timeout_client.
func (s *h2Stream) waitLimit() time.Duration {
	if s.idle > 0 {
		return s.idle
	}
	return s.c.p.TimeoutClient
}

// wsAccept is the Sec-WebSocket-Accept a server must answer key with.
func wsAccept(key string) string {
	h := sha1.Sum([]byte(key + wsGUID))
	return base64.StdEncoding.EncodeToString(h[:])
}

// websocket serves an extended CONNECT stream routed to be: connect (the
// policy core's rules and failure answers), upgrade, relay.
func (s *h2Stream) websocket(be *backend.Backend, x *exchange) {
	p := s.c.p
	if p.Backends[be].Proto == "h2c" {
		// Its servers would need extended CONNECT themselves: not carried.
		s.fail(failBadRequest, be, x)
		return
	}
	cn := backend.Connect{Client: backend.Client{Addr: s.c.info.Client.Addr()}, Budget: p.ServerConns}
	if be.Sticky == "cookie" {
		v := h1View(&s.req)
		cn.Pinned = pinned(be, v.cookie(be.StickyCookie))
	}
	var sc *serverConn
	dial := func(ctx context.Context, _ *backend.Server) error {
		var err error
		sc, err = s.serverConn(ctx, &cn, be, true) // a fresh one: a tunnel is no pooled connection's
		return err
	}
	err := be.Connect(s.ctx, &cn, dial)
	x.retries = cn.Retries
	if cn.Server != nil {
		x.server, x.srv = cn.Server.Name, cn.Server
	}
	if err == backend.ErrMoved {
		// The server chose h2 (alpn lists both): its servers would need
		// extended CONNECT themselves, as for an h2 backend.
		cn.Held.Release()
		s.fail(failBadRequest, be, x)
		return
	}
	if s.notConnected(err, be, x) {
		return
	}
	srv := cn.Server
	x.connected = time.Now()
	s.wsExchange(sc, be, x)
	srv.Release()
	observe(srv, x, false)
}

// wsRequestHead is the HTTP/1.1 form of the extended CONNECT: a GET with
// the upgrade fields HTTP/2 has none of, and a key of our own (RFC 8441
// §5: the HTTP/2 side has no Sec-WebSocket-Key).
func (s *h2Stream) wsRequestHead(key string) []byte {
	fields, method := s.req.fields, s.req.method
	own := make([]field, 0, len(fields))
	for _, f := range fields {
		if !equalFold(f.name, "sec-websocket-key") && !equalFold(f.name, "sec-websocket-version") &&
			!equalFold(f.name, "sec-websocket-accept") {
			own = append(own, f)
		}
	}
	s.req.fields, s.req.method = own, []byte("GET")
	b := s.buildRequestHead(make([]byte, 0, 1024))
	s.req.fields, s.req.method = fields, method
	b = b[:len(b)-2] // the head's blank line, appended again below
	b = append(b, "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: "...)
	b = append(b, key...)
	return append(b, "\r\nSec-WebSocket-Version: 13\r\n\r\n"...)
}

// wsExchange upgrades sc and relays the tunnel; a server that does not
// switch has its answer relayed as a response.
func (s *h2Stream) wsExchange(sc *serverConn, be *backend.Backend, x *exchange) {
	c := s.c
	p := c.p
	defer sc.close()
	var raw [16]byte
	rand.Read(raw[:])
	key := base64.StdEncoding.EncodeToString(raw[:])
	out := s.wsRequestHead(key)
	sc.dl.write(sc.conn, time.Now(), be.TimeoutServer)
	if _, err := sc.conn.Write(out); err != nil {
		s.fail(failServerError, be, x)
		return
	}
	sc.srv.Counters.BytesIn.Add(uint64(len(out)))
	if !s.setServer(sc.conn) {
		x.terminated = "client"
		s.log(x)
		return
	}
	defer s.setServer(nil)
	resp := &s.resp
	for {
		sc.dl.read(sc.conn, time.Now(), be.TimeoutServer)
		head, err := sc.hr.readHead()
		if err != nil {
			c.mu.Lock()
			gone := s.reset != nil
			c.mu.Unlock()
			switch {
			case gone:
				x.terminated = "client"
				s.log(x)
			case isTimeout(err):
				sc.srv.Counters.RespErrors.Add(1)
				s.fail(failServerTimeout, be, x)
			default:
				sc.srv.Counters.RespErrors.Add(1)
				s.fail(failServerError, be, x)
			}
			return
		}
		if err := resp.parseResponse(head); err != nil {
			sc.srv.Counters.RespErrors.Add(1)
			s.fail(failBadResponse, be, x)
			return
		}
		if resp.status >= 100 && resp.status < 200 && resp.status != 101 {
			continue // interim: HTTP/2 has no use for them here
		}
		break
	}
	x.respHead = time.Now()
	x.status = resp.status
	if resp.status != 101 {
		// The server refused the upgrade: its answer is the response.
		noBody := resp.status == 204 || resp.status == 304 || !resp.chunked && resp.contentLength == 0
		err := s.sendRespHead(resp, "", "", noBody, false)
		var n int64
		if err == nil && !noBody {
			n, err = s.copyResponse(sc, resp, be)
		}
		p.count(sc.srv, resp.status, n)
		x.bytesOut = n
		if err != nil {
			s.clientBroke(err)
			x.terminated = "body"
		} else {
			s.endBody()
		}
		s.log(x)
		return
	}
	// A switch to anything but WebSocket, or without the proof that the
	// server read our key, is no WebSocket (RFC 6455 §4.1).
	if !equalFold(resp.get("upgrade"), "websocket") || string(resp.get("sec-websocket-accept")) != wsAccept(key) {
		sc.srv.Counters.RespErrors.Add(1)
		s.fail(failBadResponse, be, x)
		return
	}
	err := s.sendHead(func(e *hpack.Encoder) {
		s.status(e, 200)
		for _, f := range resp.fields {
			if framing(f.name) || resp.hopByHop(f.name) || connSpecific(f.name) || equalFold(f.name, "sec-websocket-accept") ||
				p.dropsField(s.edits, true, f.name) {
				continue
			}
			s.field(e, f.name, f.value)
		}
		s.encodeEdits(e, s.edits, true)
	}, false)
	x.status = 200
	p.count(sc.srv, 200, 0)
	if err != nil {
		x.terminated = "client"
		s.log(x)
		return
	}
	x.bytesOut, x.terminated = s.wsRelay(sc)
	s.served = x.terminated == ""
	s.log(x)
}

// wsRelay relays the tunnel until both sides have ended it, one breaks
// it, or nothing moved either way for timeout_tunnel. Each direction
// holds one buffer: DATA is read from the stream as the server takes it
// (the client's window opens only then), and the server is read only as
// the client's window lets its bytes go out.
func (s *h2Stream) wsRelay(sc *serverConn) (out int64, term string) {
	p := s.c.p
	idle := p.TimeoutTunnel
	s.idle = idle
	sc.dl.forget()
	var last atomic.Int64 // the last byte moved either way
	last.Store(time.Now().UnixNano())
	quiet := func() bool { return idle <= 0 || time.Since(time.Unix(0, last.Load())) >= idle }
	deadline := func() time.Time {
		if idle <= 0 {
			return time.Time{}
		}
		return time.Now().Add(idle)
	}
	var outTerm string
	done := make(chan struct{})
	go func() { // server to client
		defer close(done)
		send := func(b []byte) bool {
			if err := s.writeData(b, false); err != nil {
				if errors.Is(err, errClientStalled) {
					outTerm = "tunnel-timeout"
				} else {
					outTerm = "client"
				}
				s.abort(http2.ErrCodeCancel)
				sc.conn.Close()
				return false
			}
			last.Store(time.Now().UnixNano())
			out += int64(len(b))
			p.Counters.BytesOut.Add(uint64(len(b)))
			sc.srv.Counters.BytesOut.Add(uint64(len(b)))
			return true
		}
		// Bytes the server sent right behind its 101 go first.
		if n := sc.hr.buffered(); n > 0 {
			b := sc.hr.buf[sc.hr.r : sc.hr.r+n]
			sc.hr.r += n
			if !send(b) {
				return
			}
		}
		bp := copyBufPool.Get().(*[]byte)
		defer copyBufPool.Put(bp)
		buf := (*bp)[:16384]
		for {
			sc.conn.SetReadDeadline(deadline())
			n, err := sc.conn.Read(buf)
			if n > 0 && !send(buf[:n]) {
				return
			}
			switch {
			case err == nil:
			case isTimeout(err) && !quiet():
			case err == io.EOF:
				// The server's half-close is the stream's END_STREAM.
				if s.writeData(nil, true) != nil {
					outTerm = "client"
				}
				return
			default:
				if isTimeout(err) {
					outTerm = "tunnel-timeout"
				} else if outTerm == "" {
					outTerm = "server"
				}
				s.abort(http2.ErrCodeCancel)
				return
			}
		}
	}()
	// Client to server, here.
	bp := copyBufPool.Get().(*[]byte)
	buf := (*bp)[:16384]
	for {
		n, err := s.Read(buf)
		if n > 0 {
			sc.conn.SetWriteDeadline(deadline())
			if _, werr := sc.conn.Write(buf[:n]); werr != nil {
				term = "server"
				s.abort(http2.ErrCodeCancel)
				sc.conn.Close()
				break
			}
			last.Store(time.Now().UnixNano())
			p.Counters.BytesIn.Add(uint64(n))
			sc.srv.Counters.BytesIn.Add(uint64(n))
			continue
		}
		if err == io.EOF {
			// The client's END_STREAM is the server's half-close.
			if tc, ok := sc.conn.(interface{ CloseWrite() error }); ok {
				tc.CloseWrite()
			}
			break
		}
		if errors.Is(err, errClientStalled) && !quiet() {
			continue
		}
		if errors.Is(err, errClientStalled) {
			term = "tunnel-timeout"
			s.abort(http2.ErrCodeCancel)
		} else {
			term = "client" // reset by the client, or the connection is gone
		}
		sc.conn.Close()
		break
	}
	copyBufPool.Put(bp)
	<-done
	if term == "" {
		term = outTerm
	}
	return out, term
}
