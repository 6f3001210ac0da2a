// Package engine assembles one running configuration: backends, frontends
// and their sockets. A worker process runs exactly one engine; the demo and
// tests run one in-process.
package engine

import (
	"context"
	"fmt"
	"log/slog"
	"net"

	"sluice/backend"
	"sluice/conf"
	"sluice/frontend"
	"sluice/internal/peers"
	"sluice/internal/sockets"
)

// Engine is a configuration brought to life.
type Engine struct {
	Config   *conf.Config
	Backends map[string]*backend.Backend
	Front    *frontend.Server
	Sockets  sockets.Set
	Peers    *peers.Syncer // stick-table sync; nil without [peers]
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
	if err := e.startPeers(have, log); err != nil {
		socks.Close()
		return nil, err
	}
	e.Front.Serve()
	return e, nil
}

// startPeers starts stick-table sync when [peers] is set. Its listening
// socket is taken from have when the master handed one over (key "tcp
// BIND"), else bound here; either way it joins e.Sockets.
func (e *Engine) startPeers(have sockets.Set, log *slog.Logger) error {
	pc := e.Config.Peers
	if !pc.Enabled() {
		return nil
	}
	var sock *sockets.Socket
	if pc.Bind != "" {
		k := sockets.Key{Network: "tcp", Addr: pc.Bind}
		if s, ok := have[k]; ok {
			sock = s
		} else {
			s, err := sockets.Listen(k, sockets.Options{})
			if err != nil {
				return fmt.Errorf("peers: bind %s: %w", pc.Bind, err)
			}
			sock = s
		}
		e.Sockets[k] = sock
	}
	var ln net.Listener
	if sock != nil {
		ln = sock.Listener
	}
	p, err := peers.Start(pc, ln, e.Backends, log)
	if err != nil {
		return fmt.Errorf("peers: %w", err)
	}
	e.Peers = p
	return nil
}

// Shutdown stops accepting and drains open connections until ctx ends, then
// cuts the rest. It returns how many it cut.
func (e *Engine) Shutdown(ctx context.Context) int {
	cut := e.Front.Shutdown(ctx)
	if e.Peers != nil {
		e.Peers.Close() // after the drain: its last picks still reach the peer
	}
	return cut
}
