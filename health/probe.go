package health

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/miekg/dns"
	proxyproto "github.com/pires/go-proxyproto"

	"sluice/conf"
)

// maxBody bounds what an http check reads of a body looking for
// expect_body, and what a udp check reads of a reply.
const maxBody = 64 << 10

// Probe runs one check of spec's server and returns its result. It takes
// at most spec.Timeout, less when ctx ends first.
func Probe(ctx context.Context, spec *Spec) Result {
	return probe(ctx, spec, nil)
}

// probe is Probe for a Checker, which passes track instead of a context
// that ends on Stop: track(conn) hands it the check's connection (and
// reports false when stopping), track(nil) takes it back. This spares the
// per-check context plumbing, a good part of a check's cost.
func probe(ctx context.Context, spec *Spec, track func(net.Conn) bool) Result {
	start := time.Now()
	e := env{ctx: ctx, deadline: start.Add(spec.Timeout), track: track}
	var r Result
	switch spec.Check {
	case conf.CheckTCP:
		r = probeTCP(&e, spec)
	case conf.CheckHTTP:
		r = probeHTTP(&e, spec)
	case conf.CheckDNS:
		r = probeDNS(&e, spec)
	case conf.CheckAgent:
		r = probeAgent(&e, spec)
	case conf.CheckUDP:
		r = probeUDP(&e, spec)
	default:
		r = Result{OK: true, Desc: "no check"}
	}
	r.At = start
	r.Duration = time.Since(start)
	return r
}

// env is what one check runs under.
type env struct {
	ctx      context.Context
	deadline time.Time
	track    func(net.Conn) bool
}

// dial connects for a check and, when the backend sends PROXY headers,
// sends one first: servers that require it would refuse the check
// otherwise. Health checks are the proxy's own connections, so v2 sends the
// LOCAL command (no client address); v1, which has no such command, carries
// the check connection's own addresses.
//
// With tc (the backend's [backend.NAME.tls]), the TLS handshake follows
// the PROXY header, as on the backend's traffic: the check passes only
// when the server's certificate does.
func dial(e *env, network, addr string, sendProxy conf.ProxyVersion, tc *tls.Config) (*checkConn, error) {
	d := net.Dialer{Deadline: e.deadline}
	ctx := e.ctx
	if e.track != nil {
		// A checker cuts the connection itself on Stop; a context that
		// can end would cost a watcher per connect.
		ctx = context.Background()
	}
	nc, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	c, err := e.watch(nc)
	if err != nil {
		return nil, err
	}
	var h *proxyproto.Header
	switch sendProxy {
	case conf.ProxyV1:
		h = proxyproto.HeaderProxyFromAddrs(1, c.LocalAddr(), c.RemoteAddr())
	case conf.ProxyV2:
		h = &proxyproto.Header{Version: 2, Command: proxyproto.LOCAL, TransportProtocol: proxyproto.UNSPEC}
	}
	if h != nil {
		if _, err := h.WriteTo(c); err != nil {
			c.abort()
			return nil, err
		}
	}
	if tc != nil {
		t := tls.Client(c.Conn, tc)
		if err := t.Handshake(); err != nil { // bounded by the check's deadline, cut by Stop
			c.abort()
			return nil, &handshakeError{err}
		}
		c.Conn = t
	}
	return c, nil
}

// checkConn is a check's connection, cut short when the checker stops.
type checkConn struct {
	net.Conn
	unwatch func() bool
}

// errStopped is a check cut short by Stop.
var errStopped = errors.New("stopped")

