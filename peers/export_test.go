package peers

import (
	"testing"
	"time"
)

// SetAuthTimeout changes the handshake deadline of accepted connections for
// one test.
func SetAuthTimeout(t testing.TB, d time.Duration) {
	old := authTimeout
	authTimeout = d
	t.Cleanup(func() { authTimeout = old })
}

// Sweeps is how many refresh sweeps s has made.
func Sweeps(s *Syncer) uint64 { return s.sweeps.Load() }
