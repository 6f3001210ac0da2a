package l7

import "time"

// FetchNow makes Run fetch at once, even over a fresh staple from a file.
func (c *ServedCert) FetchNow() { c.fetchNow = true }

// RefreshIn is refreshIn.
var RefreshIn = refreshIn

// SetClock makes the handshakes of c see now as the time (tests).
func (c *ServedCert) SetClock(now func() time.Time) { c.now = now }
