package backend

import (
	"fmt"
	"log/slog"
	"sync"
	"time"

	"sluice/conf"
	"sluice/health"
)

// HealthChecks runs the active checks of one backend's servers (package
// health) and turns what they report into server state: up/down with the
// log line and counters that go with it, the last result for the stats
// page, agent replies (admin state, weight), slow start, and passive
// observation of live traffic.
type HealthChecks struct {
	b         *Backend
	cfg       conf.Health
	sendProxy conf.ProxyVersion
	log       *slog.Logger

	// OnChange, when set before Start, is called after each state change
	// (tests, and whoever else wants to hear of them).
	OnChange func(s *Server, up bool)

	mu      sync.Mutex
	servers map[*Server]*serverHealth
	stopped bool
}

// serverHealth is the health.Target of one server.
type serverHealth struct {
	hc      *HealthChecks
	s       *Server
	checker *health.Checker
	// What the agent last said, applied only when it changes, so that an
	// operator's own drain or weight is not undone every interval.
	agentAdmin  AdminState // the agent's last admin word; -1: none yet
	agentWeight int
}

// NewHealthChecks prepares the checks of b's servers as c.Health says;
// Start runs them.
func NewHealthChecks(b *Backend, c *conf.Backend, log *slog.Logger) *HealthChecks {
	if log == nil {
		log = slog.Default()
	}
	return &HealthChecks{b: b, cfg: c.Health, sendProxy: c.SendProxy, log: log, servers: map[*Server]*serverHealth{}}
}

// Start begins checking every server of the backend.
func (h *HealthChecks) Start() { h.Sync() }

// Sync starts checks of servers added to the backend since the last call
// and stops those of servers it no longer has. Whatever replaces the pool
// (DNS discovery) calls it afterwards. New servers start in init_state.
func (h *HealthChecks) Sync() {
	if !h.cfg.Check.Active() {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopped {
		return
	}
	current := map[*Server]bool{}
	for _, s := range h.b.Servers() {
		current[s] = true
		if h.servers[s] != nil {
			continue
		}
		up := h.cfg.InitState != conf.InitDown
		if s.Restored() {
			// A reload carried the state over: a server known to be down
			// stays down until rise checks pass, one known up stays up.
			up = s.Up()
		} else if !up {
			s.up.Store(false) // not a failure: no Downs count, no log
			s.lastChange.Store(time.Now().UnixNano())
		}
		sh := &serverHealth{hc: h, s: s, agentAdmin: -1, agentWeight: -1}
		spec := health.Spec{Health: h.cfg, Addr: s.Addr, SendProxy: h.sendProxy}
		if h.b.TLS != nil {
			spec.TLS = h.b.TLS.CheckConfig(s.Addr)
		}
		sh.checker = health.New(spec, up, sh)
		if h.cfg.Observe {
			s.Observe(h.cfg.ObserveErrors, sh.tripped)
		}
		h.servers[s] = sh
		sh.checker.Start()
	}
	for s, sh := range h.servers {
		if !current[s] {
			s.Observe(0, nil)
			sh.checker.Stop()
			delete(h.servers, s)
		}
	}
}

// Stop ends every check and waits for those in flight.
func (h *HealthChecks) Stop() {
	h.mu.Lock()
	h.stopped = true
	servers := h.servers
	h.servers = nil
	h.mu.Unlock()
	for s, sh := range servers {
		s.Observe(0, nil)
		sh.checker.Stop()
	}
}

// Report records one check of the server (health.Target).
func (sh *serverHealth) Report(r health.Report) {
	s := sh.s
	s.SetLastCheck(CheckResult{At: r.Result.At, OK: r.Result.OK, Desc: r.Result.Desc, Code: r.Result.Code, Duration: r.Result.Duration})
	s.SetProgress(r.N, r.Need)
	if a := r.Result.Agent; a != nil {
		sh.applyAgent(a)
	}
	if r.Changed {
		sh.hc.setState(s, r.Up, r.Result.Desc+" after "+roundDuration(r.Result.Duration))
	}
}

// tripped runs when passive observation saw observe_errors failures in a
// row: the server goes down now, and the checker counts towards rise.
func (sh *serverHealth) tripped(s *Server) {
	sh.checker.ForceDown()
	sh.hc.setState(s, false, fmt.Sprintf("%d consecutive errors on live traffic (observe)", sh.hc.cfg.ObserveErrors))
}

// setState applies a state change and says so once.
func (h *HealthChecks) setState(s *Server, up bool, why string) {
	if !s.SetUp(up) {
		return
	}
	if up {
		s.resetObserve()
		s.StartSlowStart(h.cfg.SlowStart)
	} else {
		s.StartSlowStart(0)
	}
	n, total := h.b.UpCount()
	if up {
		h.log.Info(fmt.Sprintf("server %s/%s is UP: %s, %d of %d servers up", s.Backend, s.Name, why, n, total),
			"backend", s.Backend, "server", s.Name, "state", "UP")
	} else {
		msg := fmt.Sprintf("server %s/%s is DOWN: %s, %d of %d servers left", s.Backend, s.Name, why, n, total)
		if n == 0 {
			msg += "; backend " + s.Backend + " has no server left and refuses new connections"
		}
		h.log.Warn(msg, "backend", s.Backend, "server", s.Name, "state", "DOWN")
	}
	if h.OnChange != nil {
		h.OnChange(s, up)
	}
}

// applyAgent applies an agent's admin word and weight when they change.
func (sh *serverHealth) applyAgent(a *health.AgentReply) {
	s, h := sh.s, sh.hc
	if a.HasAdmin && a.Admin != sh.agentAdmin {
		sh.agentAdmin = a.Admin
		s.SetAdmin(a.Admin)
		h.log.Info(fmt.Sprintf("server %s/%s set to %s by its agent", s.Backend, s.Name, a.Admin),
			"backend", s.Backend, "server", s.Name)
	}
	if a.Weight >= 0 && a.Weight != sh.agentWeight {
		sh.agentWeight = a.Weight
		w := int(s.ConfWeight) * a.Weight / 100
		if w == 0 && a.Weight > 0 && s.ConfWeight > 0 {
			w = 1 // a small percentage of a small weight still takes some traffic
		}
		if err := h.b.SetWeight(s, w); err != nil {
			h.log.Warn("agent weight not applied", "backend", s.Backend, "server", s.Name, "err", err)
			return
		}
		h.log.Info(fmt.Sprintf("server %s/%s weight set to %d (%d%% of %d) by its agent", s.Backend, s.Name, w, a.Weight, s.ConfWeight),
			"backend", s.Backend, "server", s.Name)
	}
}

// roundDuration writes a check's duration the way a log reader wants it:
// "12ms", "350µs".
func roundDuration(d time.Duration) string {
	if d >= time.Millisecond {
		return d.Round(time.Millisecond).String()
	}
	return d.Round(time.Microsecond).String()
}
