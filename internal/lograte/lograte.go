// Package lograte keeps a flood (of bad peers, refused flows, refused
// control connections) from turning into a flood of log lines: one line a
// second goes through, the others are counted.
package lograte

import (
	"sync/atomic"
	"time"
)

// Limiter lets one log line a second through and counts the ones it holds
// back. Its zero value is ready; it takes no lock.
type Limiter struct {
	last atomic.Int64 // unix ns of the last line let through
	held atomic.Int64
}

// Allow reports whether to log at now, and how many lines were held back
// since the last one let through.
func (l *Limiter) Allow(now time.Time) (ok bool, suppressed int64) {
	n, last := now.UnixNano(), l.last.Load()
	if last != 0 && n-last < int64(time.Second) || !l.last.CompareAndSwap(last, n) {
		l.held.Add(1)
		return false, 0
	}
	return true, l.held.Swap(0)
}
