package conf

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// Raw decoding targets: durations stay strings here so that validation can
// report each bad one with its key instead of stopping at the first.
type rawFile struct {
	Global   rawGlobal              `toml:"global"`
	Defaults rawDefaults            `toml:"defaults"`
	Stats    rawStats               `toml:"stats"`
	Frontend map[string]rawFrontend `toml:"frontend"`
	Backend  map[string]rawBackend  `toml:"backend"`
	Peers    rawPeers               `toml:"peers"`
	ACME     *rawACME               `toml:"acme"` // acme.go
	BGP      rawBGP                 `toml:"bgp"`
}

type rawGlobal struct {
	MaxConn        *int     `toml:"maxconn"`
	HardStopAfter  string   `toml:"hard_stop_after"`
	ControlSocket  string   `toml:"control_socket"`
	PIDFile        string   `toml:"pid_file"`
	VitalFrontends []string `toml:"vital_frontends"`
	TrackFile      string   `toml:"track_file"`
	StopGrace      string   `toml:"stop_grace"`
	GCHeapFloor    *int     `toml:"gc_heap_floor"`
	rawLog                  // log_* keys (logging.go)
}

type rawDefaults struct {
	TimeoutConnect     string `toml:"timeout_connect"`
	TimeoutClient      string `toml:"timeout_client"`
	TimeoutServer      string `toml:"timeout_server"`
	TimeoutHTTPRequest string `toml:"timeout_http_request"`
	TimeoutProxyHeader string `toml:"timeout_proxy_header"`
	TimeoutTunnel      string `toml:"timeout_tunnel"`
	Retries            *int   `toml:"retries"`
	MaxConn            *int   `toml:"maxconn"`
	QueueTimeout       string `toml:"queue_timeout"`
	TimeoutUDP         string `toml:"timeout_udp"`
}

type rawStats struct {
	Bind           string `toml:"bind"`
	AdminTokenFile string `toml:"admin_token_file"`
	MaxConn        *int   `toml:"maxconn"`
}

type rawFrontend struct {
	Mode               rawMode    `toml:"mode"`
	Bind               []string   `toml:"bind"`
	AcceptProxy        bool       `toml:"accept_proxy"`
	DeferAccept        *bool      `toml:"defer_accept"`
	ProxyTrusted       []string   `toml:"proxy_trusted"`
	Freebind           bool       `toml:"freebind"`
	MaxConn            *int       `toml:"maxconn"`
	DefaultBackend     string     `toml:"default_backend"`
	TimeoutClient      string     `toml:"timeout_client"`
	TimeoutHTTPRequest string     `toml:"timeout_http_request"`
	TimeoutProxyHeader string     `toml:"timeout_proxy_header"`
	TimeoutTunnel      string     `toml:"timeout_tunnel"`
	TLS                []rawTLS   `toml:"tls"`
	Route              []rawRoute `toml:"route"`
	H2C                bool       `toml:"h2c"`
	MaxHeaderBytes     *int       `toml:"max_header_bytes"`
	MaxHeaderCount     *int       `toml:"max_header_count"`
	AccessLog          bool       `toml:"access_log"`
	AccessLogFormat    string     `toml:"access_log_format"`
	AccessLogFile      string     `toml:"access_log_file"`
	ErrorPage400       string     `toml:"error_page_400"`
	ErrorPage403       string     `toml:"error_page_403"`
	ErrorPage404       string     `toml:"error_page_404"`
	ErrorPage408       string     `toml:"error_page_408"`
	ErrorPage431       string     `toml:"error_page_431"`
	ErrorPage500       string     `toml:"error_page_500"`
	ErrorPage502       string     `toml:"error_page_502"`
	ErrorPage503       string     `toml:"error_page_503"`
	ErrorPage504       string     `toml:"error_page_504"`
	TimeoutUDP         string     `toml:"timeout_udp"`
	MaxFlows           *int       `toml:"max_flows"`
	MaxFlowsPerSource  *int       `toml:"max_flows_per_source"`

	// Edge policy (policy_validate.go).
	Rule      []rawRule     `toml:"rule"`
	RateLimit *rawRateLimit `toml:"rate_limit"`

	ClientAuth *rawClientAuth `toml:"client_auth"` // tls_client.go
}

