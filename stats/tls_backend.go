package stats

import (
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"sluice/backend"
)

// Failed TLS handshakes with servers ([backend.NAME.tls]), by reason: the
// stats page shows their total beside the connection errors (each is one
// of them) with the reasons in its title, /api/stats the reasons, /metrics
// sluice_server_tls_errors_total{backend,server,reason}.

var svTLSErrDesc = prometheus.NewDesc("sluice_server_tls_errors_total",
	"Failed TLS handshakes with the server ([backend.NAME.tls]), by reason; each is also a failed connect.",
	[]string{"backend", "server", "reason"}, nil)

// tlsErrors fills r's TLS error counts of server sv.
func tlsErrors(r *Row, b *backend.Backend, sv *backend.Server) {
	if b.TLS == nil {
		return
	}
	r.TLSErrors = map[string]uint64{}
	for i, name := range backend.TLSReasonNames {
		v := sv.Counters.TLSErrors[i].Load()
		r.TLSErrors[name] = v
		r.TLSErr += v
	}
}

// collectTLSErrors sends the TLS error counters of b's servers (b with TLS
// only: a plain backend has no such series).
func collectTLSErrors(ch chan<- prometheus.Metric, b *backend.Backend, sv *backend.Server) {
	if b.TLS == nil {
		return
	}
	for i, name := range backend.TLSReasonNames {
		ch <- prometheus.MustNewConstMetric(svTLSErrDesc, prometheus.CounterValue,
			float64(sv.Counters.TLSErrors[i].Load()), b.Name, sv.Name, name)
	}
}

// TLSErrTitle lists a row's TLS errors by reason, for the page.
func (r Row) TLSErrTitle() string {
	var b strings.Builder
	b.WriteString("failed TLS handshakes:")
	for _, name := range backend.TLSReasonNames {
		if v := r.TLSErrors[name]; v > 0 {
			b.WriteString(" " + name + " " + strconv.FormatUint(v, 10))
		}
	}
	return b.String()
}
