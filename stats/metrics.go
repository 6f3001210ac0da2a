package stats

import (
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"

	"sluice/backend"
	"sluice/conf"
	"sluice/internal/memtrim"
	"sluice/l7"
)

// newRegistry is the explicit registry behind /metrics: the sluice
// collector plus the Go runtime and process collectors.
func newRegistry(s *Server) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		newCollector(s),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return reg
}

func (s *Server) metricsHandler() http.Handler {
	return promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{
		ErrorLog:      slogErrorLog{s},
		ErrorHandling: promhttp.ContinueOnError,
	})
}

type slogErrorLog struct{ s *Server }

func (l slogErrorLog) Println(v ...any) { l.s.log.Warn("metrics", "err", v) }

// collector reads the live counters at scrape time; nothing on the data
// path touches Prometheus. Names and labels mirror HAProxy's built-in
// exporter (haproxy_frontend_current_sessions → sluice_frontend_current_sessions…).
type collector struct {
	s *Server

	mu     sync.Mutex
	labels map[any]*labelSet // label pairs by *backend.Server

	build, procCur, procMax, procReloads, procWorkers, procTrims *prometheus.Desc

	feCur, feMax, feLim, feTot, feRate, feIn, feOut, feDenied, feReqErr, feConnErr, feReq, feResp *prometheus.Desc

	polDenied, polRedirected, polTarpitted, polLimited, polConnDenied, polConnLimited, rateClients, rateEvicted *prometheus.Desc

	beUp, beCur, beTot, beRate, beIn, beOut, beConnErr, beRespErr, beRetry, beResp *prometheus.Desc
	beCliAbrt, beSrvAbrt, svCliAbrt, svSrvAbrt                                     *prometheus.Desc
	beQCur, beQMax, beQueued, beQTimeout, beNoServer, beWeight, beActive, beBackup *prometheus.Desc

	svUp, svAdmin, svWeight, svConfWeight, svCur, svMax, svLim, svTot, svIn, svOut        *prometheus.Desc
	svConnErr, svRespErr, svRetry, svResp, svChkDur, svChkFail, svChkUpDown, svLastChange *prometheus.Desc
	svDowntime                                                                            *prometheus.Desc

	tlsHandshakes, tlsFailures *prometheus.Desc

	extra extraDescs
}

// codeClasses name the code label of Resp[i]; the loops go 1xx … 5xx then
// "other", the order the registry sorts them in, so its sort has no work.
var codeClasses = [6]string{"other", "1xx", "2xx", "3xx", "4xx", "5xx"}

var classOrder = [6]int{1, 2, 3, 4, 5, 0}