type rawTLS struct {
	Cert      string   `toml:"cert"`
	Key       string   `toml:"key"`
	OCSP      string   `toml:"ocsp"`       // tls_ocsp.go
	OCSPFetch bool     `toml:"ocsp_fetch"` // tls_ocsp.go
	ACME      []string `toml:"acme"`       // names to obtain certificates for (acme.go)
}

type rawRoute struct {
	Host       string            `toml:"host"`
	PathPrefix string            `toml:"path_prefix"`
	Header     map[string]string `toml:"header"`
	Backend    string            `toml:"backend"`
}

type rawBackend struct {
	Mode            rawMode     `toml:"mode"`
	Balance         rawBalance  `toml:"balance"`
	Sticky          rawSticky   `toml:"sticky"`
	StickyCookie    string      `toml:"sticky_cookie"`
	StickyTTL       string      `toml:"sticky_ttl"`
	StickySize      *int        `toml:"sticky_size"`
	QueueTimeout    string      `toml:"queue_timeout"`
	SendProxy       rawProxy    `toml:"send_proxy"`
	TimeoutConnect  string      `toml:"timeout_connect"`
	TimeoutServer   string      `toml:"timeout_server"`
	Retries         *int        `toml:"retries"`
	Proto           rawProto    `toml:"proto"`
	PoolMaxIdle     *int        `toml:"pool_max_idle"`
	PoolIdleTimeout string      `toml:"pool_idle_timeout"`
	Health          rawHealth   `toml:"health"`
	Server          []rawServer `toml:"server"`
	DNS             *rawDNS     `toml:"dns"`
	TimeoutUDP      string      `toml:"timeout_udp"`
	Responses       *int        `toml:"responses"`

	TLS *rawBackendTLS `toml:"tls"` // tls_backend.go
}

type rawServer struct {
	Name    string `toml:"name"`
	Address string `toml:"address"`
	Weight  *int   `toml:"weight"`
	Backup  bool   `toml:"backup"`
	MaxConn int    `toml:"maxconn"`
}

type rawDNS struct {
	Name       string   `toml:"name"`
	Resolvers  []string `toml:"resolvers"`
	Interval   string   `toml:"interval"`
	Port       int      `toml:"port"`
	Timeout    string   `toml:"timeout"`
	MaxServers *int     `toml:"max_servers"`
}

type validator struct {
	file     string
	loc      *locator
	problems []Problem
	warnings []Problem

	statsTable bool // the file has a [stats] table
	// badType holds the keys refused by the type check: written in the
	// file, but left out of the decoded values.
	badType map[string]bool
}

// defined reports whether the file sets key to a value of its type.
func (v *validator) defined(key string) bool { return v.loc.defined(key) && !v.badType[key] }

func (v *validator) errf(key, format string, args ...any) {
	if v.badType[key] {
		return // what follows from a value of the wrong type: said once, by the type check
	}
	v.problems = append(v.problems, Problem{File: v.file, Line: v.loc.line(key), Key: key, Msg: fmt.Sprintf(format, args...)})
}

func (v *validator) warnf(key, format string, args ...any) {
	v.warnings = append(v.warnings, Problem{File: v.file, Line: v.loc.line(key), Key: key, Msg: fmt.Sprintf(format, args...)})
}

// secretMode warns when group or others may read or write the secret at
// path (key names it): anyone who reads it can act as the admin or a peer.
func (v *validator) secretMode(key, path string) {
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm()&0o077 == 0 {
		return
	}
	v.warnf(key, "%s is readable or writable by group or others (mode %04o); run chmod 600 %s (owned by the user sluice runs as)", path, st.Mode().Perm(), path)
}

// dur parses a duration value at key; a key left out means def. A key
// written as "" is refused: it reads like "no timeout" but would give the
// default.
func (v *validator) dur(key, s string, def time.Duration) time.Duration {
	if s == "" {
		if v.defined(key) {
			v.errf(key, "is empty; write a duration like \"5s\" (\"0s\" where 0 is allowed), or remove the key for the default")
		}
		return def
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		v.errf(key, "%q is not a duration; write it like \"1.5s\", \"200ms\" or \"2m\"", s)
		return def
	}
	if d < 0 {
		v.errf(key, "%q is negative; a duration must be 0 or more, like \"5s\"", s)
		return def
	}
	return d
}

