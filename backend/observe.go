package backend

import (
	"math/rand/v2"
	"sync/atomic"
	"time"
)

// passive is a server's passive observation: consecutive failures seen on
// live traffic. The data path pays one atomic load per success and one
// add per failure; nothing when observation is off.
type passive struct {
	limit  atomic.Int32 // observe_errors; 0: observation off
	errors atomic.Int32 // consecutive failures
	trip   atomic.Pointer[func(*Server)]
}

// Observe turns on passive observation: after limit consecutive failures
// reported by ObserveError, trip runs once (it marks the server down).
// limit 0 turns it off.
func (s *Server) Observe(limit int, trip func(*Server)) {
	s.passive.trip.Store(&trip)
	s.passive.limit.Store(int32(limit))
}

// ObserveError records a failure on live traffic: a connect error, a
// timeout, or (http) a 5xx response.
func (s *Server) ObserveError() {
	lim := s.passive.limit.Load()
	if lim == 0 {
		return
	}
	// Exactly the failure that reaches the limit trips, once per streak.
	if s.passive.errors.Add(1) == lim {
		if f := s.passive.trip.Load(); f != nil {
			(*f)(s)
		}
	}
}

// ObserveOK records a success on live traffic, which ends a streak of
// failures.
func (s *Server) ObserveOK() {
	if s.passive.errors.Load() != 0 {
		s.passive.errors.Store(0)
	}
}

// ObservedErrors is the current streak of failures seen on live traffic.
func (s *Server) ObservedErrors() int { return int(s.passive.errors.Load()) }

// resetObserve ends a streak (the server came back up).
func (s *Server) resetObserve() { s.passive.errors.Store(0) }

// slowStart ramps a server's share of new connections after it comes back
// up. A pick that lands on a ramping server keeps it with probability
// elapsed/length and otherwise picks again without it, so the server's
// share grows from almost nothing to its full weight whatever the
// algorithm and even with weight 1 (a ramp by weight steps could not go
// below 1 of 1). While nothing ramps a pick pays one atomic load.
type slowStart struct {
	start  atomic.Int64 // unix nanos when the ramp began; 0: not ramping
	length atomic.Int64 // nanoseconds
}

// minRamp is the share a ramp starts from, so that a returning server sees
// some traffic at once.
const minRamp = 0.02

// StartSlowStart begins a ramp of length d from now; d 0 ends any ramp.
func (s *Server) StartSlowStart(d time.Duration) {
	s.slowStart.length.Store(int64(d))
	if d <= 0 {
		s.slowStart.start.Store(0)
		return
	}
	s.slowStart.start.Store(time.Now().UnixNano())
}

// SlowStartFactor is the part of its weight a server gets now: 1 when it
// is not ramping.
func (s *Server) SlowStartFactor() float64 {
	start := s.slowStart.start.Load()
	if start == 0 {
		return 1
	}
	return s.rampFactor(start, time.Now().UnixNano())
}

func (s *Server) rampFactor(start, now int64) float64 {
	length := s.slowStart.length.Load()
	elapsed := now - start
	if length <= 0 || elapsed >= length {
		s.slowStart.start.CompareAndSwap(start, 0) // the ramp is over
		return 1
	}
	return max(minRamp, float64(max(elapsed, 0))/float64(length))
}

// EffectiveWeight is the weight the server carries now, its slow start
// taken into account (for the stats page).
func (s *Server) EffectiveWeight() float64 { return float64(s.Weight()) * s.SlowStartFactor() }

// rampAdmits decides whether a pick that chose this ramping server keeps
// it.
func (s *Server) rampAdmits() bool {
	start := s.slowStart.start.Load()
	if start == 0 {
		return true
	}
	f := s.rampFactor(start, time.Now().UnixNano())
	return f >= 1 || rand.Float64() < f
}
