package backend

import "net"

// WatchGone calls gone when the client closes conn (a FIN or a reset),
// until stop: watchGone for package l7, whose tarpit holds a request and
// lets it go when its client leaves. nil when conn cannot be watched.
func WatchGone(conn net.Conn, gone func()) (stop func()) { return watchGone(conn, false, gone) }