func (v *validator) oneOf(key, val string, allowed ...string) {
	for _, a := range allowed {
		if val == a {
			return
		}
	}
	v.errf(key, "%q is not one of %s", val, strings.Join(quoteAll(allowed), ", "))
}

func quoteAll(s []string) []string {
	out := make([]string, len(s))
	for i, x := range s {
		out[i] = strconv.Quote(x)
	}
	return out
}

func intOr(p *int, def int) int {
	if p == nil {
		return def
	}
	return *p
}

// Defaults used when neither [defaults] nor the section sets a value.
const (
	DefaultMaxConn            = 50000
	DefaultHardStopAfter      = 30 * time.Second
	MaxStopGrace              = time.Minute // global.stop_grace
	DefaultGCHeapFloor        = 32 << 20    // global.gc_heap_floor
	MaxGCHeapFloor            = 4 << 30
	DefaultTimeoutConnect     = 5 * time.Second
	DefaultTimeoutClient      = 50 * time.Second
	DefaultTimeoutServer      = 50 * time.Second
	DefaultTimeoutHTTPRequest = 10 * time.Second
	DefaultTimeoutProxyHeader = 3 * time.Second
	DefaultRetries            = 2
	DefaultTimeoutTunnel      = time.Hour
	DefaultMaxHeaderBytes     = 64 << 10
	DefaultMaxHeaderCount     = 100 // HAProxy's tune.http.maxhdr is 101
	DefaultPoolMaxIdle        = 1000
	DefaultPoolIdleTimeout    = 15 * time.Second
	MaxWeight                 = 256
	DefaultQueueTimeout       = 5 * time.Second
	DefaultStickySize         = 100000
	DefaultStatsBind          = "127.0.0.1:8404" // a [stats] table without bind
	MinRemoteTokenLen         = 16               // admin token length on a non-loopback stats bind
	DefaultStatsMaxConn       = 64

	// Upper bounds of counts: past them a number is a typo or an attack
	// on the budget arithmetic, never a setting (issue 15 review).
	MaxRetries = 100        // each retry of a refused connect is a dial
	MaxCount   = 10_000_000 // connections, flows, table entries
)

// count refuses n outside lo..hi, naming key; what says what the number counts.
func (v *validator) count(key string, n, lo, hi int, what string) {
	switch {
	case n < lo && lo == 0:
		v.errf(key, "must not be negative (%s), got %d", what, n)
	case n < lo:
		v.errf(key, "must be at least %d (%s), got %d", lo, what, n)
	case n > hi:
		v.errf(key, "must be at most %d (%s), got %d", hi, what, n)
	}
}