func newCollector(s *Server) *collector {
	fe := []string{"frontend"}
	be := []string{"backend"}
	sv := []string{"backend", "server"}
	d := func(name, help string, labels []string, extra ...string) *prometheus.Desc {
		return prometheus.NewDesc("sluice_"+name, help, append(append([]string{}, labels...), extra...), nil)
	}
	return &collector{
		s:           s,
		labels:      map[any]*labelSet{},
		build:       d("build_info", "Version of the running sluice (value 1).", nil, "version"),
		procCur:     d("process_current_connections", "Connections open on all frontends.", nil),
		procMax:     d("process_max_connections", "global.maxconn: the process-wide connection cap.", nil),
		procReloads: d("process_reloads", "Reloads the master has done before this worker.", nil),
		procWorkers: d("process_workers", "Workers running.", nil),
		procTrims:   d("process_memory_trims_total", "Times the worker gave the memory a burst left behind back to the OS once traffic calmed.", nil),

		feCur:     d("frontend_current_sessions", "Connections open now.", fe),
		feMax:     d("frontend_max_sessions", "Most connections open at once.", fe),
		feLim:     d("frontend_limit_sessions", "The frontend's maxconn (0: only the global cap).", fe),
		feTot:     d("frontend_sessions_total", "Connections accepted.", fe),
		feRate:    d("frontend_current_session_rate", "Connections accepted per second, over the last second.", fe),
		feIn:      d("frontend_bytes_in_total", "Bytes received from clients.", fe),
		feOut:     d("frontend_bytes_out_total", "Bytes sent to clients.", fe),
		feDenied:  d("frontend_requests_denied_total", "Connections refused before reaching a server.", fe),
		feReqErr:  d("frontend_request_errors_total", "Malformed, too slow or too large HTTP requests.", fe),
		feConnErr: d("frontend_connection_errors_total", "Connections whose server could not be reached after retries.", fe),
		feReq:     d("frontend_http_requests_total", "HTTP requests received.", fe),
		feResp:    d("frontend_http_responses_total", "HTTP responses by status class.", fe, "code"),

		polDenied:      d("frontend_policy_denied_total", "HTTP requests denied by a rule ([[frontend.NAME.rule]] action deny).", fe),
		polRedirected:  d("frontend_policy_redirected_total", "HTTP requests answered with a redirect by a rule.", fe),
		polTarpitted:   d("frontend_policy_tarpitted_total", "Requests and connections held by a tarpit (a rule, or rate_limit.action = \"tarpit\"), then denied.", fe),
		polLimited:     d("frontend_policy_rate_limited_total", "HTTP requests refused over rate_limit.requests (429).", fe),
		polConnDenied:  d("frontend_policy_conn_denied_total", "Connections closed at accept by a rule (tcp mode).", fe),
		polConnLimited: d("frontend_policy_conn_limited_total", "Connections closed at accept over rate_limit.connections or connection_rate.", fe),
		rateClients:    d("frontend_rate_clients", "Clients the rate limit's table tracks now (at most table_size).", fe),
		rateEvicted:    d("frontend_rate_evicted_total", "Clients evicted from the rate limit's table to keep table_size.", fe),

		tlsHandshakes: d("frontend_tls_handshakes_total", "TLS handshakes completed with clients.", fe),
		tlsFailures: d("frontend_tls_handshake_failures_total", "TLS handshakes with clients that failed, by reason: no_cert (client_auth required, none sent), bad_cert, unknown_ca, revoked (crl_file), expired, protocol (no common version or cipher, a bad record, an alert from the client), timeout, other (the connection ended).",
			fe, "reason"),

		beUp:       d("backend_up", "1 when a server of the backend can take traffic.", be),
		beCur:      d("backend_current_sessions", "Connections open to the backend's servers now.", be),
		beTot:      d("backend_sessions_total", "Connections (http: requests) sent to the backend's servers.", be),
		beRate:     d("backend_current_session_rate", "Sessions per second, over the last second.", be),
		beIn:       d("backend_bytes_in_total", "Bytes sent to the backend's servers.", be),
		beOut:      d("backend_bytes_out_total", "Bytes received from the backend's servers.", be),
		beConnErr:  d("backend_connection_errors_total", "Failed connects to the backend's servers.", be),
		beRespErr:  d("backend_response_errors_total", "Responses that failed after the request was sent.", be),
		beCliAbrt:  d("backend_client_aborts_total", "HTTP exchanges the client ended before its response was through (left, reset its stream, stopped reading): HAProxy's cli_abrt.", be),
		beSrvAbrt:  d("backend_server_aborts_total", "HTTP responses the server broke off in their body: HAProxy's srv_abrt.", be),
		beRetry:    d("backend_retry_warnings_total", "Connects retried after failing.", be),
		beResp:     d("backend_http_responses_total", "HTTP responses by status class.", be, "code"),
		beQCur:     d("backend_current_queue", "Connections waiting for a free server slot now.", be),
		beQMax:     d("backend_max_queue", "Longest the queue has been.", be),
		beQueued:   d("backend_queued_total", "Connections that had to wait in the queue.", be),
		beQTimeout: d("backend_queue_timeouts_total", "Connections refused after queue_timeout.", be),
		beNoServer: d("backend_no_server_total", "Connections refused because no server was available.", be),
		beWeight:   d("backend_weight", "Total effective weight of the servers in service.", be),
		beActive:   d("backend_active_servers", "Primary servers in service.", be),
		beBackup:   d("backend_backup_servers", "Backup servers in service.", be),

		svUp:         d("server_up", "1 when health checks report the server up.", sv),
		svAdmin:      d("server_admin_state", "Admin state set by an operator: 0 ready, 1 drain, 2 maint.", sv),
		svWeight:     d("server_weight", "Effective weight.", sv),
		svConfWeight: d("server_configured_weight", "Weight from the configuration file.", sv),
		svCur:        d("server_current_sessions", "Connections open now.", sv),
		svMax:        d("server_max_sessions", "Most connections open at once.", sv),
		svLim:        d("server_limit_sessions", "The server's maxconn (0: no limit).", sv),
		svTot:        d("server_sessions_total", "Connections (http: requests) sent to the server.", sv),
		svIn:         d("server_bytes_in_total", "Bytes sent to the server.", sv),
		svOut:        d("server_bytes_out_total", "Bytes received from the server.", sv),
		svConnErr:    d("server_connection_errors_total", "Failed connects.", sv),
		svRespErr:    d("server_response_errors_total", "Responses that failed after the request was sent.", sv),
		svCliAbrt:    d("server_client_aborts_total", "HTTP exchanges the client ended before its response was through (left, reset its stream, stopped reading): HAProxy's cli_abrt.", sv),
		svSrvAbrt:    d("server_server_aborts_total", "HTTP responses the server broke off in their body: HAProxy's srv_abrt.", sv),
		svRetry:      d("server_retry_warnings_total", "Connects retried elsewhere after failing here.", sv),
		svResp:       d("server_http_responses_total", "HTTP responses by status class.", sv, "code"),
		svChkDur:     d("server_check_duration_seconds", "Duration of the last health check.", sv),
		svChkFail:    d("server_check_failures_total", "Failed health checks.", sv),
		svChkUpDown:  d("server_check_up_down_total", "Up to down transitions.", sv),
		svLastChange: d("server_check_last_change_seconds", "Seconds since the last up/down change.", sv),
		svDowntime:   d("server_downtime_seconds_total", "Time spent down.", sv),
	}
}

