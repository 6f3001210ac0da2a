// Package fdlimit fits global.maxconn to the process's file descriptor
// limit, as HAProxy does at start: every proxied connection holds two
// descriptors (client and server), so a cap the limit cannot hold would
// end in accept failing with EMFILE under load instead of connections
// waiting their turn in the kernel's queue.
package fdlimit

import (
	"fmt"
	"math"

	"golang.org/x/sys/unix"
)

// Reserve is what is kept for everything that is not a proxied connection:
// listening sockets, health checks, the stats and control sockets, DNS,
// peers, logs.
const Reserve = 256

// Need is the descriptor limit that maxconn connections need. It
// saturates rather than wraps: a maxconn no limit holds must never look
// small.
func Need(maxconn int) uint64 { return satAdd(twice(maxconn), Reserve) }

// twice is 2*n for the descriptors of n connections, saturating; 0 for n < 0.
func twice(n int) uint64 {
	if n <= 0 {
		return 0
	}
	if uint64(n) > math.MaxUint64/2 {
		return math.MaxUint64
	}
	return 2 * uint64(n)
}

func satAdd(a, b uint64) uint64 {
	if a > math.MaxUint64-b {
		return math.MaxUint64
	}
	return a + b
}

// Fixed counts what a configuration holds outside connections and flows,
// beside Reserve: without it, 300 servers with health checks in flight
// took the descriptors maxconn had been fitted to.
type Fixed struct {
	Listeners int // listening sockets: bind addresses, stats, peers, control
	Checks    int // servers with active health checks: a check holds one socket at a time
	Stats     int // connections the stats listener serves at once (its cap)
}

// Total is the descriptors f holds, never negative.
func (f Fixed) Total() uint64 {
	var t uint64
	for _, n := range []int{f.Listeners, f.Checks, f.Stats} {
		if n > 0 {
			t = satAdd(t, uint64(n))
		}
	}
	return t
}

func (f Fixed) String() string {
	return fmt.Sprintf("%d listeners, %d checked servers, %d stats connections", f.Listeners, f.Checks, f.Stats)
}

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
	return fit(maxconn, set, limit, Fixed{})
}

// maxAvail bounds what the arithmetic below works with, so that no int
// product or sum of it overflows (the limit is far below on any system).
const maxAvail = 1 << 40