func (v *validator) build(raw *rawFile) *Config {
	cfg := &Config{}
	g := raw.Global
	cfg.Global = Global{
		MaxConn:        intOr(g.MaxConn, DefaultMaxConn),
		MaxConnSet:     g.MaxConn != nil,
		HardStopAfter:  v.dur("global.hard_stop_after", g.HardStopAfter, DefaultHardStopAfter),
		ControlSocket:  v.besideConfig(g.ControlSocket),
		PIDFile:        v.besideConfig(g.PIDFile),
		VitalFrontends: g.VitalFrontends,
		TrackFile:      v.trackFile(g.TrackFile),
		StopGrace:      v.dur("global.stop_grace", g.StopGrace, 0),
		Logging:        v.logging(g.rawLog),
		GCHeapFloor:    intOr(g.GCHeapFloor, DefaultGCHeapFloor),
	}
	v.trackFileClash(&cfg.Global)
	if cfg.Global.StopGrace > MaxStopGrace {
		v.errf("global.stop_grace", "%s is longer than %s: the grace only has to outlast a VRRP or BGP move (about a second); the drain after it is hard_stop_after", cfg.Global.StopGrace, MaxStopGrace)
	}
	v.count("global.maxconn", cfg.Global.MaxConn, 1, MaxCount, "connections at once; each holds two file descriptors")
	v.count("global.gc_heap_floor", cfg.Global.GCHeapFloor, 0, MaxGCHeapFloor, "bytes the heap may grow past its live data before Go collects garbage; 0 for Go's own pacing")

	d := raw.Defaults
	defConnect := v.dur("defaults.timeout_connect", d.TimeoutConnect, DefaultTimeoutConnect)
	defClient := v.dur("defaults.timeout_client", d.TimeoutClient, DefaultTimeoutClient)
	defServer := v.dur("defaults.timeout_server", d.TimeoutServer, DefaultTimeoutServer)
	defHTTPReq := v.dur("defaults.timeout_http_request", d.TimeoutHTTPRequest, DefaultTimeoutHTTPRequest)
	defProxyHdr := v.dur("defaults.timeout_proxy_header", d.TimeoutProxyHeader, DefaultTimeoutProxyHeader)
	defTunnel := v.dur("defaults.timeout_tunnel", d.TimeoutTunnel, DefaultTimeoutTunnel)
	defRetries := intOr(d.Retries, DefaultRetries)
	v.count("defaults.retries", defRetries, 0, MaxRetries, "connect attempts after the first")
	defMaxConn := intOr(d.MaxConn, 0)
	v.count("defaults.maxconn", defMaxConn, 0, MaxCount, "connections of a frontend at once; 0: only the global cap")
	defQueue := v.dur("defaults.queue_timeout", d.QueueTimeout, DefaultQueueTimeout)
	defUDP := v.dur("defaults.timeout_udp", d.TimeoutUDP, DefaultTimeoutUDP)

	cfg.Stats = v.stats(raw.Stats)

	// Backends first, so frontends can check what they reference.
	for _, name := range sortedKeys(raw.Backend) {
		cfg.Backends = append(cfg.Backends, v.backend(name, raw.Backend[name], defConnect, defServer, defQueue, defRetries))
	}

	binds := map[string]string{} // "net addr" -> key that bound it first
	if cfg.Stats.Bind != "" {
		binds["tcp "+cfg.Stats.Bind] = "stats.bind"
	}
	cfg.Peers = v.peers(raw.Peers, binds)
	cfg.ACME = v.acme(raw.ACME)
	usedBy := map[string]string{} // backend -> key of the reference that settled its mode
	// Frontends in file order, so that the second of two conflicting ones
	// is the one reported; cfg.Frontends is sorted by name afterwards.
	frontNames := sortedKeys(raw.Frontend)
	sort.SliceStable(frontNames, func(i, j int) bool {
		return v.loc.line("frontend."+frontNames[i]) < v.loc.line("frontend."+frontNames[j])
	})
	for _, name := range frontNames {
		rf := raw.Frontend[name]
		p := "frontend." + name
		f := &Frontend{
			Name:               name,
			Mode:               rf.Mode.val,
			AcceptProxy:        rf.AcceptProxy,
			Freebind:           rf.Freebind,
			MaxConn:            intOr(rf.MaxConn, defMaxConn),
			DefaultBackend:     rf.DefaultBackend,
			TimeoutClient:      v.dur(p+".timeout_client", rf.TimeoutClient, defClient),
			TimeoutHTTPRequest: v.dur(p+".timeout_http_request", rf.TimeoutHTTPRequest, defHTTPReq),
			TimeoutProxyHeader: v.dur(p+".timeout_proxy_header", rf.TimeoutProxyHeader, defProxyHdr),
			TimeoutTunnel:      v.dur(p+".timeout_tunnel", rf.TimeoutTunnel, defTunnel),
			H2C:                rf.H2C,
			MaxHeaderBytes:     intOr(rf.MaxHeaderBytes, DefaultMaxHeaderBytes),
			MaxHeaderCount:     intOr(rf.MaxHeaderCount, DefaultMaxHeaderCount),
			AccessLog:          rf.AccessLog,
			AccessLogFormat:    rf.AccessLogFormat,
			AccessLogFile:      rf.AccessLogFile,
		}
		v.httpOptions(p, &rf, f)
		v.udpFrontend(p, &rf, f, defUDP)
		if f.Mode == "" {
			f.Mode = ModeTCP
		}
		v.refused(p+".mode", rf.Mode.err)
		// Clients speak first in HTTP (and TLS, and PROXY): the kernel
		// keeps a connection until its first bytes, as HAProxy's
		// defer-accept and nginx's deferred. A tcp frontend may carry a
		// protocol where the server speaks first (SMTP, SSH): off there.
		f.DeferAccept = f.Mode == ModeHTTP
		if rf.DeferAccept != nil {
			f.DeferAccept = *rf.DeferAccept
			if f.Mode == ModeUDP {
				v.errf(p+".defer_accept", "defer_accept is for tcp and http frontends (a udp socket accepts nothing); remove it")
			}
		}
		if f.AcceptProxy && f.Mode == ModeUDP {
			v.errf(p+".accept_proxy", "PROXY headers are accepted on tcp and http frontends only, not udp; remove it")
		}
		if rf.MaxConn != nil {
			v.count(p+".maxconn", f.MaxConn, 0, MaxCount, "connections at once; 0: only the global cap")
		}
		if len(rf.Bind) == 0 {
			v.errf(p+".bind", "a frontend needs at least one bind address, like bind = [\"0.0.0.0:80\"]")
		}
		network := f.Network()
		for i, b := range rf.Bind {
			key := p + ".bind"
			if strings.TrimSpace(b) == "" {
				v.errf(key, "entry %d is empty; write an address like \"0.0.0.0:80\", or remove the entry", i+1)
				continue
			}
			for _, a := range v.bindAddrs(key, b) {
				if prev, dup := binds[network+" "+a]; dup {
					v.errf(key, "address %s (entry %d) is already bound by %s (line %d); bind each address once, or remove one of the two", a, i+1, prev, v.loc.line(prev))
					continue
				}
				binds[network+" "+a] = key
				f.Bind = append(f.Bind, a)
			}
		}
		for _, t := range rf.ProxyTrusted {
			pfx, err := parsePrefix(t)
			if err != nil {
				v.errf(p+".proxy_trusted", "%q is not an address or CIDR prefix like \"10.0.0.0/8\"", t)
				continue
			}
			f.ProxyTrusted = append(f.ProxyTrusted, pfx)
		}
		for i, t := range rf.TLS {
			key := fmt.Sprintf("%s.tls.%d", p, i)
			if t.ACME != nil {
				f.TLS = append(f.TLS, TLS{ACME: v.acmeEntry(key, t, cfg.ACME)})
				continue
			}
			if t.Cert == "" || t.Key == "" {
				v.errf(key, "a tls entry needs both cert and key files")
			}
			f.TLS = append(f.TLS, TLS{Cert: t.Cert, Key: t.Key, OCSP: t.OCSP, OCSPFetch: t.OCSPFetch})
		}
		v.tlsFiles(p, f)
		v.clientAuth(p, &rf, f)
		v.tlsOCSP(p, f)
		v.accessLogFile(p, f)
		if len(rf.TLS) > 0 && f.Mode != ModeHTTP {
			v.errf(p+".tls", "TLS termination needs mode = \"http\"")
		}
		if len(rf.Route) > 0 && f.Mode != ModeHTTP {
			v.errf(p+".route", "routes need mode = \"http\"; a %s frontend only has default_backend", f.Mode)
		}
		for i, r := range rf.Route {
			key := fmt.Sprintf("%s.route.%d", p, i)
			v.useBackend(cfg, key+".backend", r.Backend, f, usedBy)
			f.Routes = append(f.Routes, Route{Host: r.Host, PathPrefix: r.PathPrefix, Header: r.Header, Backend: r.Backend})
		}
		v.policy(p, &rf, f, cfg.Peers)
		if f.DefaultBackend != "" {
			v.useBackend(cfg, p+".default_backend", f.DefaultBackend, f, usedBy)
		} else if len(f.Routes) == 0 {
			v.errf(p+".default_backend", "a frontend needs a default_backend (or, in http mode, routes)")
		}
		cfg.Frontends = append(cfg.Frontends, f)
	}
	v.acmeFrontends(cfg)
	for _, b := range cfg.Backends {
		if !b.used {
			v.warnf("backend."+b.Name, "backend %s is not used by any frontend (default_backend or a route's backend); point a frontend at it or remove it", b.Name)
		}
		if b.Mode == "" {
			b.Mode = ModeTCP // unused backend: any mode is fine
		}
		if b.Sticky == StickyCookie && b.Mode != ModeHTTP {
			v.errf("backend."+b.Name+".sticky", "sticky = \"cookie\" needs an http backend; use \"source\" for %s", b.Mode)
		}
		v.udpModeChecks(b)
		v.backendTLSMode(b)
	}
	for _, name := range cfg.Global.VitalFrontends {
		if cfg.Frontend(name) == nil {
			v.errf("global.vital_frontends", "frontend %q does not exist", name)
		}
	}
	cfg.BGP = v.bgp(raw.BGP)
	v.bgpVital(raw.BGP, cfg)
	sort.Slice(cfg.Frontends, func(i, j int) bool { return cfg.Frontends[i].Name < cfg.Frontends[j].Name })
	return cfg
}

