// Package engine assembles one running configuration: backends, frontends
// and their sockets. A worker process runs exactly one engine; the demo and
// tests run one in-process.
package engine

import (
	"context"
	"fmt"
	"log/slog"
	"sort"

	"sluice/backend"
	"sluice/conf"
	"sluice/frontend"
	"sluice/internal/sockets"
	"sluice/stats"
)

// Version is the version shown on the stats page and in /metrics; the
// command sets it before starting an engine.
var Version = "dev"

// Engine is a configuration brought to life.
type Engine struct {
	Config   *conf.Config
	Backends map[string]*backend.Backend
	Front    *frontend.Server
	Sockets  sockets.Set   // the stats listener's socket included
	Stats    *stats.Server // nil without a [stats] table
	// Process is what the stats page shows about this process; a master
	// updates its Workers and Reloads.
	Process *stats.Process
}

// Start builds backends and frontends for cfg, binds (or takes from have)
// their sockets, and starts accepting.
func Start(cfg *conf.Config, have sockets.Set, log *slog.Logger) (*Engine, error) {
	e := &Engine{Config: cfg, Backends: map[string]*backend.Backend{}}
	for _, bc := range cfg.Backends {
		b, err := backend.New(bc)
		if err != nil {
			return nil, err
		}
		e.Backends[bc.Name] = b
	}
	socks, err := frontend.Bind(cfg, have)
	if err != nil {
		return nil, err
	}
	e.Sockets = socks
	e.Front, err = frontend.New(cfg, e.Backends, socks, log)
	if err != nil {
		socks.Close()
		return nil, err
	}
	if err := e.startStats(cfg, have, log); err != nil {
		socks.Close()
		return nil, err
	}
	e.Front.Serve()
	return e, nil
}

// startStats binds (or takes from have) the stats listener and serves the
// stats page, metrics and admin API on it.
func (e *Engine) startStats(cfg *conf.Config, have sockets.Set, log *slog.Logger) error {
	e.Process = stats.NewProcess(Version)
	if cfg.Stats.Bind == "" {
		return nil
	}
	k := sockets.Key{Network: "tcp", Addr: cfg.Stats.Bind}
	sock, ok := have[k]
	if !ok {
		var err error
		if sock, err = sockets.Listen(k, sockets.Options{}); err != nil {
			return fmt.Errorf("stats: bind %s: %w", cfg.Stats.Bind, err)
		}
	}
	e.Sockets[k] = sock
	bes := make([]*backend.Backend, 0, len(e.Backends))
	for _, b := range e.Backends {
		bes = append(bes, b)
	}
	sort.Slice(bes, func(i, j int) bool { return bes[i].Name < bes[j].Name })
	e.Stats = stats.New(stats.Options{
		Frontends:      e.Front.Frontends,
		Backends:       bes,
		Process:        e.Process,
		Current:        e.Front.Current,
		MaxConn:        cfg.Global.MaxConn,
		VitalFrontends: cfg.Global.VitalFrontends,
		AdminToken:     cfg.Stats.AdminToken,
		Log:            log,
	})
	e.Stats.Serve(sock.Listener)
	return nil
}

// Shutdown stops accepting and drains open connections until ctx ends, then
// cuts the rest. It returns how many it cut.
func (e *Engine) Shutdown(ctx context.Context) int {
	// The stats listener goes first: on a reload the new worker, sharing
	// the socket, then answers every scrape with its own figures.
	if e.Stats != nil {
		e.Stats.Close(ctx)
	}
	return e.Front.Shutdown(ctx)
}
