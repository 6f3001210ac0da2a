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

// Shares of the descriptor limit given to UDP flows, each of which holds
// one socket (to its server) for as long as it lives.
const (
	// FlowShare: when the file sets no global.maxconn and the limit is
	// tight, 1/FlowShare of it (past Reserve) is kept for the flows of udp
	// frontends without max_flows, and maxconn gets the rest.
	FlowShare = 4
	// MaxDefaultFlows caps the share of one udp frontend without max_flows:
	// past it a flood costs memory (a goroutine per flow) before
	// descriptors.
	MaxDefaultFlows = 100000
	// MinDefaultFlows is the least a udp frontend without max_flows gets,
	// even when global.maxconn leaves less (then with a warning).
	MinDefaultFlows = 64
)

// UDPFrontend is what Plan needs of a udp frontend.
type UDPFrontend struct {
	Name     string
	MaxFlows int // the file's max_flows; 0 when not set
}

// Budget is how the descriptor limit is shared: Reserve, 2 per
// connection under MaxConn, 1 per flow under each udp frontend's Flows.
type Budget struct {
	Limit   uint64         // RLIMIT_NOFILE; 0 when unknown
	MaxConn int            // global.maxconn to run with
	Flows   map[string]int // max_flows to run with, by udp frontend
	Info    []string       // shares chosen for keys the file does not set
	Warn    []string       // keys the file sets past what the limit holds
}

// FlowsTotal is the descriptors all flows may hold.
func (b *Budget) FlowsTotal() int {
	n := 0
	for _, v := range b.Flows {
		n += v
	}
	return n
}

// Plan shares limit between TCP/HTTP connections and UDP flows, so that a
// flood of UDP sources cannot take the descriptors that accept needs: with
// no udp frontend it is Fit. A udp frontend without max_flows gets an equal
// share of what maxconn and the reserve leave (at most MaxDefaultFlows); a
// maxconn the file does not set shrinks, when the limit is tight, to leave
// the flows 1/FlowShare of it (plus explicit max_flows, up to half). Keys the file sets are kept, with a warning
// when the limit cannot hold them.
func Plan(maxconn int, set bool, udp []UDPFrontend, limit uint64) Budget {
	b := Budget{Limit: limit, MaxConn: maxconn, Flows: map[string]int{}}
	if len(udp) == 0 {
		n, msg, warn := Fit(maxconn, set, limit)
		b.MaxConn = n
		b.addMsg(msg, warn)
		return b
	}
	explicit, unset := 0, 0
	for _, f := range udp {
		if f.MaxFlows > 0 {
			explicit += f.MaxFlows
		} else {
			unset++
		}
	}
	if limit == 0 { // unknown: trust the file, cap the defaults
		for _, f := range udp {
			b.Flows[f.Name] = f.MaxFlows
			if f.MaxFlows == 0 {
				b.Flows[f.Name] = MaxDefaultFlows
			}
		}
		return b
	}
	avail := 0
	if limit > Reserve {
		avail = int(min(limit-Reserve, 1<<40))
	}
	if set {
		_, msg, warn := Fit(maxconn, set, limit)
		b.addMsg(msg, warn)
	} else {
		keep := explicit
		if unset > 0 {
			keep += avail / FlowShare
		}
		// A max_flows the limit cannot hold is warned about below; it
		// must not shrink maxconn to nothing.
		keep = min(keep, avail/2)
		fits := max(1, (avail-keep)/2)
		if maxconn > fits {
			b.MaxConn = fits
			b.Info = append(b.Info, fmt.Sprintf("global.maxconn not set: %d connections (the file descriptor limit %d holds that many beside %d for UDP flows; the default %d needs %d)",
				fits, limit, keep, maxconn, Need(maxconn)+uint64(keep)))
		}
	}
	rem := max(0, avail-2*b.MaxConn) // what connections and the reserve leave
	left := rem - explicit
	for _, f := range udp {
		if f.MaxFlows > 0 {
			b.Flows[f.Name] = f.MaxFlows
			if room := max(rem-(explicit-f.MaxFlows), 0); f.MaxFlows > room {
				fix := fmt.Sprintf("set max_flows to %d", room)
				if room < MinDefaultFlows {
					fix = "lower global.maxconn"
				}
				b.Warn = append(b.Warn, fmt.Sprintf("frontend.%s.max_flows = %d needs a descriptor per flow but the file descriptor limit %d leaves %d after global.maxconn = %d (2 each), the reserve (%d) and the other udp frontends: past that, new flows get no socket (refused and counted) and accept may fail (EMFILE); raise the limit (LimitNOFILE= in the systemd unit, ulimit -n) to %d, or %s",
					f.Name, f.MaxFlows, limit, room, b.MaxConn, Reserve, Need(b.MaxConn)+uint64(explicit), fix))
			}
			continue
		}
		share := min(max(left, 0)/unset, MaxDefaultFlows)
		if share < MinDefaultFlows {
			b.Warn = append(b.Warn, fmt.Sprintf("frontend.%s: max_flows not set and only %d file descriptors are left for its UDP flows (limit %d, global.maxconn = %d at 2 each, reserve %d): it gets %d, which the limit may not hold; raise the limit or lower global.maxconn",
				f.Name, max(left, 0)/unset, limit, b.MaxConn, Reserve, MinDefaultFlows))
			share = MinDefaultFlows
		} else {
			b.Info = append(b.Info, fmt.Sprintf("frontend.%s: max_flows not set: %d flows (a share of the file descriptor limit %d)", f.Name, share, limit))
		}
		b.Flows[f.Name] = share
	}
	return b
}

func (b *Budget) addMsg(msg string, warn bool) {
	switch {
	case msg == "":
	case warn:
		b.Warn = append(b.Warn, msg)
	default:
		b.Info = append(b.Info, msg)
	}
}
