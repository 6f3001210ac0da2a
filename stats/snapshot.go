package stats

import (
	"fmt"
	"time"

	"sluice/backend"
	"sluice/conf"
	"sluice/frontend"
	"sluice/internal/gcfloor"
	"sluice/internal/memtrim"
)

// Row is one line of the stats: a frontend, a backend (its totals) or a
// server. JSON names follow HAProxy's CSV columns where one exists.
type Row struct {
	Type   string `json:"type"`   // "frontend", "backend" or "server"
	Proxy  string `json:"pxname"` // frontend or backend name
	Name   string `json:"svname"` // "FRONTEND", "BACKEND" or the server name
	Mode   string `json:"mode"`
	Addr   string `json:"addr,omitempty"`
	Status string `json:"status"` // OPEN; UP, DOWN; UP, DOWN, DRAIN, MAINT, "UP 1/3"…
	// State is the colour class of the status: open, up, down, drain,
	// maint, going-down (up, failing checks), going-up (down, passing),
	// no-check (up, nothing checks it).
	State      string `json:"state"`
	LastChange int64  `json:"lastchg"`  // seconds since the last up/down change
	Downtime   int64  `json:"downtime"` // seconds spent down in total

	Weight     int64 `json:"weight"`      // effective: 0 in drain and maint (backends: sum over servers in service)
	UWeight    int64 `json:"uweight"`     // the weight set (config or admin API) that applies when ready (backends: sum)
	ConfWeight int64 `json:"conf_weight"` // from the config file (backends: sum)
	Active     int64 `json:"act"`         // servers: 1 for a primary; backends: primaries up
	Backup     int64 `json:"bck"`         // servers: 1 for a backup; backends: backups up

	QCur     int64  `json:"qcur"`
	QMax     int64  `json:"qmax"`
	QTotal   uint64 `json:"qtot"`      // connections that waited in the queue
	QTimeout uint64 `json:"qtimeouts"` // refused after queue_timeout

	SCur    int64  `json:"scur"`
	SMax    int64  `json:"smax"`
	SLim    int64  `json:"slim"` // 0: no limit
	STot    uint64 `json:"stot"`
	Rate    uint64 `json:"rate"` // sessions in the last second
	RateMax uint64 `json:"rate_max"`

	BytesIn  uint64 `json:"bin"`
	BytesOut uint64 `json:"bout"`
	DReq     uint64 `json:"dreq"` // frontends: refused before a server; backends: no server / queue timeout
	EReq     uint64 `json:"ereq"` // malformed, slow or too large requests (http)
	ECon     uint64 `json:"econ"`
	EResp    uint64 `json:"eresp"`
	// HTTP exchanges the client ended, or the server broke off in its
	// body (servers and backends).
	CliAbrt uint64 `json:"cli_abrt"`
	SrvAbrt uint64 `json:"srv_abrt"`
	Retries uint64 `json:"wretr"`

	// Servers of a backend with TLS: failed handshakes, in total and by
	// reason (unknown_authority, name_mismatch, expired, handshake, other).
	TLSErr    uint64            `json:"tls_errors_total,omitempty"`
	TLSErrors map[string]uint64 `json:"tls_errors,omitempty"`

	ChkFail uint64       `json:"chkfail"`
	ChkDown uint64       `json:"chkdown"`
	Check   *CheckResult `json:"check,omitempty"`

	HTTP   bool      `json:"http"`
	ReqTot uint64    `json:"req_tot,omitempty"`
	Resp   [6]uint64 `json:"hrsp"` // [0] other, [1] 1xx … [5] 5xx

	Servers []Row `json:"servers,omitempty"` // backends only

	// Policy is a frontend's edge policy counters; nil without rules and
	// rate limit.
	Policy *PolicyCounters `json:"policy,omitempty"`

	// TLS is a TLS frontend's handshakes (tls_client.go); nil on the
	// others.
	TLS *TLSCounters `json:"tls,omitempty"`
}

