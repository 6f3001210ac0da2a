// Package bgp is the master's BGP speaker: gobgp embedded in-process (no
// gobgpd, no gRPC listener), keeping sessions with the routers of [bgp]
// and announcing each prefix of [[bgp.announce]] while this node can
// serve. It lives in the master so that reloads and worker restarts keep
// the sessions; the master tells it when the node's health may have
// changed (Refresh) and it reads the verdict through a function.
package bgp

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/server"

	"sluice/conf"
	"sluice/stats"
)

// Health is what the master knows of this node's ability to serve.
type Health struct {
	// Known is false while no verdict exists yet (a master that adopted
	// its workers in an upgrade): the announcements stay as they are.
	Known bool
	// Unserved is why the node cannot serve by the rule of /healthz
	// (maintenance, a vital frontend without a server, a stop, no worker);
	// "" while it can.
	Unserved string
	// NoServer lists the frontends without a server up (for when_vital).
	NoServer []string
}

// connectRetry is how often a session that is down is tried again.
// gobgp's default is 120 s; a router back from a reboot should hear of
// this node's routes within seconds.
const connectRetry = 5

// opTimeout bounds one call into the gobgp server.
const opTimeout = 10 * time.Second

// Speaker is the BGP speaker of one master. Its methods may be called from
// any goroutine.
type Speaker struct {
	log      *slog.Logger
	health   func() Health
	onChange func()

	// mu serializes Apply, Refresh and Close: a refresh reads the health
	// under it, so the last one always acts on the latest verdict.
	mu        sync.Mutex
	srv       *server.BgpServer
	cfg       conf.BGP
	stopWatch context.CancelFunc
	paths     map[netip.Prefix][]byte // announced prefix -> gobgp's path UUID

	smu    sync.Mutex // guards status (the watch goroutine writes it too)
	status stats.BGP
}

// New returns a speaker without configuration; Apply starts it. health is
// read at every Refresh; onChange (may be nil) is called, outside any lock
// of the speaker, after the status changed.
func New(log *slog.Logger, health func() Health, onChange func()) *Speaker {
	if onChange == nil {
		onChange = func() {}
	}
	return &Speaker{log: log.With("component", "bgp"), health: health, onChange: onChange}
}

// Enabled reports whether [bgp] is configured and running.
func (s *Speaker) Enabled() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.srv != nil
}

// Apply moves the speaker to cfg: it starts gobgp for the first [bgp],
// stops it when [bgp] goes away, and otherwise changes only what differs:
// a neighbour whose settings did not change keeps its session. A change of
// asn, router_id, listen_port or hold_time restarts every session.
func (s *Speaker) Apply(cfg conf.BGP) error {
	s.mu.Lock()
	err := s.applyLocked(cfg)
	s.mu.Unlock()
	s.onChange()
	return err
}

func (s *Speaker) applyLocked(cfg conf.BGP) error {
	old := s.cfg
	if s.srv != nil && (!cfg.Enabled() || old.ASN != cfg.ASN || old.RouterID != cfg.RouterID ||
		old.ListenPort != cfg.ListenPort || old.HoldTime != cfg.HoldTime) {
		if cfg.Enabled() {
			s.log.Warn("bgp asn, router_id, listen_port or hold_time changed: restarting every session")
		}
		s.stopLocked()
		old = conf.BGP{}
	}
	if !cfg.Enabled() {
		s.cfg = cfg
		return nil
	}
	if s.srv == nil {
		if err := s.startLocked(cfg); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	// Neighbours: delete the gone and changed, add the new and changed.
	keep := map[netip.Addr]bool{}
	for _, n := range cfg.Neighbors {
		if slices.Contains(old.Neighbors, n) {
			keep[n.Address] = true
		}
	}
	for _, n := range old.Neighbors {
		if keep[n.Address] {
			continue
		}
		if err := s.srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: n.Address.String()}); err != nil {
			s.log.Warn("cannot remove neighbour", "neighbor", n.Address, "err", err)
		}
		s.setNeighbor(n.Address.String(), n.ASN, "", false)
	}
	var firstErr error
	for _, n := range cfg.Neighbors {
		if keep[n.Address] {
			continue
		}
		if err := s.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: peerOf(n, cfg.HoldTime)}); err != nil {
			s.log.Error("cannot add neighbour", "neighbor", n.Address, "err", err)
			if firstErr == nil {
				firstErr = fmt.Errorf("bgp neighbour %s: %w", n.Address, err)
			}
			continue
		}
		s.setNeighbor(n.Address.String(), n.ASN, "idle", true)
	}
	// Announcements that went away or changed are withdrawn here; the
	// refresh below announces the new and changed ones as health allows.
	for _, a := range old.Announce {
		if slices.ContainsFunc(cfg.Announce, func(b conf.BGPAnnounce) bool { return equalAnnounce(a, b) }) {
			continue
		}
		s.withdrawLocked(ctx, a.Prefix, "removed from [bgp] or changed by a reload")
	}
	s.cfg = cfg
	s.smu.Lock()
	s.status.ASN, s.status.RouterID = cfg.ASN, cfg.RouterID.String()
	var prefixes []stats.BGPPrefix
	for _, a := range cfg.Announce {
		p := stats.BGPPrefix{Prefix: a.Prefix.String(), Why: "not announced yet"}
		if i := slices.IndexFunc(s.status.Prefixes, func(q stats.BGPPrefix) bool { return q.Prefix == p.Prefix }); i >= 0 {
			p = s.status.Prefixes[i]
		}
		prefixes = append(prefixes, p)
	}
	s.status.Prefixes = prefixes
	s.smu.Unlock()
	s.refreshLocked()
	return firstErr
}

