package stats

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"sluice/backend"
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

	build, procCur, procMax, procReloads, procWorkers *prometheus.Desc

	feCur, feMax, feLim, feTot, feRate, feIn, feOut, feDenied, feReqErr, feConnErr, feReq, feResp *prometheus.Desc

	beUp, beCur, beTot, beRate, beIn, beOut, beConnErr, beRespErr, beRetry, beResp *prometheus.Desc
	beQCur, beQMax, beQueued, beQTimeout, beNoServer, beWeight, beActive, beBackup *prometheus.Desc

	svUp, svStatus, svWeight, svConfWeight, svCur, svMax, svLim, svTot, svIn, svOut       *prometheus.Desc
	svConnErr, svRespErr, svRetry, svResp, svChkDur, svChkFail, svChkUpDown, svLastChange *prometheus.Desc
	svDowntime                                                                            *prometheus.Desc
}

var codeClasses = [6]string{"other", "1xx", "2xx", "3xx", "4xx", "5xx"}

// serverStates are the values of sluice_server_status's state label.
var serverStates = [4]string{"UP", "DOWN", "DRAIN", "MAINT"}

func newCollector(s *Server) *collector {
	fe := []string{"frontend"}
	be := []string{"backend"}
	sv := []string{"backend", "server"}
	d := func(name, help string, labels []string, extra ...string) *prometheus.Desc {
		return prometheus.NewDesc("sluice_"+name, help, append(append([]string{}, labels...), extra...), nil)
	}
	return &collector{
		s:           s,
		build:       d("build_info", "Version of the running sluice (value 1).", nil, "version"),
		procCur:     d("process_current_connections", "Connections open on all frontends.", nil),
		procMax:     d("process_max_connections", "global.maxconn: the process-wide connection cap.", nil),
		procReloads: d("process_reloads", "Reloads the master has done before this worker.", nil),
		procWorkers: d("process_workers", "Workers running.", nil),

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

		beUp:       d("backend_up", "1 when a server of the backend can take traffic.", be),
		beCur:      d("backend_current_sessions", "Connections open to the backend's servers now.", be),
		beTot:      d("backend_sessions_total", "Connections (http: requests) sent to the backend's servers.", be),
		beRate:     d("backend_current_session_rate", "Sessions per second, over the last second.", be),
		beIn:       d("backend_bytes_in_total", "Bytes sent to the backend's servers.", be),
		beOut:      d("backend_bytes_out_total", "Bytes received from the backend's servers.", be),
		beConnErr:  d("backend_connection_errors_total", "Failed connects to the backend's servers.", be),
		beRespErr:  d("backend_response_errors_total", "Responses that failed after the request was sent.", be),
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
		svStatus:     d("server_status", "Current state of the server: 1 for the state it is in (UP, DOWN, DRAIN, MAINT).", sv, "state"),
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

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	p := s.opt.Process
	gauge(c.build, 1, p.Version)
	gauge(c.procCur, float64(s.current()))
	gauge(c.procMax, float64(s.opt.MaxConn))
	gauge(c.procReloads, float64(p.Reloads.Load()))
	gauge(c.procWorkers, float64(p.Workers.Load()))

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
		if r.HTTP {
			counter(c.feReqErr, r.EReq, n)
			counter(c.feReq, r.ReqTot, n)
			for i, cl := range codeClasses {
				counter(c.feResp, r.Resp[i], n, cl)
			}
		}
	}

	now := time.Now()
	for _, b := range s.opt.Backends {
		isHTTP := b.Mode == "http"
		n := b.Name
		bc := &b.Counters
		var cur int64
		var tot, in, out, cerr, rerr, retr uint64
		var resp [6]uint64
		var weight, act, bck int64
		for _, sv := range b.Servers() {
			sc := &sv.Counters
			sn := sv.Name
			status, _ := serverStatus(sv)
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
			gauge(c.svUp, b2f(up), n, sn)
			for _, st := range serverStates {
				gauge(c.svStatus, b2f(len(status) >= len(st) && status[:len(st)] == st), n, sn, st)
			}
			gauge(c.svWeight, float64(sv.Weight()), n, sn)
			gauge(c.svConfWeight, float64(sv.ConfWeight), n, sn)
			gauge(c.svCur, float64(svCur), n, sn)
			gauge(c.svMax, float64(sc.MaxActive.Load()), n, sn)
			gauge(c.svLim, float64(sv.MaxConn), n, sn)
			counter(c.svTot, svTot, n, sn)
			counter(c.svIn, svIn, n, sn)
			counter(c.svOut, svOut, n, sn)
			counter(c.svConnErr, svCErr, n, sn)
			counter(c.svRespErr, svRErr, n, sn)
			counter(c.svRetry, svRetr, n, sn)
			if isHTTP {
				for i, cl := range codeClasses {
					v := sc.Resp[i].Load()
					resp[i] += v
					counter(c.svResp, v, n, sn, cl)
				}
			}
			if cr, ok := sv.LastCheck(); ok {
				gauge(c.svChkDur, cr.Duration.Seconds(), n, sn)
			}
			counter(c.svChkFail, sv.ChecksFailed(), n, sn)
			counter(c.svChkUpDown, sc.Downs.Load(), n, sn)
			gauge(c.svLastChange, now.Sub(sv.LastChange()).Seconds(), n, sn)
			ch <- prometheus.MustNewConstMetric(c.svDowntime, prometheus.CounterValue, sv.Downtime().Seconds(), n, sn)
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
			for i, cl := range codeClasses {
				counter(c.beResp, resp[i], n, cl)
			}
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
