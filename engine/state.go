package engine

import (
	"fmt"
	"time"

	"sluice/conf"
)

// ServerState is what a reload carries from the old worker to the new one
// for one server: its health result, its admin state and its runtime
// weight. ConfWeight and Addr are what the old worker's configuration said,
// so the new one can tell whether the operator changed them (then the new
// configuration wins).
type ServerState struct {
	Backend    string `json:"backend"`
	Server     string `json:"server"`
	Addr       string `json:"addr"`
	Up         bool   `json:"up"`
	Admin      string `json:"admin"` // conf.AdminState's name
	Weight     int    `json:"weight"`
	ConfWeight int    `json:"conf_weight"`
	// LastChange is when the health state last changed (unix nanoseconds),
	// so the stats page's lastchg does not restart at every reload or crash.
	LastChange int64 `json:"last_change,omitempty"`
}

// State is the state of every server of an engine.
type State []ServerState

// State snapshots every server's state, in configuration order.
func (e *Engine) State() State {
	var out State
	for _, bc := range e.Config.Backends {
		b := e.Backends[bc.Name]
		if b == nil {
			continue
		}
		for _, s := range b.Servers() {
			out = append(out, ServerState{
				Backend:    b.Name,
				Server:     s.Name,
				Addr:       s.Addr,
				Up:         s.Up(),
				Admin:      s.Admin().String(),
				Weight:     int(s.Weight()),
				ConfWeight: int(s.ConfWeight),
				LastChange: s.LastChange().UnixNano(),
			})
		}
	}
	return out
}

// Restore applies st to the servers that still exist and returns how many
// it touched. Admin state always carries over; health only when the
// server's address is unchanged; the runtime weight only when the
// configured weight is unchanged.
func (e *Engine) Restore(st State) int {
	n := 0
	for _, ss := range st {
		b := e.Backends[ss.Backend]
		if b == nil {
			continue
		}
		s := b.Server(ss.Server)
		if s == nil {
			continue
		}
		n++
		if a, err := conf.ParseAdminState(ss.Admin); err == nil {
			s.SetAdmin(a)
		}
		if ss.Addr == s.Addr {
			s.SetUp(ss.Up)
			s.MarkRestored()
			if ss.LastChange > 0 {
				s.RestoreLastChange(time.Unix(0, ss.LastChange))
			}
		}
		if ss.ConfWeight == int(s.ConfWeight) && ss.Weight != int(s.Weight()) {
			// Bounds were checked when the weight was set.
			_ = b.SetWeight(s, ss.Weight)
		}
	}
	return n
}

// SetServer changes one server's state at run time: admin ("" leaves it),
// health (nil leaves it) and weight (nil leaves it).
func (e *Engine) SetServer(backendName, server, admin string, up *bool, weight *int) error {
	b := e.Backends[backendName]
	if b == nil {
		return fmt.Errorf("no backend %q", backendName)
	}
	s := b.Server(server)
	if s == nil {
		return fmt.Errorf("backend %s has no server %q", backendName, server)
	}
	if admin != "" {
		a, err := conf.ParseAdminState(admin)
		if err != nil {
			return err
		}
		s.SetAdmin(a)
	}
	if up != nil {
		s.SetUp(*up)
	}
	if weight != nil {
		if err := b.SetWeight(s, *weight); err != nil {
			return err
		}
	}
	return nil
}
