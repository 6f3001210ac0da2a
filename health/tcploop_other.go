//go:build !linux

package health

import "time"

// startLoop: without epoll every checker runs in its own goroutine.
func startLoop(*Checker, time.Duration) bool { return false }
