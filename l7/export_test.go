package l7

import "net/http"

// SetStreamHook makes h run before every HTTP/2 request is served (nil:
// none); a test panics in it to see the stream reset and the rest go on.
func SetStreamHook(h func(r *http.Request)) { testStreamHook = h }

// SetBodyHook makes h run as an HTTP/1 request body starts to move to the
// server (nil: none); a test panics in it.
func SetBodyHook(h func()) { testBodyHook = h }