// httpOptions checks and fills the keys that only mean something in http mode.
func (v *validator) httpOptions(p string, rf *rawFrontend, f *Frontend) {
	if f.MaxHeaderBytes < 1024 || f.MaxHeaderBytes > 1<<20 {
		v.errf(p+".max_header_bytes", "must be between 1024 and 1048576 bytes, got %d", f.MaxHeaderBytes)
	}
	if f.MaxHeaderCount < 1 || f.MaxHeaderCount > 10000 {
		v.errf(p+".max_header_count", "must be between 1 and 10000 header lines, got %d", f.MaxHeaderCount)
	}
	if f.AccessLogFormat == "" {
		f.AccessLogFormat = "text"
	}
	v.oneOf(p+".access_log_format", f.AccessLogFormat, "text", "json")
	pages := map[int]string{400: rf.ErrorPage400, 403: rf.ErrorPage403, 404: rf.ErrorPage404, 408: rf.ErrorPage408,
		431: rf.ErrorPage431, 500: rf.ErrorPage500, 502: rf.ErrorPage502, 503: rf.ErrorPage503, 504: rf.ErrorPage504}
	for code, path := range pages {
		if path != "" {
			v.errorPage(p, f, code, path)
		}
	}
	if f.Mode != ModeHTTP {
		if f.H2C {
			v.errf(p+".h2c", "h2c needs mode = \"http\"")
		}
		if f.AccessLog {
			v.errf(p+".access_log", "the access log is per HTTP request and needs mode = \"http\"")
		}
	}
}

