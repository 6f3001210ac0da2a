package conf

import "time"

// SetNow sets the clock of the expiry checks and returns the undo.
func SetNow(f func() time.Time) func() {
	old := now
	now = f
	return func() { now = old }
}
