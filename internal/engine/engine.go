// Package engine assembles one running configuration: backends, frontends
// and their sockets. A worker process runs exactly one engine; the demo and
// tests run one in-process.
package engine

import (
	"context"
	"log/slog"

	"sluice/backend"
	"sluice/conf"
	"sluice/frontend"
	"sluice/internal/sockets"
)

// Engine is a configuration brought to life.
type Engine struct {
	Config   *conf.Config
	Backends map[string]*backend.Backend
	Health   map[string]*backend.HealthChecks // by backend name
	Front    *frontend.Server
	Sockets  sockets.Set
}

// Start builds backends and frontends for cfg, binds (or takes from have)
// their sockets, and starts accepting.
func Start(cfg *conf.Config, have sockets.Set, log *slog.Logger) (*Engine, error) {
	e := &Engine{Config: cfg, Backends: map[string]*backend.Backend{}, Health: map[string]*backend.HealthChecks{}}
	for _, bc := range cfg.Backends {
		b, err := backend.New(bc)
		if err != nil {
			return nil, err
		}
		e.Backends[bc.Name] = b
		e.Health[bc.Name] = backend.NewHealthChecks(b, bc, log)
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
	// Checks start before traffic, so that init_state = "down" holds from
	// the first connection on.
	for _, h := range e.Health {
		h.Start()
	}
	e.Front.Serve()
	return e, nil
}

// Shutdown stops accepting and drains open connections until ctx ends, then
// cuts the rest. It returns how many it cut.
func (e *Engine) Shutdown(ctx context.Context) int {
	cut := e.Front.Shutdown(ctx)
	for _, h := range e.Health {
		h.Stop()
	}
	return cut
}
