// Package engine assembles one running configuration: backends, frontends
// and their sockets. A worker process runs exactly one engine; the demo and
// tests run one in-process.
package engine

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"slices"
	"sort"
	"sync"
	"time"

	"sluice/backend"
	"sluice/conf"
	"sluice/frontend"
	"sluice/internal/fdlimit"
	"sluice/internal/sockets"
	"sluice/l4"
	"sluice/peers"
	"sluice/policy"
	"sluice/stats"
)

// Version is the version shown on the stats page and in /metrics; the
// command sets it before starting an engine.
var Version = "dev"

// Engine is a configuration brought to life.
type Engine struct {
	Config   *conf.Config
	Backends map[string]*backend.Backend
	Health   map[string]*backend.HealthChecks // by backend name
	Front    *frontend.Server
	// Sockets holds every listener of Config (see Listeners), frontends'
	// and the stats listener's alike.
	Sockets sockets.Set
	// Discovery holds the DNS discovery of every backend with a [dns]
	// section, by backend name.
	Discovery map[string]*backend.Discovery
	Stats     *stats.Server // nil without a [stats] table
	// Process is what the stats page shows about this process; a master
	// updates its Workers and Reloads.
	Process *stats.Process
	Peers   *peers.Syncer // stick-table sync; nil without [peers]
	// Node is this node's admin state (maintenance), shared with the
	// stats admin API; Unserved reads it.
	Node *stats.Node
	// fronts is Front.Frontends by name, for Unserved.
	fronts map[string]*frontend.Frontend
	// FDs is how the descriptor limit is shared between connections and
	// UDP flows (Config holds the maxconn and max_flows it chose).
	FDs fdlimit.Budget
	// stopLoops releases the epoll relay loops; nil when they did not
	// start (no tcp frontend, or a failure: the goroutine relay serves).
	stopLoops func()
}

// FitLimits fits global.maxconn and the max_flows of udp frontends to the
// descriptor limit (fdlimit.Plan). The returned config is cfg when nothing
// changes, else a copy: cfg itself is never modified.
func FitLimits(cfg *conf.Config, limit uint64) (*conf.Config, fdlimit.Budget) {
	var udp []fdlimit.UDPFrontend
	tcp := false
	for _, f := range cfg.Frontends {
		if f.Mode == conf.ModeUDP {
			udp = append(udp, fdlimit.UDPFrontend{Name: f.Name, MaxFlows: f.MaxFlows})
		} else {
			tcp = true
		}
	}
	// global.maxconn caps accepted connections: a file without a tcp or
	// http frontend accepts none, so it holds no descriptor and its value
	// must not be warned about nor take the flows' share.
	conns, set := cfg.Global.MaxConn, cfg.Global.MaxConnSet
	if !tcp {
		conns, set = 0, true
	}
	b := fdlimit.Plan(conns, set, udp, FixedFDs(cfg), limit)
	if !tcp {
		b.MaxConn = cfg.Global.MaxConn
	}
	c := *cfg // shallow: the caps differ, and the frontends that have one
	c.Global.MaxConn = b.MaxConn
	c.Frontends = make([]*conf.Frontend, len(cfg.Frontends))
	for i, f := range cfg.Frontends {
		if n, ok := b.Flows[f.Name]; ok && n != f.MaxFlows {
			fc := *f
			fc.MaxFlows = n
			f = &fc
		}
		c.Frontends[i] = f
	}
	return &c, b
}

// FixedFDs counts what cfg holds outside connections and flows: a socket
// per listening address (frontends, stats, peers, control), one per
// server with active health checks (a check holds one socket at a time;
// a DNS-discovered backend counts its max_servers) and the stats
// listener's connection cap.
func FixedFDs(cfg *conf.Config) fdlimit.Fixed {
	var fx fdlimit.Fixed
	for _, f := range cfg.Frontends {
		fx.Listeners += len(f.Bind)
	}
	if cfg.Stats.Bind != "" {
		fx.Listeners++
		fx.Stats = cfg.Stats.MaxConn
	}
	if cfg.Peers.Bind != "" {
		fx.Listeners++
	}
	if cfg.Global.ControlSocket != "" {
		fx.Listeners++
	}
	for _, b := range cfg.Backends {
		if !b.Health.Check.Active() {
			continue
		}
		fx.Checks += len(b.Servers)
		if b.DNS != nil {
			fx.Checks += b.DNS.MaxServers
		}
	}
	return fx
}