// PolicyCounters are a frontend's edge policy figures
// ([[frontend.NAME.rule]], [frontend.NAME.rate_limit]).
type PolicyCounters struct {
	Denied      uint64 `json:"denied"`       // http requests denied by a rule
	Redirected  uint64 `json:"redirected"`   // http requests redirected
	Tarpitted   uint64 `json:"tarpitted"`    // requests and connections held, then denied
	RateLimited uint64 `json:"rate_limited"` // http requests over rate_limit.requests (429)
	ConnDenied  uint64 `json:"conn_denied"`  // connections closed by a rule (tcp)
	ConnLimited uint64 `json:"conn_limited"` // connections closed over rate_limit.connections or connection_rate
	// RateLimit: the frontend has a rate_limit; then the clients its table
	// tracks now and those evicted to keep table_size.
	RateLimit   bool   `json:"rate_limit"`
	RateClients int64  `json:"rate_clients"`
	RateEvicted uint64 `json:"rate_evicted"`
}

func policyCounters(f *frontend.Frontend) *PolicyCounters {
	p := f.Policy()
	if p == nil {
		return nil
	}
	c := &p.Counters
	pc := &PolicyCounters{
		Denied: c.Denied.Load(), Redirected: c.Redirected.Load(), Tarpitted: c.Tarpitted.Load(),
		RateLimited: c.Limited.Load(), ConnDenied: c.ConnDenied.Load(), ConnLimited: c.ConnLimited.Load(),
	}
	if l := p.Limit; l != nil {
		pc.RateLimit, pc.RateClients, pc.RateEvicted = true, int64(l.Tracked()), l.Evicted()
	}
	return pc
}

// CheckResult is a server's last health check.
type CheckResult struct {
	OK       bool    `json:"ok"`
	Desc     string  `json:"desc"`
	Code     int     `json:"code,omitempty"`
	Duration float64 `json:"duration_ms"`
	Age      int64   `json:"age"` // seconds since
}

// Snapshot is the whole of the stats at one moment.
type Snapshot struct {
	Process   ProcessInfo    `json:"process"`
	Frontends []Row          `json:"frontends"`
	Backends  []Row          `json:"backends"`
	Counters  []CounterValue `json:"counters,omitempty"`
	BGP       *BGP           `json:"bgp,omitempty"` // the master's BGP speaker; absent without [bgp]
}

// ProcessInfo is the process line of a snapshot.
type ProcessInfo struct {
	Version string    `json:"version"`
	PID     int       `json:"pid"`
	Started time.Time `json:"started"`
	Uptime  int64     `json:"uptime"` // seconds
	Workers int64     `json:"workers"`
	Reloads int64     `json:"reloads"`
	Current int       `json:"current_conns"`
	MaxConn int       `json:"maxconn"`
	FDs     *FDs      `json:"fds,omitempty"` // the descriptor budget
	Admin   bool      `json:"admin"`         // the admin API is enabled
	// Node is the node's admin state, "ready" or "maint".
	Node string `json:"node"`
	// Unserved is why this node cannot serve ("" while it can): what
	// /healthz answers and global.track_file follows.
	Unserved  string `json:"unserved,omitempty"`
	TrackFile string `json:"track_file,omitempty"` // global.track_file
	// MemTrims is how many times the worker gave the memory a burst left
	// behind back to the OS once traffic calmed (internal/memtrim).
	MemTrims uint64 `json:"memory_trims"`
	// GCCycles counts the worker's garbage collections; GCPercent is the
	// GOGC in force, which global.gc_heap_floor raises over a small heap
	// (internal/gcfloor).
	GCCycles  uint64 `json:"gc_cycles"`
	GCPercent int64  `json:"gc_percent"`
}