// watch sets the check's deadline on c and makes Stop (or the end of ctx)
// interrupt whatever c waits for.
func (e *env) watch(c net.Conn) (*checkConn, error) {
	c.SetDeadline(e.deadline)
	cc := &checkConn{Conn: c}
	switch {
	case e.track != nil:
		if !e.track(c) {
			c.Close()
			return nil, errStopped
		}
		cc.unwatch = func() bool { return e.track(nil) }
	case e.ctx.Done() != nil:
		cc.unwatch = context.AfterFunc(e.ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	default:
		cc.unwatch = func() bool { return true }
	}
	return cc, nil
}

// abort closes a check connection with a reset instead of a FIN, as HAProxy
// does: the checker then keeps no TIME_WAIT socket per check, which at
// thousands of checks a second would use up local ports.
func (c *checkConn) abort() {
	c.unwatch()
	raw := c.Conn
	if t, ok := raw.(*tls.Conn); ok {
		raw = t.NetConn() // no close_notify: the reset ends it
	}
	if tc, ok := raw.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	if raw != c.Conn {
		raw.Close()
		return
	}
	c.Close()
}

func probeTCP(e *env, spec *Spec) Result {
	c, err := dial(e, "tcp", spec.checkAddr(), spec.SendProxy, spec.TLS)
	if err != nil {
		return fail(err)
	}
	c.abort()
	return Result{OK: true, Desc: "L4OK"}
}

func probeHTTP(e *env, spec *Spec) Result {
	c, err := dial(e, "tcp", spec.checkAddr(), spec.SendProxy, spec.TLS)
	if err != nil {
		return fail(err)
	}
	defer c.abort()
	host := spec.Host
	if host == "" {
		host = spec.Addr
	}
	req := "" + spec.Method + " " + spec.Path + " HTTP/1.1\r\nHost: " + host +
		"\r\nUser-Agent: sluice-health\r\nAccept: */*\r\nConnection: close\r\n\r\n"
	if _, err := io.WriteString(c, req); err != nil {
		return fail(err)
	}
	br := bufio.NewReaderSize(c, 4096)
	resp, err := http.ReadResponse(br, &http.Request{Method: spec.Method})
	if err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return Result{Desc: "connection closed before a response"}
		}
		var ne net.Error
		if !errors.As(err, &ne) && !errors.Is(err, os.ErrDeadlineExceeded) {
			return Result{Desc: "bad HTTP response: " + err.Error()}
		}
		return fail(err)
	}
	defer resp.Body.Close()
	r := Result{Code: resp.StatusCode, Desc: "HTTP " + strconv.Itoa(resp.StatusCode)}
	if !spec.ExpectStatus.Has(resp.StatusCode) {
		return r
	}
	if spec.ExpectBody != "" {
		body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
		if !bytes.Contains(body, []byte(spec.ExpectBody)) {
			if err != nil {
				r.Desc += ", body: " + describe(err)
			} else {
				r.Desc += fmt.Sprintf(", body lacks %q", spec.ExpectBody)
			}
			return r
		}
	}
	r.OK = true
	return r
}

func probeDNS(e *env, spec *Spec) Result {
	ctx, cancel := context.WithDeadline(e.ctx, e.deadline)
	defer cancel()
	m := new(dns.Msg)
	m.SetQuestion(spec.QueryName, spec.QueryType)
	cl := dns.Client{Net: "udp", Timeout: spec.Timeout}
	resp, _, err := cl.ExchangeContext(ctx, m, spec.checkAddr())
	if err != nil {
		return fail(err)
	}
	r := Result{Code: resp.Rcode, Desc: "DNS " + dns.RcodeToString[resp.Rcode]}
	r.OK = resp.Rcode == dns.RcodeSuccess
	return r
}

func probeUDP(e *env, spec *Spec) Result {
	c, err := dial(e, "udp", spec.checkAddr(), conf.ProxyNone, nil)
	if err != nil {
		return fail(err)
	}
	defer c.abort()
	if _, err := c.Write([]byte(spec.Send)); err != nil {
		return fail(err)
	}
	buf := make([]byte, maxBody)
	n, err := c.Read(buf)
	if err != nil {
		r := fail(err)
		if isTimeout(err) {
			r.Desc = "no UDP reply (timeout)"
		}
		return r
	}
	if spec.ExpectBody != "" && !bytes.Contains(buf[:n], []byte(spec.ExpectBody)) {
		return Result{Desc: fmt.Sprintf("UDP reply lacks %q", spec.ExpectBody)}
	}
	return Result{OK: true, Desc: "UDP reply"}
}

func fail(err error) Result { return Result{Desc: describe(err)} }

// handshakeError is a check's failed TLS handshake with the server: its
// description starts "tls handshake: ", which the stats page reads as
// HAProxy's layer 6 codes (L6RSP, L6TOUT).
type handshakeError struct{ err error }

func (e *handshakeError) Error() string { return "tls handshake: " + e.err.Error() }
func (e *handshakeError) Unwrap() error { return e.err }

// TLSPrefix starts the description of a check whose TLS handshake failed.
const TLSPrefix = "tls handshake: "

// describe turns a check error into the few words a log line or the stats
// page needs.
func describe(err error) string {
	var he *handshakeError
	if errors.As(err, &he) {
		return TLSPrefix + describe(he.err)
	}
	switch {
	case isTimeout(err):
		return "timeout"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return "unreachable"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed"
	case errors.Is(err, context.Canceled), errors.Is(err, errStopped):
		return "stopped"
	}
	var se *os.SyscallError
	if errors.As(err, &se) {
		return se.Err.Error()
	}
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 {
		s = s[i+2:]
	}
	return s
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) ||
		errors.As(err, &ne) && ne.Timeout()
}