func equalAnnounce(a, b conf.BGPAnnounce) bool {
	return a.Prefix == b.Prefix && a.NextHop == b.NextHop && slices.Equal(a.Communities, b.Communities) && slices.Equal(a.WhenVital, b.WhenVital)
}

func (s *Speaker) startLocked(cfg conf.BGP) error {
	srv := server.NewBgpServer(server.LoggerOption(&logger{s.log})) // no GrpcListenAddress: no API listener
	go srv.Serve()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	err := srv.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn:        cfg.ASN,
		RouterId:   cfg.RouterID.String(),
		ListenPort: int32(cfg.ListenPort),
	}})
	if err != nil {
		srv.Stop()
		return fmt.Errorf("bgp: %w", err)
	}
	wctx, stop := context.WithCancel(context.Background())
	err = srv.WatchEvent(wctx, &api.WatchEventRequest{Peer: &api.WatchEventRequest_Peer{}}, s.peerEvent)
	if err != nil {
		stop()
		srv.Stop()
		return fmt.Errorf("bgp: %w", err)
	}
	s.srv, s.stopWatch, s.paths = srv, stop, map[netip.Prefix][]byte{}
	s.smu.Lock()
	s.status.Neighbors = nil
	s.smu.Unlock()
	s.log.Info("bgp speaker started", "asn", cfg.ASN, "router_id", cfg.RouterID, "listen_port", cfg.ListenPort)
	return nil
}

// stopLocked ends every session (a Cease to each neighbour: the routers
// drop this node's routes at once) and the gobgp server.
func (s *Speaker) stopLocked() {
	if s.srv == nil {
		return
	}
	for p := range s.paths {
		s.markLocked(p, false, "bgp stopped")
	}
	s.stopWatch()
	s.srv.Stop()
	s.srv, s.paths, s.cfg = nil, nil, conf.BGP{}
	s.smu.Lock()
	s.status.Neighbors = nil
	s.smu.Unlock()
	s.log.Info("bgp speaker stopped")
}

// Close withdraws everything and ends the sessions.
func (s *Speaker) Close() {
	s.mu.Lock()
	s.stopLocked()
	s.mu.Unlock()
	s.onChange()
}

// Refresh announces or withdraws each prefix by the current health. The
// master calls it whenever the verdict may have changed; it returns once
// gobgp has taken the change (the routers hear of it right after).
func (s *Speaker) Refresh() {
	s.mu.Lock()
	changed := s.refreshLocked()
	s.mu.Unlock()
	if changed {
		s.onChange()
	}
}

