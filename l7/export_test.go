package l7

import (
	"net/http"
	"time"
)

// SetStreamHook makes h run before every HTTP/2 request is served (nil:
// none); a test panics in it to see the stream reset and the rest go on.
func SetStreamHook(h func(r *http.Request)) { testStreamHook = h }

// SetStreamDoneHook makes h run as each HTTP/2 stream's goroutine ends.
func SetStreamDoneHook(h func(target string)) { testStreamDoneHook = h }

// SetFastSentHook makes h run on the HTTP/2 fast path between a request's
// send and its wait for the answer (nil: none), with a reader of whether
// the loop saw an event of the connection meanwhile.
func SetFastSentHook(h func(pending func() bool)) {
	if h == nil {
		testFastSentHook.Store(nil)
		return
	}
	testFastSentHook.Store(&h)
}

// SetFastLoopHook makes h run in the HTTP/2 fast path's loop before it
// frames a response (nil: none); a test panics in it.
func SetFastLoopHook(h func(target string)) {
	if h == nil {
		testFastLoopHook.Store(nil)
		return
	}
	testFastLoopHook.Store(&h)
}

// FastWriters is how many HTTP/2 fast-path writer goroutines run.
func FastWriters() int { return int(fastWriters.Load()) }

// SetBodyHook makes h run as an HTTP/1 request body starts to move to the
// server (nil: none); a test panics in it.
func SetBodyHook(h func()) { testBodyHook = h }

// SetIdleHandOff sets how long a keep-alive client waits on the goroutine
// that served it before the wait moves to a fresh one; it returns the
// previous value.
func SetIdleHandOff(d time.Duration) time.Duration {
	return time.Duration(idleHandOff.Swap(int64(d)))
}

// SetFinalGoAwayHook makes h run in an HTTP/2 drain between deciding the
// final GOAWAY's last stream and writing it (nil: none).
func SetFinalGoAwayHook(h func()) {
	if h == nil {
		testFinalHook.Store(nil)
		return
	}
	testFinalHook.Store(&h)
}

// H2MaxMeanless is how many control frames (PING, SETTINGS, ...) an
// HTTP/2 client may send, net of requests served, before ENHANCE_YOUR_CALM.
const H2MaxMeanless = h2MaxMeanless

// SetBusyLimit sets the bound on HTTP/1 client connections worked on at
// once (n <= 0: the default); it returns the previous bound.
func SetBusyLimit(n int) int {
	if n <= 0 {
		n = int(busyLimitDefault())
	}
	busy.extra.Store(0)
	return int(busy.limit.Swap(int32(n)))
}

// BusyState is the bound's slots held and connections queued.
func BusyState() (active, queued int) {
	return int(busy.active.Load()), int(busy.queued.Load())
}

// SetBusyStall sets how long the ready queue may stall before slots are
// lent past the bound (0: never); it returns the previous value.
func SetBusyStall(d time.Duration) time.Duration {
	return time.Duration(busyStall.Swap(int64(d)))
}

// BusyExtra is how many slots are lent past the bound now.
func BusyExtra() int { return int(busy.extra.Load()) }

// SetBusyServerWait sets how long a slot holder waits for its server's
// answer before it gives its slot up (0: never); it returns the previous
// value.
func SetBusyServerWait(d time.Duration) time.Duration {
	return time.Duration(busyServerWait.Swap(int64(d)))
}

// BusyLend lends a bound's worth of slots past it, as the stalled queue's
// watch does, and starts queued connections on them.
func BusyLend() {
	busy.extra.Add(busy.limit.Load())
	readyKick()
}

// BusyWatch runs the ready queue's watch once (with SetBusyStall(0) it
// does not run on its own): with the queue empty, the loan ends.
func BusyWatch() { busyWatch() }