func (s *Server) snapshot() Snapshot {
	now := time.Now()
	p := s.opt.Process
	snap := Snapshot{Process: ProcessInfo{
		Version: p.Version, PID: p.PID, Started: p.Started, Uptime: int64(now.Sub(p.Started).Seconds()),
		Workers: p.Workers.Load(), Reloads: p.Reloads.Load(),
		Current: s.current(), MaxConn: s.opt.MaxConn, Admin: s.token != nil,
		Node: NodeAdminName(s.node.Maint()), Unserved: s.unhealthy(), TrackFile: s.opt.TrackFile,
		MemTrims: memtrim.Trims(), GCCycles: gcfloor.Cycles(), GCPercent: gcfloor.Percent(),
	}}
	if s.opt.FDs != nil {
		fds := *s.opt.FDs
		for _, f := range s.opt.Frontends {
			if p := f.UDPProxy(); p != nil {
				fds.FlowsUsed += p.Flows()
			}
		}
		snap.Process.FDs = &fds
	}
	for _, f := range s.opt.Frontends {
		snap.Frontends = append(snap.Frontends, s.frontendRow(f))
	}
	for _, b := range s.opt.Backends {
		snap.Backends = append(snap.Backends, s.backendRow(b, now))
	}
	snap.Counters = s.counterValues()
	snap.BGP = s.bgp()
	return snap
}

func (s *Server) frontendRow(f *frontend.Frontend) Row {
	c := &f.Counters
	r := Row{
		Type: "frontend", Proxy: f.Name, Name: "FRONTEND", Mode: f.Mode.String(), Status: "OPEN", State: "open",
		SCur: c.Current.Load(), SMax: c.MaxActive.Load(), STot: c.Sessions.Load(),
		BytesIn: c.BytesIn.Load(), BytesOut: c.BytesOut.Load(),
		DReq: c.Denied.Load(), ECon: c.Errors.Load(),
	}
	if cfg := f.Config(); cfg != nil {
		r.SLim = int64(cfg.MaxConn)
	}
	if p := f.UDPProxy(); p != nil {
		r.SLim = int64(p.MaxFlows()) // sessions are flows; maxconn does not apply
	}
	r.Rate, r.RateMax = s.rates.get(f)
	r.Policy = policyCounters(f)
	r.TLS = tlsCounters(f)
	if p := f.HTTP(); p != nil {
		h := &p.Counters
		r.HTTP = true
		r.BytesIn += h.BytesIn.Load()
		r.BytesOut += h.BytesOut.Load()
		r.EReq = h.BadRequest.Load() + h.Timeout408.Load() + h.TooLarge431.Load()
		r.ReqTot = h.Requests.Load()
		for i := range r.Resp {
			r.Resp[i] = h.Resp[i].Load()
		}
	}
	return r
}

func (s *Server) backendRow(b *backend.Backend, now time.Time) Row {
	bc := &b.Counters
	r := Row{
		Type: "backend", Proxy: b.Name, Name: "BACKEND", Mode: b.Mode.String(), HTTP: b.Mode == conf.ModeHTTP,
		QCur: bc.Queue.Load(), QMax: bc.MaxQueue.Load(), QTotal: bc.Queued.Load(), QTimeout: bc.QueueTimeouts.Load(),
		DReq: bc.NoServer.Load() + bc.QueueTimeouts.Load(),
		SCur: bc.Current.Load(), SMax: bc.MaxActive.Load(),
	}
	r.Rate, r.RateMax = s.rates.get(b)
	for _, sv := range b.Servers() {
		sr := s.serverRow(b, sv, now)
		r.Servers = append(r.Servers, sr)
		r.ConfWeight += sr.ConfWeight
		r.UWeight += sr.UWeight
		if inService(sr.State) {
			r.Weight += sr.Weight
			if sv.Backup {
				r.Backup++
			} else {
				r.Active++
			}
		}
		r.STot += sr.STot
		r.BytesIn += sr.BytesIn
		r.BytesOut += sr.BytesOut
		r.ECon += sr.ECon
		r.EResp += sr.EResp
		r.CliAbrt += sr.CliAbrt
		r.SrvAbrt += sr.SrvAbrt
		r.Retries += sr.Retries
		r.ChkFail += sr.ChkFail
		for i := range r.Resp {
			r.Resp[i] += sr.Resp[i]
		}
	}
	for i := range r.Resp {
		r.Resp[i] += bc.Resp[i].Load()
	}
	if r.HTTP {
		r.ReqTot = r.STot
	}
	up := r.Active+r.Backup > 0
	r.Status, r.State = "DOWN", "down"
	if up {
		r.Status, r.State = "UP", "up"
	}
	r.LastChange, r.Downtime, r.ChkDown = s.backendStates.observe(b, up, now)
	return r
}

