package engine

import (
	"sort"
	"strconv"
	"sync/atomic"

	"sluice/stats"
)

// counters lists, for the stats page and /metrics, the figures that have no
// column in the HAProxy-shaped tables. Each reads a live atomic.
func (e *Engine) counters() []stats.Counter {
	var out []stats.Counter
	add := func(name, help string, v *atomic.Uint64, labels ...[2]string) {
		out = append(out, stats.Counter{Name: name, Help: help, Labels: labels,
			Value: func() float64 { return float64(v.Load()) }})
	}
	for _, f := range e.Front.Frontends {
		fl := [2]string{"frontend", f.Name}
		add("frontend_proxy_errors_total", "Connections closed for a missing, bad, late or untrusted PROXY header.", &f.Counters.ProxyErrors, fl)
		add("frontend_proxy_unexpected_total", "Connections that began with a PROXY header on a frontend without accept_proxy.", &f.Counters.ProxyUnexpected, fl)
		if p := f.HTTP(); p != nil {
			c := &p.Counters
			for _, r := range []struct {
				code int
				v    *atomic.Uint64
			}{{400, &c.BadRequest}, {404, &c.NoRoute404}, {408, &c.Timeout408}, {431, &c.TooLarge431},
				{502, &c.BadGateway502}, {503, &c.NoServer503}, {504, &c.GatewayTime504}} {
				add("frontend_http_refused_total", "Requests sluice answered itself with an error status, by status.",
					r.v, fl, [2]string{"code", strconv.Itoa(r.code)})
			}
			add("frontend_http_too_many_headers_total", "Requests refused with 431 for more header lines than max_header_count.", &c.TooManyHeaders, fl)
		}
		if f.Mode == "udp" {
			u := &f.UDP
			add("frontend_udp_flows_evicted_total", "UDP flows ended to make room under max_flows.", &u.Evicted, fl)
			add("frontend_udp_flows_expired_total", "UDP flows ended after timeout_udp without a datagram.", &u.Expired, fl)
			add("frontend_udp_flows_moved_total", "UDP flows ended because their server went down.", &u.Moved, fl)
			add("frontend_udp_flows_completed_total", "UDP flows ended after `responses` replies.", &u.Completed, fl)
			add("frontend_udp_datagrams_in_total", "Datagrams from clients.", &u.DatagramsIn, fl)
			add("frontend_udp_datagrams_out_total", "Datagrams to clients.", &u.DatagramsOut, fl)
			add("frontend_udp_datagrams_dropped_total", "Client datagrams dropped (no server, send failed).", &u.Dropped, fl)
		}
	}
	names := make([]string, 0, len(e.Discovery))
	for n := range e.Discovery {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		d := &e.Discovery[n].Counters
		bl := [2]string{"backend", n}
		add("backend_dns_resolutions_total", "DNS answers applied to the pool.", &d.Resolutions, bl)
		add("backend_dns_failures_total", "DNS resolutions that failed; the last known servers were kept.", &d.Failures, bl)
		add("backend_dns_empty_total", "DNS answers without servers; the last known servers were kept.", &d.Empty, bl)
		add("backend_dns_changes_total", "Pool changes made by DNS discovery.", &d.Changes, bl)
		add("backend_dns_truncated_total", "DNS answers with more servers than max_servers.", &d.Truncated, bl)
	}
	if e.Peers != nil {
		c := &e.Peers.Counters
		add("peers_entries_sent_total", "Stick-table entries sent to peers.", &c.Sent)
		add("peers_entries_received_total", "Stick-table entries applied from peers.", &c.Received)
		add("peers_auth_failures_total", "Peer handshakes that failed authentication.", &c.AuthFailures)
		add("peers_entries_dropped_total", "Stick-table entries not sent because a queue was full.", &c.Dropped)
		add("peers_connects_total", "Successful connections to peers.", &c.Connects)
	}
	return out
}