func (s *Speaker) refreshLocked() bool {
	if s.srv == nil {
		return false
	}
	h := s.health()
	if !h.Known {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	changed := false
	for _, a := range s.cfg.Announce {
		why := h.Unserved
		for _, f := range a.WhenVital {
			if why == "" && slices.Contains(h.NoServer, f) {
				why = "frontend " + f + " has no server up (when_vital)"
			}
		}
		_, on := s.paths[a.Prefix]
		switch {
		case why == "" && !on:
			if err := s.announceLocked(ctx, a); err != nil {
				s.log.Error("cannot announce", "prefix", a.Prefix, "err", err)
				continue
			}
			changed = true
		case why != "" && on:
			s.withdrawLocked(ctx, a.Prefix, why)
			changed = true
		case why != "":
			changed = s.setWhy(a.Prefix, why) || changed
		}
	}
	return changed
}

func (s *Speaker) announceLocked(ctx context.Context, a conf.BGPAnnounce) error {
	r, err := s.srv.AddPath(ctx, &api.AddPathRequest{TableType: api.TableType_GLOBAL, Path: pathOf(a)})
	if err != nil {
		return err
	}
	s.paths[a.Prefix] = r.Uuid
	s.markLocked(a.Prefix, true, "")
	s.log.Info("bgp: announced", "prefix", a.Prefix)
	return nil
}

func (s *Speaker) withdrawLocked(ctx context.Context, p netip.Prefix, why string) {
	id, on := s.paths[p]
	if !on {
		return
	}
	if err := s.srv.DeletePath(ctx, &api.DeletePathRequest{TableType: api.TableType_GLOBAL, Uuid: id}); err != nil {
		s.log.Error("cannot withdraw", "prefix", p, "err", err)
		return
	}
	delete(s.paths, p)
	s.markLocked(p, false, why)
	s.log.Warn("bgp: withdrawn", "prefix", p, "reason", why)
}

// markLocked records an announcement (on) or a withdrawal in the status.
func (s *Speaker) markLocked(p netip.Prefix, on bool, why string) {
	now := time.Now()
	s.smu.Lock()
	defer s.smu.Unlock()
	s.status.Changes++
	s.status.LastChange = now
	if on {
		s.status.LastWhy = "announced " + p.String()
	} else {
		s.status.LastWhy = "withdrew " + p.String() + ": " + why
	}
	for i := range s.status.Prefixes {
		if s.status.Prefixes[i].Prefix == p.String() {
			s.status.Prefixes[i] = stats.BGPPrefix{Prefix: p.String(), Announced: on, Why: why, Since: now}
		}
	}
}

// setWhy updates why a withdrawn prefix stays withdrawn; true if it changed.
func (s *Speaker) setWhy(p netip.Prefix, why string) bool {
	s.smu.Lock()
	defer s.smu.Unlock()
	for i := range s.status.Prefixes {
		if q := &s.status.Prefixes[i]; q.Prefix == p.String() && q.Why != why {
			q.Why = why
			return true
		}
	}
	return false
}

// Status is a copy of the speaker's state; nil while [bgp] is not running.
func (s *Speaker) Status() *stats.BGP {
	s.smu.Lock()
	defer s.smu.Unlock()
	if s.status.ASN == 0 {
		return nil
	}
	st := s.status
	st.Neighbors = slices.Clone(st.Neighbors)
	st.Prefixes = slices.Clone(st.Prefixes)
	return &st
}

func (s *Speaker) peerEvent(r *api.WatchEventResponse) {
	pe := r.GetPeer()
	if pe == nil || pe.Peer == nil || pe.Peer.State == nil || pe.Peer.Conf == nil {
		return
	}
	addr := pe.Peer.State.NeighborAddress
	if _, err := netip.ParseAddr(addr); err != nil {
		addr = pe.Peer.Conf.NeighborAddress
	}
	if _, err := netip.ParseAddr(addr); err != nil {
		return // gobgp's event of a peer being set up, before its address
	}
	state := strings.ToLower(strings.TrimPrefix(pe.Peer.State.SessionState.String(), "PeerState_"))
	if s.setNeighbor(addr, 0, state, true) {
		s.log.Info("bgp session", "neighbor", addr, "state", state)
		s.onChange()
	}
}

// setNeighbor records a session's state (keep false: forget it); true if
// the state changed. asn 0 (a session event) only updates a neighbour
// already listed.
func (s *Speaker) setNeighbor(addr string, asn uint32, state string, keep bool) bool {
	s.smu.Lock()
	defer s.smu.Unlock()
	i := slices.IndexFunc(s.status.Neighbors, func(n stats.BGPNeighbor) bool { return n.Address == addr })
	if !keep {
		if i >= 0 {
			s.status.Neighbors = slices.Delete(s.status.Neighbors, i, i+1)
		}
		return i >= 0
	}
	if i < 0 && asn == 0 {
		return false // an event of a neighbour removed meanwhile
	}
	if i < 0 {
		s.status.Neighbors = append(s.status.Neighbors, stats.BGPNeighbor{Address: addr, ASN: asn})
		slices.SortFunc(s.status.Neighbors, func(a, b stats.BGPNeighbor) int { return strings.Compare(a.Address, b.Address) })
		i = slices.IndexFunc(s.status.Neighbors, func(n stats.BGPNeighbor) bool { return n.Address == addr })
	}
	n := &s.status.Neighbors[i]
	if asn == 0 {
		asn = n.ASN
	}
	if n.State == state && n.ASN == asn {
		return false
	}
	n.State, n.ASN, n.Up, n.Since = state, asn, state == "established", time.Now()
	return true
}
