package backend

import (
	"sync/atomic"
	"time"
)

// CheckResult is the outcome of one health check, kept on the server for the
// stats page and logs. The health package writes it; stats reads it.
type CheckResult struct {
	At       time.Time
	OK       bool
	Desc     string // short and operator-readable: "L4OK", "HTTP 500", "connection refused"
	Code     int    // HTTP status or DNS rcode when there is one, else 0
	Duration time.Duration
}

// checkState is the health bookkeeping of a server that is not on the hot
// path; it lives behind atomics like the rest.
type checkState struct {
	last     atomic.Pointer[CheckResult]
	progress atomic.Int64  // rising/falling: count<<32 | needed; 0 when settled
	downNs   atomic.Int64  // total nanoseconds spent down before the current spell
	checks   atomic.Uint64 // checks run
	failed   atomic.Uint64 // checks that failed
	restored atomic.Bool   // health state carried over from a previous worker
}

// CheckCounts returns how many checks ran and how many of them failed.
func (s *Server) CheckCounts() (checks, failed uint64) {
	return s.check.checks.Load(), s.check.failed.Load()
}

// SetLastCheck records the result of the latest check.
func (s *Server) SetLastCheck(r CheckResult) {
	s.check.last.Store(&r)
	s.check.checks.Add(1)
	if !r.OK {
		s.check.failed.Add(1)
	}
}

// ChecksFailed is the number of failed checks recorded by SetLastCheck.
func (s *Server) ChecksFailed() uint64 { return s.check.failed.Load() }

// LastCheck returns the latest check result, and false when none ran yet.
func (s *Server) LastCheck() (CheckResult, bool) {
	if r := s.check.last.Load(); r != nil {
		return *r, true
	}
	return CheckResult{}, false
}

// SetProgress records a server on its way to changing state: n of need
// consecutive checks have gone the other way ("UP 2/3" on the stats page).
// SetProgress(0, 0) clears it.
func (s *Server) SetProgress(n, need int) {
	s.check.progress.Store(int64(n)<<32 | int64(uint32(need)))
}

// Progress returns what SetProgress recorded.
func (s *Server) Progress() (n, need int) {
	v := s.check.progress.Load()
	return int(v >> 32), int(uint32(v))
}

// Downtime is the total time the server has been down, the current spell
// included.
func (s *Server) Downtime() time.Duration {
	d := time.Duration(s.check.downNs.Load())
	if !s.up.Load() {
		d += time.Since(s.LastChange())
	}
	return d
}

// MarkRestored records that the server's health state was carried over
// from a previous worker, so its checks start from that state rather than
// from init_state.
func (s *Server) MarkRestored() { s.check.restored.Store(true) }

// Restored reports whether MarkRestored was called.
func (s *Server) Restored() bool { return s.check.restored.Load() }
