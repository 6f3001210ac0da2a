// Package health runs active checks of servers (tcp, http, dns, agent, udp)
// and keeps the rise/fall counting of each in one small state machine.
//
// A Checker knows nothing about backends or balancers: after every check it
// hands a Report to its Target, and whoever implements Target (the backend
// package) turns state changes into server state, logs and counters. One
// goroutine runs each server's checks one after the other, so checks of one
// server never overlap; goroutines parked on timers cost nothing between
// checks, which keeps thousands of servers cheap to watch.
package health

import (
	"context"
	"crypto/tls"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"sluice/conf"
)

// Result is the outcome of one check.
type Result struct {
	At       time.Time     // when the check started
	OK       bool          // it passed
	Desc     string        // short, operator-readable: "HTTP 500", "connection refused", "agent: drain 50%"
	Code     int           // HTTP status or DNS rcode when there is one
	Duration time.Duration // how long it took
	Agent    *AgentReply   // what an agent said (check = "agent" and it answered)
}

// Report is what a Checker tells its Target after every check.
type Report struct {
	Result  Result
	Up      bool // the state after this check
	Changed bool // Up differs from the state before it
	// N of Need consecutive checks have gone against the current state (the
	// stats page shows "DOWN 1/2"); both 0 when the state is settled.
	N, Need int
}

// Target receives a Checker's reports. Report is called from the checker's
// goroutine, one call at a time.
type Target interface {
	Report(Report)
}

// Spec is what to check on one server.
type Spec struct {
	conf.Health
	Addr      string            // the server's host:port
	SendProxy conf.ProxyVersion // the backend's send_proxy
	// TLS, when not nil, is the backend's TLS to this server: tcp and
	// http checks handshake with it after any PROXY header.
	TLS *tls.Config
}

// checkAddr is where the check connects: the server's address, with
// check_port when set.
func (s *Spec) checkAddr() string {
	if s.CheckPort == 0 {
		return s.Addr
	}
	host, _, err := net.SplitHostPort(s.Addr)
	if err != nil {
		return s.Addr
	}
	return net.JoinHostPort(host, strconv.Itoa(s.CheckPort))
}

// agentAddr is where an agent check connects: agent_port, else the check
// address.
func (s *Spec) agentAddr() string {
	if s.AgentPort == 0 {
		return s.checkAddr()
	}
	host, _, err := net.SplitHostPort(s.Addr)
	if err != nil {
		return s.Addr
	}
	return net.JoinHostPort(host, strconv.Itoa(s.AgentPort))
}

// Checker runs the checks of one server until Stop.
type Checker struct {
	spec   Spec
	target Target

	// State machine, touched by the checker's goroutine only.
	up    bool
	count int // consecutive checks against up

	forced atomic.Bool // ForceDown was called

	mu       sync.Mutex
	conn     net.Conn // of the check in flight
	stopping bool

	stop   chan struct{}
	done   chan struct{}
	once   sync.Once
	ctx    context.Context
	cancel context.CancelFunc
}

// New builds a checker of the server spec describes; up is its state before
// the first check (init_state). Call Start to run it.
func New(spec Spec, up bool, t Target) *Checker {
	ctx, cancel := context.WithCancel(context.Background())
	return &Checker{spec: spec, target: t, up: up, stop: make(chan struct{}), done: make(chan struct{}), ctx: ctx, cancel: cancel}
}

// Start runs the checks in their own goroutine. The first check comes after
// a random part of the interval, so that the checks of many servers started
// together spread over it.
func (c *Checker) Start() {
	first := time.Duration(rand.Int64N(int64(c.spec.Interval) + 1))
	if startLoop(c, first) {
		return // plain tcp checks share one event loop (tcploop_linux.go)
	}
	go c.run(first)
}

// Stop ends the checks and waits for a check in flight (at most its
// timeout).
func (c *Checker) Stop() {
	c.once.Do(func() {
		close(c.stop)
		c.cancel()
		c.mu.Lock()
		c.stopping = true
		if c.conn != nil {
			c.conn.SetDeadline(time.Unix(1, 0))
		}
		c.mu.Unlock()
	})
	<-c.done
}

// ForceDown tells the checker that its server was marked down from outside
// (passive observation): from its next check on it counts towards rise.
func (c *Checker) ForceDown() { c.forced.Store(true) }

func (c *Checker) run(first time.Duration) {
	defer close(c.done)
	t := time.NewTimer(first)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
		}
		start := time.Now()
		r := probe(c.ctx, &c.spec, c.track)
		if !c.report(r) {
			return // a check cut short by Stop says nothing about the server
		}
		t.Reset(max(0, c.next()-time.Since(start)))
	}
}

// report runs the state machine over r and reports, unless the checker
// is stopping; Stop waits for a report under way.
func (c *Checker) report(r Result) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopping {
		return false
	}
	c.target.Report(c.step(r))
	return true
}

func (c *Checker) stopped() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stopping
}

// track keeps the connection of the check in flight, for Stop to cut.
func (c *Checker) track(conn net.Conn) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.conn = conn
	return !c.stopping
}

// next is the time from the start of one check to the start of the next:
// the interval (interval_down while down) less up to a tenth of it at
// random, so that checks do not fire in step and a failure is still seen
// within fall × interval. A check that ran longer than that is followed at
// once by the next, never overlapped.
func (c *Checker) next() time.Duration {
	iv := c.spec.Interval
	if !c.up {
		iv = c.spec.IntervalDown
	}
	return iv - time.Duration(rand.Int64N(int64(iv/10)+1))
}

// step runs the rise/fall state machine over one result.
func (c *Checker) step(r Result) Report {
	if c.forced.Swap(false) && c.up {
		c.up, c.count = false, 0
	}
	rep := Report{Result: r}
	if r.OK == c.up {
		c.count = 0
	} else {
		c.count++
		need := c.spec.Rise
		if c.up {
			need = c.spec.Fall
		}
		if c.count >= need {
			c.up, c.count, rep.Changed = !c.up, 0, true
		} else {
			rep.N, rep.Need = c.count, need
		}
	}
	rep.Up = c.up
	return rep
}
