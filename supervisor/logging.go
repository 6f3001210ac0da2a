package supervisor

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"log/syslog"
	"sync"
	"sync/atomic"

	"sluice/conf"
)

// Process logs (global.log_format, global.log_target): the master and each
// worker build their handler from the configuration they run. A worker
// gets it at start, so a reload applies a change to the new worker; the
// master swaps its own handler once the reload has succeeded.

var facilities = map[conf.SyslogFacility]syslog.Priority{
	"kern": syslog.LOG_KERN, "user": syslog.LOG_USER, "mail": syslog.LOG_MAIL,
	"daemon": syslog.LOG_DAEMON, "auth": syslog.LOG_AUTH, "syslog": syslog.LOG_SYSLOG,
	"lpr": syslog.LOG_LPR, "news": syslog.LOG_NEWS, "uucp": syslog.LOG_UUCP,
	"cron": syslog.LOG_CRON, "authpriv": syslog.LOG_AUTHPRIV, "ftp": syslog.LOG_FTP,
	"local0": syslog.LOG_LOCAL0, "local1": syslog.LOG_LOCAL1, "local2": syslog.LOG_LOCAL2,
	"local3": syslog.LOG_LOCAL3, "local4": syslog.LOG_LOCAL4, "local5": syslog.LOG_LOCAL5,
	"local6": syslog.LOG_LOCAL6, "local7": syslog.LOG_LOCAL7,
}

// logHandler builds the process log handler l asks for. The closer (nil
// for stderr) releases the syslog connection.
func logHandler(l conf.Logging, stderr io.Writer, level slog.Level) (slog.Handler, io.Closer, error) {
	opts := &slog.HandlerOptions{Level: level}
	if l.LogTarget != conf.LogSyslog {
		return formatHandler(l.LogFormat, stderr, opts), nil, nil
	}
	fac, ok := facilities[l.LogSyslogFacility]
	if !ok {
		fac = syslog.LOG_DAEMON
	}
	tag := l.LogSyslogTag
	if tag == "" {
		tag = conf.DefaultSyslogTag
	}
	network, addr := l.SyslogDial()
	w, err := syslog.Dial(network, addr, fac|syslog.LOG_INFO, tag)
	if err != nil {
		where := "the local syslog daemon (/dev/log)"
		if l.LogSyslogAddress != "" {
			where = l.LogSyslogAddress
		}
		return nil, nil, fmt.Errorf("global.log_target = \"syslog\": cannot reach %s: %w", where, err)
	}
	// The syslog header carries the time; the body need not repeat it.
	opts.ReplaceAttr = func(groups []string, a slog.Attr) slog.Attr {
		if len(groups) == 0 && a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}
	var h syslogHandler
	for i := range h.by {
		h.by[i] = formatHandler(l.LogFormat, severityWriter{w, i}, opts)
	}
	return h, w, nil
}

// CheckLogging reaches the log target l names and lets go of it, as `run`
// does before anything else: `sluice check` refuses a syslog that cannot
// be reached, which `run` (and a reload) would refuse.
func CheckLogging(l conf.Logging) error {
	_, c, err := logHandler(l, io.Discard, slog.LevelInfo)
	if c != nil {
		c.Close()
	}
	return err
}

func formatHandler(f conf.LogFormat, w io.Writer, opts *slog.HandlerOptions) slog.Handler {
	if f == conf.LogJSON {
		// Durations as the text format and the configuration write them
		// ("30s"), not as nanoseconds.
		o := *opts
		prev := o.ReplaceAttr
		o.ReplaceAttr = func(groups []string, a slog.Attr) slog.Attr {
			if prev != nil {
				a = prev(groups, a)
			}
			if a.Value.Kind() == slog.KindDuration {
				a.Value = slog.StringValue(a.Value.Duration().String())
			}
			return a
		}
		return slog.NewJSONHandler(w, &o)
	}
	return slog.NewTextHandler(w, opts)
}

// syslogHandler formats a record with one of four handlers, one per
// syslog severity, so that each line is sent with the severity of its
// level without parsing it back.
type syslogHandler struct{ by [4]slog.Handler }

func severityOf(l slog.Level) int {
	switch {
	case l < slog.LevelInfo:
		return 0
	case l < slog.LevelWarn:
		return 1
	case l < slog.LevelError:
		return 2
	}
	return 3
}

func (h syslogHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.by[0].Enabled(ctx, l)
}

func (h syslogHandler) Handle(ctx context.Context, r slog.Record) error {
	return h.by[severityOf(r.Level)].Handle(ctx, r)
}

func (h syslogHandler) WithAttrs(as []slog.Attr) slog.Handler {
	for i := range h.by {
		h.by[i] = h.by[i].WithAttrs(as)
	}
	return h
}

func (h syslogHandler) WithGroup(name string) slog.Handler {
	for i := range h.by {
		h.by[i] = h.by[i].WithGroup(name)
	}
	return h
}

// severityWriter sends each line a handler writes as one syslog message.
type severityWriter struct {
	w   *syslog.Writer
	sev int // severityOf
}

func (s severityWriter) Write(p []byte) (int, error) {
	m := string(bytes.TrimSuffix(p, []byte("\n")))
	var err error
	switch s.sev {
	case 0:
		err = s.w.Debug(m)
	case 1:
		err = s.w.Info(m)
	case 2:
		err = s.w.Warning(m)
	default:
		err = s.w.Err(m)
	}
	return len(p), err
}

// logSwitch is the master's handler, replaced when a reload changes the
// process log settings while control goroutines keep logging.
type logSwitch struct {
	cur    atomic.Pointer[slog.Handler]
	mu     sync.Mutex
	closer io.Closer
}

func newLogSwitch(h slog.Handler) *logSwitch {
	s := &logSwitch{}
	s.cur.Store(&h)
	return s
}

// set makes h the handler and closes the previous one's connection.
func (s *logSwitch) set(h slog.Handler, c io.Closer) {
	s.cur.Store(&h)
	s.mu.Lock()
	old := s.closer
	s.closer = c
	s.mu.Unlock()
	if old != nil {
		old.Close()
	}
}

// handler is a slog.Handler over whatever s holds at each record; With
// calls are replayed on it (the master logs a few lines a minute at most).
func (s *logSwitch) handler() slog.Handler { return switchHandler{s: s} }

type switchHandler struct {
	s   *logSwitch
	ops []func(slog.Handler) slog.Handler
}

func (h switchHandler) current() slog.Handler {
	c := *h.s.cur.Load()
	for _, op := range h.ops {
		c = op(c)
	}
	return c
}

func (h switchHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return (*h.s.cur.Load()).Enabled(ctx, l)
}

func (h switchHandler) Handle(ctx context.Context, r slog.Record) error {
	return h.current().Handle(ctx, r)
}

func (h switchHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return switchHandler{s: h.s, ops: append(h.ops[:len(h.ops):len(h.ops)], func(c slog.Handler) slog.Handler { return c.WithAttrs(as) })}
}

func (h switchHandler) WithGroup(name string) slog.Handler {
	return switchHandler{s: h.s, ops: append(h.ops[:len(h.ops):len(h.ops)], func(c slog.Handler) slog.Handler { return c.WithGroup(name) })}
}
