package engine

import (
	"sort"
	"strconv"
	"sync/atomic"

	"sluice/conf"
	"sluice/l4"
	"sluice/l7"
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
	gauge := func(name, help string, v func() float64, labels ...[2]string) {
		out = append(out, stats.Counter{Name: name, Help: help, Labels: labels, Gauge: true, Value: v})
	}
	// The node's own state: what global.track_file and /healthz follow.
	node := e.Node
	gauge("node_maint", "1 while the node is in maintenance (sluice ctl set node maint): it serves what reaches it but asks keepalived (track_file), /healthz and check --live to send traffic elsewhere.",
		func() float64 { return b2f(node.Maint()) })
	gauge("track_file_fault", "1 while this node cannot serve (node in maintenance, or a vital frontend without a server up): what the master writes to global.track_file while this worker runs.",
		func() float64 { return b2f(e.Unserved() != "") })
	// The descriptor budget (fdlimit.Plan): what accept and the flows of
	// udp frontends may hold.
	fds := e.FDs
	gauge("process_fd_limit", "The file descriptor limit (RLIMIT_NOFILE) the budget is shared from; 0 when unknown.",
		func() float64 { return float64(fds.Limit) })
	gauge("process_fd_maxconn_share", "Descriptors kept for connections: 2 per global.maxconn.",
		func() float64 { return 2 * float64(fds.MaxConn) })
	gauge("process_fd_reserve", "Descriptors kept for listeners, health checks, stats connections, logs and the like.",
		func() float64 { return float64(fds.Reserved()) })
	gauge("process_fd_flows_share", "Descriptors UDP flows may hold: the sum of the max_flows of udp frontends.",
		func() float64 { return float64(fds.FlowsTotal()) })
	sc := e.Front.ServerConns()
	gauge("process_server_conns", "Server connections open now (pooled or in use, every mode): each holds a slot of global.maxconn's budget.",
		func() float64 { return float64(sc.Open()) })
	gauge("process_server_conns_limit", "The most server connections the process opens at once (global.maxconn); 0: no limit.",
		func() float64 { return float64(sc.Max()) })
	add("l4_loop_panics_total", "Shared relay loops (an epoll relay loop, a UDP listener's reader) that recovered from a panic and went on: a bug, logged with where; the connection or datagram it cost is in frontend_panics_total.", &l4.LoopPanics)
	add("l7_http2_fast_loop_panics_total", "Recoveries of the HTTP/2 fast path's epoll loop from a panic: a bug, logged with where; the loop goes on.", &l7.FastLoopPanics)
	add("l4_loop_errors_total", "Failures of the epoll relay's loops, handled without a panic: a start that failed (tcp is then relayed with goroutines), a connection epoll would not register (relayed with goroutines), a later epoll_ctl (its connection closed) or epoll_wait failure.", &l4.LoopErrors)
	e.acmeCounters(add, gauge)
	for _, f := range e.Front.Frontends {
		fl := [2]string{"frontend", f.Name}
		add("frontend_proxy_errors_total", "Connections closed for a missing, bad, late or untrusted PROXY header.", &f.Counters.ProxyErrors, fl)
		add("frontend_proxy_unexpected_total", "Connections that began with a PROXY header on a frontend without accept_proxy.", &f.Counters.ProxyUnexpected, fl)
		add("frontend_panics_total", "Connections (TCP relays, HTTP/2 streams, UDP flows and datagrams) closed or dropped because serving them panicked: a bug, logged with where.", &f.Counters.Panics, fl)
		if p := f.HTTP(); p != nil {
			c := &p.Counters
			for _, r := range []struct {
				code int
				v    *atomic.Uint64
			}{{400, &c.BadRequest}, {404, &c.NoRoute404}, {408, &c.Timeout408}, {431, &c.TooLarge431},
				{502, &c.BadGateway502}, {503, &c.Unavailable503}, {504, &c.GatewayTime504}} {
				add("frontend_http_refused_total", "Requests sluice answered itself with an error status, by status.",
					r.v, fl, [2]string{"code", strconv.Itoa(r.code)})
			}
			add("frontend_http_server_conns_exhausted_total", "Requests answered 503 because the process's server connections (global.maxconn) were all in use; also in refused_total{code=\"503\"}.",
				&c.NoServerConn503, fl)
			add("frontend_http_too_many_headers_total", "Requests refused with 431 for more header lines than max_header_count.", &c.TooManyHeaders, fl)
			add("frontend_http2_refused_streams_total", "HTTP/2 streams refused (REFUSED_STREAM) past 100 concurrent streams on a connection.", &c.H2Refused, fl)
			add("frontend_http_slot_waits_total", "HTTP/1 client connections that had a request ready but waited, with no goroutine and no buffer, for one of the process's slots for connections being worked on (past it, clients take turns).",
				&c.SlotWaits, fl)
			add("frontend_http2_fast_streams_total", "HTTP/2 streams answered with no goroutine of their own (a request without a body to an HTTP/1.1 server with an idle pooled connection, a response whole in one read); the others took a stream goroutine.", &c.H2Fast, fl)
			add("frontend_http2_streams_after_goaway_total", "HTTP/2 streams a client opened past a drain's final GOAWAY (reload, stop): not processed, nothing sent to a server; the client may send them again on a new connection (RFC 9113 §6.8).", &c.H2AfterGoAway, fl)
			add("frontend_http2_calm_total", "HTTP/2 connections ended with ENHANCE_YOUR_CALM (rapid reset, CONTINUATION or control-frame flood).", &c.H2Calm, fl)
		}
		if f.Mode == conf.ModeTCP {
			add("frontend_tcp_server_conns_exhausted_total", "TCP connections closed because the process's server connections (global.maxconn) were all in use.",
				&f.Counters.ServerConnsExhausted, fl)
			add("frontend_tcp_loop_connections_total", "TCP connections accepted and connected to their server by an epoll loop (plain tcp frontends); the others took the goroutine path (a connection cap reached, a queue, accept_proxy, send_proxy).",
				&f.Counters.LoopConnections, fl)
		}
		if f.Mode == conf.ModeUDP {
			u := &f.UDP
			add("frontend_udp_flows_evicted_total", "UDP flows ended to make room under max_flows.", &u.Evicted, fl)
			add("frontend_udp_flows_expired_total", "UDP flows ended after timeout_udp without a datagram.", &u.Expired, fl)
			add("frontend_udp_flows_moved_total", "UDP flows ended because their server went down.", &u.Moved, fl)
			add("frontend_udp_flows_completed_total", "UDP flows ended after `responses` replies.", &u.Completed, fl)
			add("frontend_udp_datagrams_in_total", "Datagrams from clients.", &u.DatagramsIn, fl)
			add("frontend_udp_datagrams_out_total", "Datagrams to clients.", &u.DatagramsOut, fl)
			add("frontend_udp_datagrams_dropped_total", "Client datagrams dropped (no server, flow refused, send failed).", &u.Dropped, fl)
			for _, r := range []struct {
				reason string
				v      *atomic.Uint64
			}{{"per_source", &u.RefusedSource}, {"max_flows", &u.RefusedFull}, {"no_socket", &u.RefusedSocket}} {
				add("frontend_udp_flows_refused_total", "New UDP flows refused (datagram dropped), by reason: the source held max_flows_per_source, max_flows full with nothing to evict, no socket.",
					r.v, fl, [2]string{"reason", r.reason})
			}
			if p := f.UDPProxy(); p != nil {
				gauge("frontend_udp_flows", "UDP flows open now (one socket each).", func() float64 { return float64(p.Flows()) }, fl)
				gauge("frontend_udp_flows_limit", "max_flows: the most flows (sockets) the frontend holds; 0: no limit.",
					func() float64 { return float64(p.MaxFlows()) }, fl)
			}
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
		add("peers_refused_total", "Connections to peers.bind closed at once: too many were waiting to authenticate (in all, or from one address that is no peer).", &c.Refused)
		add("peers_rates_sent_total", "Rate-limit increments (one client, one period) sent to peers, for rate limits with shared = true.", &c.RatesSent)
		add("peers_rates_received_total", "Rate-limit increments from peers added to this node's shared rate limits.", &c.RatesReceived)
		add("peers_rates_dropped_total", "Rate-limit increments not sent: a peer's queue was full (peer down or slow) or the peer speaks protocol 1 (an older sluice).", &c.RatesDropped)
		add("peers_rates_ignored_total", "Rate-limit increments from peers for a frontend without a shared rate_limit on this node.", &c.RatesIgnored)
	}
	out = append(out, e.certCounters()...) // tls_ocsp.go
	return out
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