// Options are the optional parts of starting an engine.
type Options struct {
	// State is server state carried over from a previous worker; it is
	// applied before the first connection is accepted.
	State State
	// AfterAdminChange is called after the stats admin API changed a
	// server, before it answers (see stats.Options).
	AfterAdminChange func()
	// NodeMaint starts the node in maintenance (the master carries it
	// over reloads and restarts).
	NodeMaint bool
	// OnServeChange, when set, is called after anything that may change
	// Unserved's answer: a server going up or down (health checks), an
	// admin API change, the node's maintenance. It may be called from
	// several goroutines at once and must not block for long.
	OnServeChange func()
	// BGP, when set, is the master's BGP state for the stats listener.
	BGP func() *stats.BGP
}

// Listeners lists every socket cfg needs: each frontend bind address (tcp,
// or udp for mode "udp") and the stats listener. This is the manifest the
// master binds and hands to workers; sockets are keyed by network and
// address only, so one whose address is unchanged survives a reload.
func Listeners(cfg *conf.Config) []sockets.Spec {
	var out []sockets.Spec
	for _, f := range cfg.Frontends {
		for _, a := range f.Bind {
			out = append(out, sockets.Spec{
				Key:     sockets.Key{Network: f.Network(), Addr: a},
				Role:    sockets.RoleFrontend,
				Options: sockets.Options{Freebind: f.Freebind},
			})
		}
	}
	if k, ok := StatsKey(cfg); ok {
		out = append(out, sockets.Spec{Key: k, Role: sockets.RoleStats})
	}
	if k, ok := PeersKey(cfg); ok {
		out = append(out, sockets.Spec{Key: k, Role: sockets.RolePeers})
	}
	return out
}

// PeersKey is the key of the stick-table sync listener, and false when
// cfg has no [peers] bind.
func PeersKey(cfg *conf.Config) (sockets.Key, bool) {
	if !cfg.Peers.Enabled() || cfg.Peers.Bind == "" {
		return sockets.Key{}, false
	}
	return sockets.Key{Network: "tcp", Addr: cfg.Peers.Bind}, true
}

// StatsKey is the key of the stats listener in an engine's Sockets (and in
// a worker's inherited set), and false when cfg has no [stats] bind. The
// stats server takes its listener with e.Sockets[key].Listener.
func StatsKey(cfg *conf.Config) (sockets.Key, bool) {
	if cfg.Stats.Bind == "" {
		return sockets.Key{}, false
	}
	return sockets.Key{Network: "tcp", Addr: cfg.Stats.Bind}, true
}

// Start builds backends and frontends for cfg, binds (or takes from have)
// their sockets, and starts accepting.
func Start(cfg *conf.Config, have sockets.Set, log *slog.Logger) (*Engine, error) {
	return StartWith(cfg, have, log, Options{})
}

// StartWith is Start with options.
//
// Start binds every socket once (sockets.Bind, the same manifest a master
// hands over) and gives the set to the frontends. When a step fails, what
// the steps before it started is undone in reverse order (stats, peers,
// discovery, health checks, then the sockets this call bound, never the
// inherited ones), so a failed start, a reload whose new configuration
// does not come up for one, leaves no resolver, peer link or check behind
// and every address free again.
func StartWith(cfg *conf.Config, have sockets.Set, log *slog.Logger, opts Options) (e *Engine, err error) {
	for _, w := range cfg.Warnings { // at every start and reload, until fixed
		log.Warn(w.Msg, "file", w.File, "line", w.Line, "key", w.Key)
	}
	cfg, budget := FitLimits(cfg, fdlimit.Limit())
	for _, m := range budget.Info {
		log.Info(m)
	}
	for _, m := range budget.Warn {
		log.Warn(m)
	}
	var undo []func()
	defer func() {
		if err == nil {
			return
		}
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
		e = nil
	}()
	e = &Engine{Config: cfg, Backends: map[string]*backend.Backend{}, Discovery: map[string]*backend.Discovery{},
		Health: map[string]*backend.HealthChecks{}, FDs: budget, Node: &stats.Node{}}
	e.Node.SetMaint(opts.NodeMaint)
	for _, bc := range cfg.Backends {
		b, err := backend.New(bc)
		if err != nil {
			return nil, err
		}
		e.Backends[bc.Name] = b
		h := backend.NewHealthChecks(b, bc, log)
		if fn := opts.OnServeChange; fn != nil {
			h.OnChange = func(*backend.Server, bool) { fn() }
		}
		e.Health[bc.Name] = h
		// Stopped also when never started: discovery starts checks of
		// the servers it finds (Sync) before Start does.
		undo = append(undo, h.Stop)
		if bc.DNS != nil {
			d, err := backend.NewDiscovery(b, bc.DNS, log)
			if err != nil {
				return nil, err
			}
			e.Discovery[bc.Name] = d
			undo = append(undo, d.Stop) // a no-op until Start
		}
	}
	if n := e.Restore(opts.State); n > 0 {
		log.Info("server state carried over", "servers", n)
	}
	socks, err := sockets.Bind(Listeners(cfg), have)
	if err != nil {
		return nil, err
	}
	e.Sockets = socks
	undo = append(undo, func() { closeOwn(socks, have) })
	e.Front, err = frontend.New(cfg, e.Backends, socks, log)
	if err != nil {
		return nil, err
	}
	e.fronts = map[string]*frontend.Frontend{}
	for _, f := range e.Front.Frontends {
		e.fronts[f.Name] = f
	}
	if fn := opts.OnServeChange; fn != nil {
		e.Node.OnChange(fn)
	}
	for name, d := range e.Discovery {
		// Discovered servers are checked like listed ones; removed ones
		// stop being checked.
		d.OnChange = e.Health[name].Sync
		d.Start()
	}
	if err := e.startPeers(log); err != nil {
		return nil, err
	}
	if e.Peers != nil {
		undo = append(undo, func() { e.Peers.Close() })
	}
	if err := e.startStats(cfg, log, opts); err != nil {
		return nil, err
	}
	if e.Stats != nil {
		undo = append(undo, func() { e.Stats.Close(context.Background()) })
	}
	// Checks start before traffic, so that init_state = "down" holds from
	// the first connection on.
	for _, h := range e.Health {
		h.Start()
	}
	e.startLoops(log) // last: nothing after it can fail and leave them running
	e.Front.Serve()
	return e, nil
}