// Describe sends nothing: the set of series changes with the servers
// (DNS discovery), so the collector is unchecked.
func (c *collector) Describe(chan<- *prometheus.Desc) {}

// sample is a metric whose label pairs are built once per server and
// shared by all its series (MustNewConstMetric would build and sort them
// for every series, most of a scrape's cost with a thousand servers).
type sample struct {
	desc    *prometheus.Desc
	labels  []*dto.LabelPair // sorted by name; never modified once built
	value   float64
	counter bool
}

func (m *sample) Desc() *prometheus.Desc { return m.desc }

func (m *sample) Write(out *dto.Metric) error {
	out.Label = m.labels
	v := m.value
	if m.counter {
		out.Counter = &dto.Counter{Value: &v}
	} else {
		out.Gauge = &dto.Gauge{Value: &v}
	}
	return nil
}

// labelSet is the label pairs of one frontend, backend or server, and the
// same with each code class added.
type labelSet struct {
	base []*dto.LabelPair
	code [6][]*dto.LabelPair
}

// labelsFor returns the label pairs for the names and values (names in
// sorted order), cached under key.
func (c *collector) labelsFor(key any, pairs ...string) *labelSet {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ls, ok := c.labels[key]; ok {
		return ls
	}
	mk := func(extra ...string) []*dto.LabelPair {
		all := append(append([]string{}, pairs...), extra...)
		out := make([]*dto.LabelPair, 0, len(all)/2)
		for i := 0; i < len(all); i += 2 {
			out = append(out, &dto.LabelPair{Name: proto.String(all[i]), Value: proto.String(all[i+1])})
		}
		sort.Slice(out, func(i, j int) bool { return out[i].GetName() < out[j].GetName() })
		return out
	}
	ls := &labelSet{base: mk()}
	for i, cl := range codeClasses {
		ls.code[i] = mk("code", cl)
	}
	c.labels[key] = ls
	return ls
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	c.mu.Lock()
	if len(c.labels) > 4*(len(s.opt.Frontends)+len(s.opt.Backends)+1024) {
		c.labels = map[any]*labelSet{} // servers come and go with DNS: start afresh now and then
	}
	c.mu.Unlock()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	g := func(d *prometheus.Desc, ls []*dto.LabelPair, v float64) {
		ch <- &sample{desc: d, labels: ls, value: v}
	}
	cnt := func(d *prometheus.Desc, ls []*dto.LabelPair, v uint64) {
		ch <- &sample{desc: d, labels: ls, value: float64(v), counter: true}
	}
	p := s.opt.Process
	c.extra.collect(s.opt.Counters, ch)
	s.collectBGP(ch)
	gauge(c.build, 1, p.Version)
	gauge(c.procCur, float64(s.current()))
	gauge(c.procMax, float64(s.opt.MaxConn))
	gauge(c.procReloads, float64(p.Reloads.Load()))
	gauge(c.procWorkers, float64(p.Workers.Load()))
	cnt(c.procTrims, nil, memtrim.Trims())

	for _, f := range s.opt.Frontends {
		r := s.frontendRow(f)
		n := f.Name
		gauge(c.feCur, float64(r.SCur), n)
		gauge(c.feMax, float64(r.SMax), n)
		gauge(c.feLim, float64(r.SLim), n)
		counter(c.feTot, r.STot, n)
		gauge(c.feRate, float64(r.Rate), n)
		counter(c.feIn, r.BytesIn, n)
		counter(c.feOut, r.BytesOut, n)
		counter(c.feDenied, r.DReq, n)
		counter(c.feConnErr, r.ECon, n)
		if p := r.Policy; p != nil {
			counter(c.polDenied, p.Denied, n)
			counter(c.polRedirected, p.Redirected, n)
			counter(c.polTarpitted, p.Tarpitted, n)
			counter(c.polLimited, p.RateLimited, n)
			counter(c.polConnDenied, p.ConnDenied, n)
			counter(c.polConnLimited, p.ConnLimited, n)
			if p.RateLimit {
				gauge(c.rateClients, float64(p.RateClients), n)
				counter(c.rateEvicted, p.RateEvicted, n)
			}
		}
		if h := r.TLS; h != nil {
			counter(c.tlsHandshakes, h.Handshakes, n)
			for _, reason := range l7.HandshakeReasons {
				counter(c.tlsFailures, h.Failures[reason], n, reason)
			}
		}
		if r.HTTP {
			counter(c.feReqErr, r.EReq, n)
			counter(c.feReq, r.ReqTot, n)
			for _, i := range classOrder {
				counter(c.feResp, r.Resp[i], n, codeClasses[i])
			}
		}
	}

	now := time.Now()
	for _, b := range s.opt.Backends {
		isHTTP := b.Mode == conf.ModeHTTP
		n := b.Name
		bc := &b.Counters
		var cur int64
		var tot, in, out, cerr, rerr, retr, cabrt, sabrt uint64
		var resp [6]uint64
		var weight, act, bck int64
		for _, sv := range b.Servers() {
			sc := &sv.Counters
			sn := sv.Name
			up := sv.Up()
			svCur := sv.Active()
			svTot := sc.Sessions.Load()
			svIn, svOut := sc.BytesIn.Load(), sc.BytesOut.Load()
			svCErr, svRErr, svRetr := sc.ConnErrors.Load(), sc.RespErrors.Load(), sc.Retries.Load()
			cur += svCur
			tot += svTot
			in += svIn
			out += svOut
			cerr += svCErr
			rerr += svRErr
			retr += svRetr
			if up && sv.Admin() == backend.AdminReady {
				weight += int64(sv.Weight())
				if sv.Backup {
					bck++
				} else {
					act++
				}
			}
			ls := c.labelsFor(sv, "backend", n, "server", sn)
			l := ls.base
			g(c.svUp, l, b2f(up))
			g(c.svAdmin, l, float64(sv.Admin()))
			g(c.svWeight, l, float64(sv.Weight()))
			g(c.svConfWeight, l, float64(sv.ConfWeight))
			g(c.svCur, l, float64(svCur))
			g(c.svMax, l, float64(sc.MaxActive.Load()))
			g(c.svLim, l, float64(sv.MaxConn))
			cnt(c.svTot, l, svTot)
			cnt(c.svIn, l, svIn)
			cnt(c.svOut, l, svOut)
			cnt(c.svConnErr, l, svCErr)
			cnt(c.svRespErr, l, svRErr)
			cnt(c.svRetry, l, svRetr)
			collectTLSErrors(ch, b, sv)
			if isHTTP {
				for _, i := range classOrder {
					v := sc.Resp[i].Load()
					resp[i] += v
					cnt(c.svResp, ls.code[i], v)
				}
				ca, sa := sc.ClientAborts.Load(), sc.ServerAborts.Load()
				cabrt += ca
				sabrt += sa
				cnt(c.svCliAbrt, l, ca)
				cnt(c.svSrvAbrt, l, sa)
			}
			if cr, ok := sv.LastCheck(); ok {
				g(c.svChkDur, l, cr.Duration.Seconds())
			}
			cnt(c.svChkFail, l, sv.ChecksFailed())
			cnt(c.svChkUpDown, l, sc.Downs.Load())
			g(c.svLastChange, l, now.Sub(sv.LastChange()).Seconds())
			ch <- &sample{desc: c.svDowntime, labels: l, value: sv.Downtime().Seconds(), counter: true}
		}
		rate, _ := s.rates.get(b)
		gauge(c.beUp, b2f(act+bck > 0), n)
		gauge(c.beCur, float64(cur), n)
		counter(c.beTot, tot, n)
		gauge(c.beRate, float64(rate), n)
		counter(c.beIn, in, n)
		counter(c.beOut, out, n)
		counter(c.beConnErr, cerr, n)
		counter(c.beRespErr, rerr, n)
		counter(c.beRetry, retr, n)
		if isHTTP {
			for _, i := range classOrder {
				counter(c.beResp, resp[i]+bc.Resp[i].Load(), n, codeClasses[i])
			}
			counter(c.beCliAbrt, cabrt, n)
			counter(c.beSrvAbrt, sabrt, n)
		}
		gauge(c.beQCur, float64(bc.Queue.Load()), n)
		gauge(c.beQMax, float64(bc.MaxQueue.Load()), n)
		counter(c.beQueued, bc.Queued.Load(), n)
		counter(c.beQTimeout, bc.QueueTimeouts.Load(), n)
		counter(c.beNoServer, bc.NoServer.Load(), n)
		gauge(c.beWeight, float64(weight), n)
		gauge(c.beActive, float64(act), n)
		gauge(c.beBackup, float64(bck), n)
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
