package l7

import (
	"net"
	"time"
)

// deadlines moves a connection's read and write deadlines lazily: a request
// that comes soon after the last one finds the deadline already far enough
// and sets nothing, saving a timer update per call on the keep-alive path.
// A deadline may fire up to an eighth of its timeout late, never early.
// Code that sets the connection's deadlines directly calls forget.
type deadlines struct{ r, w time.Time }

func (dl *deadlines) read(c net.Conn, now time.Time, d time.Duration) {
	if d <= 0 {
		return
	}
	if want := now.Add(d); dl.r.Before(want) || dl.r.Sub(want) > d>>3 {
		dl.r = want.Add(d >> 3)
		c.SetReadDeadline(dl.r)
	}
}

func (dl *deadlines) write(c net.Conn, now time.Time, d time.Duration) {
	if d <= 0 {
		return
	}
	if want := now.Add(d); dl.w.Before(want) || dl.w.Sub(want) > d>>3 {
		dl.w = want.Add(d >> 3)
		c.SetWriteDeadline(dl.w)
	}
}

// forget is called after the deadlines were set by other code.
func (dl *deadlines) forget() { *dl = deadlines{} }