// inService reports whether a server in this state takes new traffic:
// HAProxy counts such servers in the backend's act and bck.
func inService(state string) bool {
	return state == "up" || state == "going-down" || state == "no-check"
}

func (s *Server) serverRow(b *backend.Backend, sv *backend.Server, now time.Time) Row {
	c := &sv.Counters
	r := Row{
		Type: "server", Proxy: b.Name, Name: sv.Name, Mode: b.Mode.String(), Addr: sv.Addr, HTTP: b.Mode == conf.ModeHTTP,
		LastChange: int64(now.Sub(sv.LastChange()).Seconds()),
		Downtime:   int64(sv.Downtime().Seconds()),
		Weight:     int64(sv.Weight()), UWeight: int64(sv.Weight()), ConfWeight: int64(sv.ConfWeight),
		SCur: sv.Active(), SMax: c.MaxActive.Load(), SLim: sv.MaxConn, STot: c.Sessions.Load(),
		BytesIn: c.BytesIn.Load(), BytesOut: c.BytesOut.Load(),
		ECon: c.ConnErrors.Load(), EResp: c.RespErrors.Load(), Retries: c.Retries.Load(),
		CliAbrt: c.ClientAborts.Load(), SrvAbrt: c.ServerAborts.Load(),
		ChkFail: sv.ChecksFailed(), ChkDown: c.Downs.Load(),
	}
	if sv.Backup {
		r.Backup = 1
	} else {
		r.Active = 1
	}
	tlsErrors(&r, b, sv)
	r.Status, r.State = serverStatus(sv, b.Checked)
	if a := sv.Admin(); a == backend.AdminMaint || a == backend.AdminDrain {
		r.Weight = 0 // it gets no new traffic; UWeight is what it gets back when ready
	}
	r.Rate, r.RateMax = s.rates.get(sv)
	for i := range r.Resp {
		r.Resp[i] = c.Resp[i].Load()
	}
	if r.HTTP {
		r.ReqTot = r.STot
	}
	if cr, ok := sv.LastCheck(); ok {
		r.Check = &CheckResult{OK: cr.OK, Desc: cr.Desc, Code: cr.Code,
			Duration: float64(cr.Duration.Microseconds()) / 1000, Age: int64(now.Sub(cr.At).Seconds())}
	}
	return r
}

// serverStatus is the status text of a server and its colour class.
// Maintenance wins over health (the server gets nothing either way); a
// draining server shows DRAIN while up. "UP 1/3" is a server that is up
// with 1 of the 3 failed checks that take it down; "DOWN 1/2" one that is
// down with 1 of the 2 good checks that bring it up. A server up in a
// backend without checks is "no check", as HAProxy shows it: nothing vouches
// for it.
func serverStatus(sv *backend.Server, checked bool) (status, state string) {
	up := sv.Up()
	n, need := sv.Progress()
	switch {
	case sv.Admin() == backend.AdminMaint:
		return "MAINT", "maint"
	case !up && need > 0 && n > 0:
		return fmt.Sprintf("DOWN %d/%d", n, need), "going-up"
	case !up:
		return "DOWN", "down"
	case sv.Admin() == backend.AdminDrain:
		return "DRAIN", "drain"
	case need > 0 && n > 0:
		return fmt.Sprintf("UP %d/%d", n, need), "going-down"
	case !checked:
		return "no check", "no-check"
	}
	return "UP", "up"
}
