package frontend

import (
	"net"
	"time"

	"sluice/policy"
)

// Policy returns the frontend's edge policy (rules and rate limit), nil
// when it has none.
func (f *Frontend) Policy() *policy.Frontend { return f.policy }

// admit asks the policy about a new connection of f from client (after any
// PROXY header). It reports true when the connection is to be served (the
// policy must then hear of its end, f.policy.Closed); false when the
// policy took it over: closed at once (deny), or held by a tarpit whose end
// calls end (the connection's accounting) after closing c.
func (s *Server) admit(f *Frontend, client net.Conn, m *connMeta, end func()) bool {
	v := f.policy.CheckConn(m.client.Addr(), len(f.cfg.TLS) > 0, time.Now())
	switch v.Outcome {
	case policy.Pass:
		return true
	case policy.Tarpit:
		f.Counters.Denied.Add(1)
		s.hold(v.Hold, func() {
			client.Close()
			end()
		})
	default:
		f.Counters.Denied.Add(1)
		s.log.Debug("connection refused by policy", "frontend", f.Name, "client", m.client, "rule", v.Rule, "limited", v.Limited)
		client.Close()
		end()
	}
	return false
}

// held is a connection a tarpit holds: a timer ends it, not a goroutine.
type held struct {
	t   *time.Timer
	end func()
}

// hold runs end after d, or at once when the server stops accepting
// (StopAccepting ends every hold: a drain does not wait for them). The
// held connection keeps its connection slots, so maxconn bounds the holds.
func (s *Server) hold(d time.Duration, end func()) {
	h := &held{end: end}
	s.mu.Lock()
	select {
	case <-s.done:
		s.mu.Unlock()
		end()
		return
	default:
	}
	s.held[h] = struct{}{}
	h.t = time.AfterFunc(d, func() {
		s.mu.Lock()
		delete(s.held, h)
		s.mu.Unlock()
		h.end()
	})
	s.mu.Unlock()
}

// endHolds ends every tarpit hold now; done is closed already, so no
// hold starts after it.
func (s *Server) endHolds() {
	var ends []func()
	s.mu.Lock()
	for h := range s.held {
		delete(s.held, h)
		if h.t.Stop() { // else its timer is ending it
			ends = append(ends, h.end)
		}
	}
	s.mu.Unlock()
	for _, end := range ends {
		end()
	}
}