var (
	// procs is the scheduler slots the program was given, before the
	// loops' own (read once: the engine raises it).
	procs     = runtime.GOMAXPROCS(0)
	procsOnce sync.Once
	// startRelayLoops is l4.StartLoops; a test makes it fail.
	startRelayLoops = l4.StartLoops
)

// startLoops starts the epoll relay loops when a tcp frontend may use
// them, one per scheduler slot the program had. When they cannot start
// (out of descriptors, say) it logs why and tcp connections are relayed
// with goroutines: slower, but the worker serves.
func (e *Engine) startLoops(log *slog.Logger) {
	tcp := false
	for _, f := range e.Config.Frontends {
		tcp = tcp || f.Mode == conf.ModeTCP
	}
	if !tcp {
		return
	}
	stop, err := startRelayLoops(procs)
	if err != nil {
		log.Warn("epoll relay loops did not start: tcp connections are relayed with goroutines", "err", err)
		return
	}
	e.stopLoops = stop
	// The loops spend their idle time in epoll_wait. While every P is held
	// by a goroutine in a system call, the runtime's monitor takes the P
	// away from a waiting loop and hands it on, and the loop must win one
	// back when its events come: a futex wake and a context switch per
	// wait, about 8% of the keep-alive throughput. A P per loop on top of
	// the ones the rest of the program had keeps one idle, and the monitor
	// leaves a waiting loop alone. Once per process: engines in one process
	// (tests, the demo) share the loops.
	procsOnce.Do(func() { runtime.GOMAXPROCS(2 * procs) })
}

// closeOwn closes the sockets of s that did not come from have.
func closeOwn(s, have sockets.Set) {
	for k, sock := range s {
		if _, inherited := have[k]; !inherited {
			sock.Close()
		}
	}
}

// StopAccepting stops taking new connections; open ones go on, and HTTP
// keep-alive clients are told to close after their next response.
// The stats listener stops first: on a reload the new worker, sharing the
// socket, then answers every scrape with its own figures.
func (e *Engine) StopAccepting() {
	// Bounded: a stats request still being served (an admin call waits up
	// to 2s for the master) must not hold the worker's drain, whose main
	// loop answers the master and its signals only once this returns.
	ctx, cancel := context.WithTimeout(context.Background(), statsCloseWait)
	defer cancel()
	e.closeStats(ctx)
	e.Front.StopAccepting()
}

// statsCloseWait is the longest StopAccepting waits for stats requests in
// flight before it closes their connections.
const statsCloseWait = 3 * time.Second

// startPeers starts stick-table sync when [peers] is set, on the peers
// listener that Listeners put in e.Sockets (the master binds it and hands
// it over like the others, so two workers never fight over the port).
func (e *Engine) startPeers(log *slog.Logger) error {
	pc := e.Config.Peers
	if !pc.Enabled() {
		return nil
	}
	var ln net.Listener
	if k, ok := PeersKey(e.Config); ok {
		sock := e.Sockets[k]
		if sock == nil || sock.Listener == nil {
			return fmt.Errorf("peers: no listener for %s", pc.Bind)
		}
		ln = sock.Listener
	}
	p, err := peers.Start(pc, ln, e.Backends, e.sharedLimits(), log)
	if err != nil {
		return fmt.Errorf("peers: %w", err)
	}
	e.Peers = p
	return nil
}