// useBackend checks a reference from frontend f to backend name and settles
// the backend's mode from the frontends that use it.
func (v *validator) useBackend(cfg *Config, key, name string, f *Frontend, usedBy map[string]string) {
	b := cfg.Backend(name)
	if b != nil {
		b.used = true
	}
	if b == nil {
		var names []string
		for _, b := range cfg.Backends {
			names = append(names, b.Name)
		}
		defined := strings.Join(names, ", ")
		if defined == "" {
			defined = "none yet; add a [backend.NAME] section with [[backend.NAME.server]] entries"
		}
		v.errf(key, "backend %q does not exist (defined: %s)", name, defined)
		return
	}
	if b.Mode == "" {
		b.Mode = f.Mode
		usedBy[name] = key
		return
	}
	if b.Mode != f.Mode {
		by := fmt.Sprintf("backend.%s.mode, line %d", name, v.loc.line("backend."+name+".mode"))
		if u, ok := usedBy[name]; ok {
			by = fmt.Sprintf("%s, line %d", u, v.loc.line(u))
		}
		v.errf(key, "frontend %s is mode %q but backend %s is mode %q (set by %s); a backend serves one mode: make them match or give this frontend its own backend", f.Name, f.Mode, name, b.Mode, by)
	}
}

func (v *validator) backend(name string, rb rawBackend, defConnect, defServer, defQueue time.Duration, defRetries int) *Backend {
	p := "backend." + name
	b := &Backend{
		Name:           name,
		Mode:           rb.Mode.val,
		Balance:        rb.Balance.val,
		Sticky:         rb.Sticky.val,
		StickyCookie:   rb.StickyCookie,
		StickyTTL:      v.dur(p+".sticky_ttl", rb.StickyTTL, 30*time.Minute),
		StickySize:     intOr(rb.StickySize, DefaultStickySize),
		QueueTimeout:   v.dur(p+".queue_timeout", rb.QueueTimeout, defQueue),
		SendProxy:      rb.SendProxy.val,
		TimeoutConnect: v.dur(p+".timeout_connect", rb.TimeoutConnect, defConnect),
		TimeoutServer:  v.dur(p+".timeout_server", rb.TimeoutServer, defServer),
		Retries:        intOr(rb.Retries, defRetries),
	}
	v.refused(p+".mode", rb.Mode.err)
	b.Proto = rb.Proto.val
	v.refused(p+".proto", rb.Proto.err)
	b.PoolMaxIdle = intOr(rb.PoolMaxIdle, DefaultPoolMaxIdle)
	v.count(p+".pool_max_idle", b.PoolMaxIdle, 0, MaxCount, "idle server connections kept; 0 disables pooling")
	b.PoolIdleTimeout = v.dur(p+".pool_idle_timeout", rb.PoolIdleTimeout, DefaultPoolIdleTimeout)
	if b.Balance == "" {
		b.Balance = BalanceRoundRobin
	}
	v.refused(p+".balance", rb.Balance.err)
	v.refused(p+".sticky", rb.Sticky.err)
	if b.StickyCookie == "" {
		b.StickyCookie = "SLUICE"
	}
	v.count(p+".sticky_size", b.StickySize, 1, MaxCount, "entries of the stick table")
	v.refused(p+".send_proxy", rb.SendProxy.err)
	if rb.Retries != nil {
		v.count(p+".retries", b.Retries, 0, MaxRetries, "connect attempts after the first")
	}

	b.Health = v.health(p+".health", rb.Health)
	b.TLS = v.backendTLS(p, rb.TLS)

	names := map[string]bool{}
	for i, rs := range rb.Server {
		key := fmt.Sprintf("%s.server.%d", p, i)
		s := Server{Name: rs.Name, Address: rs.Address, Weight: intOr(rs.Weight, 1), Backup: rs.Backup, MaxConn: rs.MaxConn}
		switch {
		case s.Name == "" && v.defined(key+".name"):
			v.errf(key+".name", "is empty; give the server a name, or remove the key for the default s%d", i+1)
		case strings.IndexFunc(s.Name, badNameRune) >= 0:
			// Names appear in logs, metrics labels and admin API paths.
			v.errf(key+".name", "%q holds spaces, control characters or \"/\"; use letters, digits and \"-_.\"", s.Name)
		}
		if s.Name == "" {
			s.Name = fmt.Sprintf("s%d", i+1)
		}
		if names[s.Name] {
			v.errf(key+".name", "server name %q is used twice in backend %s; give each server its own name", s.Name, name)
		}
		names[s.Name] = true
		if s.Weight < 0 || s.Weight > MaxWeight {
			v.errf(key+".weight", "weight %d is outside 0..%d (0 takes the server out of rotation)", s.Weight, MaxWeight)
		}
		v.count(key+".maxconn", s.MaxConn, 0, MaxCount, "connections to this server at once; 0: no cap")
		if s.Address == "" {
			v.errf(key+".address", "a server needs an address like \"10.0.0.11:8080\"")
		} else if host, port, err := net.SplitHostPort(s.Address); err != nil || port == "" {
			v.errf(key+".address", "%q is not host:port; write one like \"10.0.0.11:8080\", \"[2001:db8::11]:8080\" or \"app1.internal:8080\"", s.Address)
		} else if !validPort(port) {
			v.errf(key+".address", "%q has a bad port: write one from 1 to 65535", s.Address)
		} else if !hostOK(host) {
			v.errf(key+".address", "%q: host %q is neither an IP address nor a DNS name (letters, digits, '-' and '.'); check it for a typo", s.Address, host)
		}
		b.Servers = append(b.Servers, s)
	}
	v.udpBackend(p, &rb, b)
	if rb.DNS != nil {
		b.DNS = v.dns(p+".dns", rb.DNS)
		v.systemResolvers(p+".dns", b.DNS)
	}
	if len(b.Servers) == 0 && b.DNS == nil {
		v.errf(p, "backend %s has no servers; add [[%s.server]] entries (or a [%s.dns] section)", name, p, p)
	}
	return b
}