// fit is Fit with fixed held beside Reserve.
func fit(maxconn int, set bool, limit uint64, fixed Fixed) (n int, msg string, warn bool) {
	reserve := satAdd(Reserve, fixed.Total())
	need := satAdd(twice(maxconn), reserve)
	if limit == 0 || need <= limit {
		return maxconn, "", false
	}
	fits := 1
	if limit > satAdd(reserve, 2) {
		fits = int(min((limit-reserve)/2, maxAvail))
	}
	beside := ""
	if fixed.Total() > 0 {
		beside = fmt.Sprintf(" beside the reserve of %d and %d for %s", Reserve, fixed.Total(), fixed)
	}
	if !set {
		return fits, fmt.Sprintf("global.maxconn not set: %d connections (the file descriptor limit %d holds that many%s; the default %d needs %d)",
			fits, limit, beside, maxconn, need), false
	}
	return maxconn, fmt.Sprintf("global.maxconn = %d needs %d file descriptors%s but the limit is %d: past about %d connections accept fails (EMFILE) and new clients wait; raise the limit (LimitNOFILE= in the systemd unit, ulimit -n) to %d, or set global.maxconn to %d",
		maxconn, need, beside, limit, fits, need, fits), true
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

// Budget is how the descriptor limit is shared: Reserve and Fixed, 2 per
// connection under MaxConn, 1 per flow under each udp frontend's Flows.
type Budget struct {
	Limit   uint64         // RLIMIT_NOFILE; 0 when unknown
	MaxConn int            // global.maxconn to run with
	Flows   map[string]int // max_flows to run with, by udp frontend
	Fixed   Fixed          // listeners, checks and stats connections, beside Reserve
	Info    []string       // shares chosen for keys the file does not set
	Warn    []string       // keys the file sets past what the limit holds
}

// Reserved is what is kept outside connections and flows: Reserve and Fixed.
func (b *Budget) Reserved() int { return int(min(satAdd(Reserve, b.Fixed.Total()), maxAvail)) }

// FlowsTotal is the descriptors all flows may hold.
func (b *Budget) FlowsTotal() int {
	n := 0
	for _, v := range b.Flows {
		n += v
	}
	return n
}

// Plan shares limit between TCP/HTTP connections and UDP flows, past
// Reserve and what fixed holds, so that a flood of UDP sources cannot take
// the descriptors that accept, listeners and health checks need: with no
// udp frontend it is Fit. A udp frontend without max_flows gets an equal
// share of what maxconn and the reserve leave (at most MaxDefaultFlows); a
// maxconn the file does not set shrinks, when the limit is tight, to leave
// the flows 1/FlowShare of it (plus explicit max_flows, up to half). A
// maxconn the file sets is kept, with a warning when the limit cannot hold
// it; an explicit max_flows is clamped, with a warning, to what maxconn
// leaves, since past it flows would take the descriptors of accept.
func Plan(maxconn int, set bool, udp []UDPFrontend, fixed Fixed, limit uint64) Budget {
	b := Budget{Limit: limit, MaxConn: maxconn, Flows: map[string]int{}, Fixed: fixed}
	if len(udp) == 0 {
		n, msg, warn := fit(maxconn, set, limit, fixed)
		b.MaxConn = n
		b.addMsg(msg, warn)
		return b
	}
	explicit, unset := 0, 0
	for _, f := range udp {
		if f.MaxFlows > 0 {
			explicit = min(explicit+min(f.MaxFlows, maxAvail), maxAvail)
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
	reserve := uint64(b.Reserved())
	avail := 0
	if limit > reserve {
		avail = int(min(limit-reserve, maxAvail))
	}
	if set {
		_, msg, warn := fit(maxconn, set, limit, fixed)
		b.addMsg(msg, warn)
	} else {
		keep := explicit
		if unset > 0 {
			keep += avail / FlowShare
		}
		// A max_flows the limit cannot hold is clamped below; it must not
		// shrink maxconn to nothing.
		keep = min(keep, avail/2)
		fits := max(1, (avail-keep)/2)
		if maxconn > fits {
			b.MaxConn = fits
			b.Info = append(b.Info, fmt.Sprintf("global.maxconn not set: %d connections (the file descriptor limit %d holds that many beside %d for UDP flows and %d reserved; the default %d needs %d)",
				fits, limit, keep, reserve, maxconn, satAdd(satAdd(twice(maxconn), reserve), uint64(keep))))
		}
	}
	rem := 0 // what connections and the reserve leave
	if c := twice(b.MaxConn); c < uint64(avail) {
		rem = avail - int(c)
	}
	// Explicit max_flows first, in order: each gets what the ones before
	// it leave.
	left := rem
	for _, f := range udp {
		if f.MaxFlows <= 0 {
			continue
		}
		n := min(f.MaxFlows, left)
		left -= n
		if n < f.MaxFlows {
			// 0 would mean no cap to the flow table: keep one flow.
			n = max(n, 1)
			b.Warn = append(b.Warn, fmt.Sprintf("frontend.%s.max_flows = %d needs a descriptor per flow but the file descriptor limit %d leaves %d after global.maxconn = %d (2 each), the reserve (%d, with %s) and the other udp frontends: clamped to %d flows, so that flows cannot take the descriptors of accept and the listeners; to allow %d, raise the limit (LimitNOFILE= in the systemd unit, ulimit -n) to %d, or lower global.maxconn",
				f.Name, f.MaxFlows, limit, n, b.MaxConn, reserve, fixed, n, f.MaxFlows, satAdd(satAdd(twice(b.MaxConn), reserve), uint64(explicit))))
		}
		b.Flows[f.Name] = n
	}
	for _, f := range udp {
		if f.MaxFlows > 0 {
			continue
		}
		share := min(left/unset, MaxDefaultFlows)
		if share < MinDefaultFlows {
			b.Warn = append(b.Warn, fmt.Sprintf("frontend.%s: max_flows not set and only %d file descriptors are left for its UDP flows (limit %d, global.maxconn = %d at 2 each, reserve %d): it gets %d, which the limit may not hold; raise the limit or lower global.maxconn",
				f.Name, left/unset, limit, b.MaxConn, reserve, MinDefaultFlows))
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
