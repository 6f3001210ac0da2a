package l7

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"time"

	"sluice/backend"
)

// AccessLog writes one line per request, as text (logfmt) or JSON.
type AccessLog struct {
	log *slog.Logger
}

// NewAccessLog logs to w in format "text" or "json".
func NewAccessLog(w io.Writer, format string) *AccessLog {
	opts := &slog.HandlerOptions{
		// The record's own time and level add nothing per request line
		// beyond "time"; keep time, drop level and msg noise.
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && (a.Key == slog.LevelKey) {
				return slog.Attr{}
			}
			return a
		},
	}
	var h slog.Handler
	if format == "json" {
		h = slog.NewJSONHandler(w, opts)
	} else {
		h = slog.NewTextHandler(w, opts)
	}
	return &AccessLog{log: slog.New(h)}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func since(a, b time.Time) time.Duration {
	if a.IsZero() || b.IsZero() {
		return -1
	}
	return b.Sub(a)
}

// serverBroke records a response srv broke off after its head: counted in
// its response errors (HAProxy's eresp) now, in its server aborts
// (srv_abrt) at the log.
func (x *exchange) serverBroke(srv *backend.Server) {
	x.terminated, x.srvAbort = "body", true
	srv.Counters.RespErrors.Add(1)
}

// bodyFailed records a response body from srv that failed after its head:
// the client stopped taking it (its write failed: a client abort at the
// log), or the server broke it off.
func (x *exchange) bodyFailed(err error, srv *backend.Server) {
	if errors.As(err, new(writeError)) {
		x.terminated = "client"
		return
	}
	x.serverBroke(srv)
}

// log writes the access log line of the current HTTP/1 request.
func (c *clientConn) log(x *exchange) { c.p.logRequest(x, &c.info) }

// logRequest writes the access log line of one request, if enabled: the
// one record (exchange) both paths fill, the same fields in the same order.
func (p *Proxy) logRequest(x *exchange, info *ConnInfo) {
	if srv := x.srv; srv != nil {
		// Counted here, at the one end every request has, whether or not
		// the access log is on.
		switch {
		case x.srvAbort:
			srv.Counters.ServerAborts.Add(1)
		case x.terminated == "client":
			srv.Counters.ClientAborts.Add(1)
		}
	}
	al := p.Access
	if al == nil {
		return
	}
	end := time.Now()
	a := [...]slog.Attr{
		slog.String("frontend", p.Frontend),
		slog.String("backend", x.backend),
		slog.String("server", x.server),
		slog.String("client", info.Client.String()),
		slog.String("id", info.ConnID),
		slog.String("proto", x.proto),
		slog.String("method", x.method),
		slog.String("path", x.path),
		slog.Int("status", x.status),
		slog.Int64("bytes", x.bytesOut),
		slog.Int("retries", x.retries),
		slog.Float64("t_head_ms", ms(since(x.start, x.headDone))),
		slog.Float64("t_connect_ms", ms(since(x.headDone, x.connected))),
		slog.Float64("t_response_ms", ms(since(x.connected, x.respHead))),
		slog.Float64("t_total_ms", ms(end.Sub(x.start))),
		slog.String("termination", x.terminated),
		{}, {}, // the client certificate's, below
	}
	attrs := a[:len(a)-2]
	if p.ClientAuth {
		// Every line of such a frontend has them, empty for a client
		// without a certificate (verify = "optional").
		var subj, fp string
		if cc := info.Cert; cc != nil {
			subj, fp = cc.Subject, cc.Fingerprint
		}
		a[len(a)-2], a[len(a)-1] = slog.String("client_cert_subject", subj), slog.String("client_cert_fp", fp)
		attrs = a[:]
	}
	al.log.LogAttrs(context.Background(), slog.LevelInfo, "request", attrs...)
}
