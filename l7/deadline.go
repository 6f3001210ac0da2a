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

// lazyDeadline moves one deadline timeout ahead as bytes move, but only
// once slack of it has been used (an eighth of the timeout, at most a
// second): a busy transfer costs few timer updates, and the deadline fires
// up to slack late, never early. The body copies and HTTP/2 streams use it.
type lazyDeadline struct {
	timeout time.Duration // 0: none
	set     time.Time
}

// next returns the deadline to set now, or false while the one set holds.
func (d *lazyDeadline) next() (time.Time, bool) {
	if d.timeout <= 0 {
		return time.Time{}, false
	}
	now := time.Now()
	slack := slackOf(d.timeout)
	if now.Sub(d.set) <= slack {
		return time.Time{}, false
	}
	d.set = now
	return now.Add(d.timeout + slack), true
}

// slackOf is how late a lazily moved deadline of timeout may fire.
func slackOf(timeout time.Duration) time.Duration { return min(timeout>>3, time.Second) }