// bindAddrs expands a bind value (possibly a go-sockaddr template) into one
// or more host:port addresses.
func (v *validator) bindAddrs(key, val string) []string {
	s := val
	tmpl := strings.Contains(val, "{{")
	if tmpl {
		out, err := expandTemplate(val)
		if err != nil {
			v.errf(key, "template %q does not work: %v; see https://pkg.go.dev/github.com/hashicorp/go-sockaddr/template for the syntax", val, err)
			return nil
		}
		s = out
	}
	var addrs []string
	for _, a := range strings.Fields(s) {
		host, port, err := net.SplitHostPort(a)
		if err != nil {
			hint := ""
			if strings.Count(a, ":") > 1 && !strings.HasPrefix(a, "[") {
				hint = "; put an IPv6 address in brackets, like \"[::1]:80\" or \"[{{ GetPublicIPv6 }}]:80\""
			}
			if tmpl {
				v.errf(key, "template %q gives %q, which is not an address like \"10.0.0.1:80\"%s", val, a, hint)
			} else {
				v.errf(key, "%q is not an address like \"0.0.0.0:80\"%s", a, hint)
			}
			continue
		}
		if _, err := strconv.ParseUint(port, 10, 16); err != nil {
			v.errf(key, "%q has a bad port %q; use a number from 0 to 65535", a, port)
			continue
		}
		if host != "" {
			if _, err := netip.ParseAddr(host); err != nil {
				v.errf(key, "%q: host %q is not an IP address; bind to an IP (or a go-sockaddr template), not a name", a, host)
				continue
			}
		} else if tmpl {
			// A template that produced ":80" found no address.
			v.errf(key, "template %q yields no address on this host (it gave %q); check the interface name or the filters", val, s)
			continue
		}
		addrs = append(addrs, a)
	}
	if len(addrs) == 0 && tmpl && strings.TrimSpace(s) == "" {
		v.errf(key, "template %q yields no address on this host; check the interface name or the filters", val)
	}
	return addrs
}

