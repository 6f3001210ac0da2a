//go:build !linux

package backend

import "net"

// watchGone: no watch outside Linux; a queued client that leaves is found
// at queue_timeout.
func watchGone(net.Conn, bool, func()) func() { return nil }
