package l7

import (
	"net/http"
	"time"
)

// SetStreamHook makes h run before every HTTP/2 request is served (nil:
// none); a test panics in it to see the stream reset and the rest go on.
func SetStreamHook(h func(r *http.Request)) { testStreamHook = h }

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