// sharedLimits are the rate limits with shared = true, by frontend name:
// the limiters the frontends enforce, so that what peers count adds up in
// them.
func (e *Engine) sharedLimits() map[string]*policy.Limiter {
	out := map[string]*policy.Limiter{}
	for _, f := range e.Front.Frontends {
		if p := f.Policy(); p != nil && p.Limit.Shared() {
			out[f.Name] = p.Limit
		}
	}
	return out
}

// Shutdown stops accepting and drains open connections until ctx ends, then
// cuts the rest. It returns how many it cut.
func (e *Engine) Shutdown(ctx context.Context) int {
	e.closeStats(ctx)
	for _, d := range e.Discovery {
		d.Stop()
	}
	cut := e.Front.Shutdown(ctx)
	for _, h := range e.Health {
		h.Stop()
	}
	if e.stopLoops != nil {
		e.stopLoops() // after the drain: the relays left were cut
	}
	if e.Peers != nil {
		e.Peers.Close() // after the drain: its last picks still reach the peer
	}
	return cut
}

// Unserved says why this node cannot serve, or "" while it can: the one
// rule (frontend.Unserved) that /healthz answers, `check --live` asks and
// the master's global.track_file follows.
func (e *Engine) Unserved() string {
	return frontend.Unserved(e.Node.Maint(), e.Config.Global.VitalFrontends, e.fronts, e.Backends)
}

// Down is Unserved with the node's maintenance left aside: why a vital
// frontend has no server up, or "". The master's track file tells a node
// that cannot serve (a fault) from one handing over (maintenance, a stop).
func (e *Engine) Down() string {
	return frontend.Unserved(false, e.Config.Global.VitalFrontends, e.fronts, e.Backends)
}

// NoServer lists the frontends named by a bgp.announce.when_vital that
// have no server up (in file order of first mention), for the master's BGP
// speaker; nil without [bgp].
func (e *Engine) NoServer() []string {
	var out []string
	for _, a := range e.Config.BGP.Announce {
		for _, name := range a.WhenVital {
			if !slices.Contains(out, name) && frontend.Unserved(false, []string{name}, e.fronts, e.Backends) != "" {
				out = append(out, name)
			}
		}
	}
	return out
}

// afterAdmin is what runs after an admin API change: the serving verdict
// may have changed (a server put in maintenance), then the caller's own.
func afterAdmin(opts Options) func() {
	if opts.OnServeChange == nil {
		return opts.AfterAdminChange
	}
	return func() {
		opts.OnServeChange()
		if opts.AfterAdminChange != nil {
			opts.AfterAdminChange()
		}
	}
}

func (e *Engine) closeStats(ctx context.Context) {
	if e.Stats != nil {
		e.Stats.Close(ctx)
	}
}

// startStats serves the stats page, metrics and admin API on the stats
// listener, which Listeners put in e.Sockets.
func (e *Engine) startStats(cfg *conf.Config, log *slog.Logger, opts Options) error {
	e.Process = stats.NewProcess(Version)
	k, ok := StatsKey(cfg)
	if !ok {
		return nil
	}
	sock := e.Sockets[k]
	if sock == nil || sock.Listener == nil {
		return fmt.Errorf("stats: no listener for %s", cfg.Stats.Bind)
	}
	bes := make([]*backend.Backend, 0, len(e.Backends))
	for _, b := range e.Backends {
		bes = append(bes, b)
	}
	sort.Slice(bes, func(i, j int) bool { return bes[i].Name < bes[j].Name })
	e.Stats = stats.New(stats.Options{
		Frontends: e.Front.Frontends,
		Backends:  bes,
		Process:   e.Process,
		Current:   e.Front.Current,
		MaxConn:   cfg.Global.MaxConn,
		MaxConns:  cfg.Stats.MaxConn,
		FDs: &stats.FDs{Limit: e.FDs.Limit, Reserve: e.FDs.Reserved(), MaxConnShare: 2 * e.FDs.MaxConn,
			FlowsShare: e.FDs.FlowsTotal()},
		VitalFrontends:   cfg.Global.VitalFrontends,
		AdminToken:       cfg.Stats.AdminToken,
		Log:              log,
		Counters:         e.counters(),
		AfterAdminChange: afterAdmin(opts),
		Node:             e.Node,
		Unserved:         e.Unserved,
		TrackFile:        cfg.Global.TrackFile,
		BGP:              opts.BGP,
	})
	e.Stats.Serve(sock.Listener)
	return nil
}
