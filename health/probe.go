package health

import (
	"bufio"
	"bytes"
	"context"
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
// at most spec.Timeout.
func Probe(ctx context.Context, spec *Spec) Result {
	start := time.Now()
	deadline := start.Add(spec.Timeout)
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	var r Result
	switch spec.Check {
	case conf.CheckTCP:
		r = probeTCP(ctx, spec, deadline)
	case conf.CheckHTTP:
		r = probeHTTP(ctx, spec, deadline)
	case conf.CheckDNS:
		r = probeDNS(ctx, spec)
	case conf.CheckAgent:
		r = probeAgent(ctx, spec, deadline)
	case conf.CheckUDP:
		r = probeUDP(ctx, spec, deadline)
	default:
		r = Result{OK: true, Desc: "no check"}
	}
	r.At = start
	r.Duration = time.Since(start)
	return r
}

// dial connects for a check and, when the backend sends PROXY headers,
// sends one first: servers that require it would refuse the check
// otherwise. Health checks are the proxy's own connections, so v2 sends the
// LOCAL command (no client address); v1, which has no such command, carries
// the check connection's own addresses.
func dial(ctx context.Context, addr string, deadline time.Time, sendProxy string) (*checkConn, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c := watch(ctx, nc, deadline)
	var h *proxyproto.Header
	switch sendProxy {
	case "v1":
		h = proxyproto.HeaderProxyFromAddrs(1, c.LocalAddr(), c.RemoteAddr())
	case "v2":
		h = &proxyproto.Header{Version: 2, Command: proxyproto.LOCAL, TransportProtocol: proxyproto.UNSPEC}
	}
	if h != nil {
		if _, err := h.WriteTo(c); err != nil {
			c.abort()
			return nil, err
		}
	}
	return c, nil
}

// checkConn is a check's connection, cut short when the checker stops.
type checkConn struct {
	net.Conn
	unwatch func() bool
}

// watch sets the check's deadline on c and makes Stop (the end of ctx)
// interrupt whatever c is waiting for.
func watch(ctx context.Context, c net.Conn, deadline time.Time) *checkConn {
	c.SetDeadline(deadline)
	return &checkConn{Conn: c, unwatch: context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })}
}

// abort closes a check connection with a reset instead of a FIN, as HAProxy
// does: the checker then keeps no TIME_WAIT socket per check, which at
// thousands of checks a second would use up local ports.
func (c *checkConn) abort() {
	c.unwatch()
	if tc, ok := c.Conn.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}

func probeTCP(ctx context.Context, spec *Spec, deadline time.Time) Result {
	c, err := dial(ctx, spec.checkAddr(), deadline, spec.SendProxy)
	if err != nil {
		return fail(err)
	}
	c.abort()
	return Result{OK: true, Desc: "L4OK"}
}

func probeHTTP(ctx context.Context, spec *Spec, deadline time.Time) Result {
	c, err := dial(ctx, spec.checkAddr(), deadline, spec.SendProxy)
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

func probeDNS(ctx context.Context, spec *Spec) Result {
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

func probeUDP(ctx context.Context, spec *Spec, deadline time.Time) Result {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "udp", spec.checkAddr())
	if err != nil {
		return fail(err)
	}
	c := watch(ctx, nc, deadline)
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

// describe turns a check error into the few words a log line or the stats
// page needs.
func describe(err error) string {
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
	case errors.Is(err, context.Canceled):
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
