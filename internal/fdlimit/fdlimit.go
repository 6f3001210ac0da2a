// Package fdlimit fits global.maxconn to the process's file descriptor
// limit, as HAProxy does at start: every proxied connection holds two
// descriptors (client and server), so a cap the limit cannot hold would
// end in accept failing with EMFILE under load instead of connections
// waiting their turn in the kernel's queue.
package fdlimit

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// Reserve is what is kept for everything that is not a proxied connection:
// listening sockets, health checks, the stats and control sockets, DNS,
// peers, logs.
const Reserve = 256

// Need is the descriptor limit that maxconn connections need.
func Need(maxconn int) uint64 { return 2*uint64(maxconn) + Reserve }

// Limit is the process's descriptor limit (Go raises the soft limit to the
// hard one at start), or 0 when it cannot be read.
func Limit() uint64 {
	var r unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &r); err != nil {
		return 0
	}
	return r.Cur
}

// Fit returns the maxconn to run with under limit. When the limit is too
// small it also returns what to tell the operator: a maxconn the file does
// not set (the default) shrinks to what the limit holds, as HAProxy derives
// its maxconn from the limit; one the file sets is kept, and warn is true.
func Fit(maxconn int, set bool, limit uint64) (n int, msg string, warn bool) {
	if limit == 0 || Need(maxconn) <= limit {
		return maxconn, "", false
	}
	fits := 1
	if limit > Reserve+2 {
		fits = int((limit - Reserve) / 2)
	}
	if !set {
		return fits, fmt.Sprintf("global.maxconn not set: %d connections (the file descriptor limit %d holds that many; the default %d needs %d)",
			fits, limit, maxconn, Need(maxconn)), false
	}
	return maxconn, fmt.Sprintf("global.maxconn = %d needs %d file descriptors but the limit is %d: past about %d connections accept fails (EMFILE) and new clients wait; raise the limit (LimitNOFILE= in the systemd unit, ulimit -n) to %d, or set global.maxconn to %d",
		maxconn, Need(maxconn), limit, fits, Need(maxconn), fits), true
}