// badNameRune reports characters a server name must not hold.
func badNameRune(r rune) bool {
	return r <= ' ' || r == 0x7f || r == '/' || unicode.IsSpace(r) || unicode.IsControl(r)
}

func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		return p.Masked(), err
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// stats checks the [stats] table. A [stats] table without bind listens on
// DefaultStatsBind (loopback); no [stats] table at all means no listener.
// The admin API is enabled only by a token: admin_token_file must name a
// readable file holding it (a relative path is taken from the config
// file's directory). The read-only pages may be served on any
// address, but a non-loopback bind that enables the admin API needs a token
// of at least MinRemoteTokenLen characters.
func (v *validator) stats(rs rawStats) Stats {
	st := Stats{AdminTokenFile: rs.AdminTokenFile, MaxConn: intOr(rs.MaxConn, DefaultStatsMaxConn)}
	v.count("stats.maxconn", st.MaxConn, 1, 10000, "connections the stats listener serves at once; more wait in the kernel's queue")
	bind := rs.Bind
	if bind == "" && (v.statsTable || rs.AdminTokenFile != "") {
		bind = DefaultStatsBind
	}
	if bind != "" {
		addrs := v.bindAddrs("stats.bind", bind)
		if len(addrs) > 1 {
			v.errf("stats.bind", "%q gives %d addresses (%s); the stats listener takes one", bind, len(addrs), strings.Join(addrs, " "))
		}
		if len(addrs) > 0 {
			st.Bind = addrs[0]
		}
	}
	if rs.AdminTokenFile == "" {
		return st
	}
	key := "stats.admin_token_file"
	path := v.besideConfig(rs.AdminTokenFile)
	st.AdminTokenFile = path
	b, err := os.ReadFile(path)
	if err != nil {
		v.errf(key, "cannot read the admin token: %v", err)
		return st
	}
	v.secretMode(key, path)
	st.AdminToken = strings.TrimSpace(string(b))
	switch {
	case st.AdminToken == "":
		v.errf(key, "%s is empty; put a long random token in it (for example: head -c 24 /dev/urandom | base64 > %s)", path, path)
	case strings.ContainsAny(st.AdminToken, " \t\r\n"):
		v.errf(key, "%s holds more than one word; the token is one line without spaces", path)
	case st.Bind != "" && !IsLoopback(st.Bind) && len(st.AdminToken) < MinRemoteTokenLen:
		v.errf(key, "stats.bind %s is reachable from other hosts, so the admin token must be at least %d characters (it has %d); or bind the stats listener to 127.0.0.1", st.Bind, MinRemoteTokenLen, len(st.AdminToken))
	}
	return st
}

// IsLoopback reports whether the host:port addr listens on loopback only
// (an empty host listens everywhere).
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

// hostOK reports whether host is an IP address or a syntactically valid
// DNS name (RFC 1123 labels: letters, digits and '-', not at either end;
// '_' allowed, as resolvers take it), so that a typo in a server's address
// is refused at check time rather than found as connect errors.
func hostOK(host string) bool {
	if _, err := netip.ParseAddr(host); err == nil {
		return true
	}
	host = strings.TrimSuffix(host, ".")
	if host == "" || len(host) > 253 {
		return false
	}
	for _, label := range strings.Split(host, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return false
			}
		}
	}
	return true
}
