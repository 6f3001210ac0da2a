package conf

import (
	"net"
	"strconv"
	"time"
)

// Defaults of the UDP and DNS discovery keys.
const (
	DefaultTimeoutUDP = 30 * time.Second
	// DefaultMaxFlowsPerSource is far above what one host normally holds
	// (a stub resolver, a syslog sender, a NAT gateway of a small site),
	// and low enough that one address cannot take a flow budget alone.
	// nginx and HAProxy have no per-source default (limit_conn, stick
	// tables are opt-in); a flow here costs a descriptor, so one is on.
	DefaultMaxFlowsPerSource = 256
	DefaultDNSInterval       = 10 * time.Second
	DefaultDNSTimeout        = 2 * time.Second
	DefaultDNSMaxServers     = 64
	// MinDNSInterval keeps a typo like "1ms" from turning discovery into a
	// flood of queries.
	MinDNSInterval = 10 * time.Millisecond
)

// udpFrontend checks and fills the keys of a udp frontend.
func (v *validator) udpFrontend(p string, rf *rawFrontend, f *Frontend, defUDP time.Duration) {
	f.TimeoutUDP = v.dur(p+".timeout_udp", rf.TimeoutUDP, defUDP)
	f.MaxFlows = intOr(rf.MaxFlows, 0)
	v.count(p+".max_flows", f.MaxFlows, 0, MaxCount, "UDP flows at once; 0 or unset: a share of the file descriptor limit")
	f.MaxFlowsPerSource = intOr(rf.MaxFlowsPerSource, DefaultMaxFlowsPerSource)
	v.count(p+".max_flows_per_source", f.MaxFlowsPerSource, 0, MaxCount, "UDP flows of one address at once; 0 turns the cap off")
	if rf.MaxFlowsPerSource != nil && rf.Mode.val != ModeUDP {
		v.errf(p+".max_flows_per_source", "caps UDP flows and needs mode = \"udp\"; remove it from this frontend (mode %q)", rf.Mode.val)
	}
	if f.Mode == ModeUDP && f.TimeoutUDP == 0 {
		v.errf(p+".timeout_udp", "must be more than 0: a UDP flow only ends by going idle (or by responses)")
	}
}

// udpBackend checks and fills the keys of a udp backend.
func (v *validator) udpBackend(p string, rb *rawBackend, b *Backend) {
	b.TimeoutUDP = v.dur(p+".timeout_udp", rb.TimeoutUDP, 0)
	b.Responses = intOr(rb.Responses, 0)
	v.count(p+".responses", b.Responses, 0, MaxCount, "replies that end a flow; 0: a flow ends only when idle")
}

// dns checks a [backend.NAME.dns] section.
func (v *validator) dns(dp string, r *rawDNS) *DNS {
	d := &DNS{
		Name:       r.Name,
		Resolvers:  append([]string(nil), r.Resolvers...),
		Interval:   v.dur(dp+".interval", r.Interval, DefaultDNSInterval),
		Port:       r.Port,
		Timeout:    v.dur(dp+".timeout", r.Timeout, DefaultDNSTimeout),
		MaxServers: intOr(r.MaxServers, DefaultDNSMaxServers),
	}
	if d.Name == "" {
		v.errf(dp+".name", "dns discovery needs a name to resolve, like \"_http._tcp.api.service.consul.\" (SRV) or \"api.internal.\" with port")
	}
	if d.Port < 0 || d.Port > 65535 {
		v.errf(dp+".port", "%d is not a port; use 1 to 65535 (A/AAAA names), or leave it out for an SRV name", d.Port)
	}
	if d.Interval < MinDNSInterval {
		v.errf(dp+".interval", "must be at least %s, got %s", MinDNSInterval, d.Interval)
	}
	if d.Timeout <= 0 {
		v.errf(dp+".timeout", "must be more than 0")
	}
	v.count(dp+".max_servers", d.MaxServers, 1, 100000, "discovered servers kept; each may hold connections and a health check")
	for i, res := range d.Resolvers {
		host, port, err := net.SplitHostPort(res)
		if err != nil {
			host, port = res, "53"
		}
		if net.ParseIP(host) == nil {
			v.errf(dp+".resolvers", "entry %d: %q is not an IP address with an optional port, like \"127.0.0.1:8600\"", i+1, res)
			continue
		}
		if _, err := strconv.ParseUint(port, 10, 16); err != nil {
			v.errf(dp+".resolvers", "entry %d: %q has a bad port", i+1, res)
			continue
		}
		d.Resolvers[i] = net.JoinHostPort(host, port)
	}
	return d
}

// udpModeChecks runs once a backend's mode is settled by the frontends
// that use it.
func (v *validator) udpModeChecks(b *Backend) {
	p := "backend." + b.Name
	if b.Mode == ModeUDP && b.SendProxy == ProxyV1 {
		v.errf(p+".send_proxy", "PROXY v1 is text for TCP only; a udp backend can send \"v2\", put before each datagram")
	}
	if b.Mode != ModeUDP && b.Responses > 0 {
		v.errf(p+".responses", "responses counts UDP replies and needs a udp backend, not %s", b.Mode)
	}
}
