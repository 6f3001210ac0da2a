package backend

import "sync/atomic"

// roundRobin is smooth weighted round-robin (nginx's algorithm) made
// lock-free: the whole cycle of sum(weights) picks is computed once per
// snapshot, and a pick is one atomic increment and an index. Weights 3:1 give
// a,a,b,a rather than a,a,a,b. An unavailable server's turn passes to the next
// entry of the cycle.
type roundRobin struct {
	sched []*Server
	next  atomic.Uint64
}

// maxSchedule bounds the precomputed cycle; beyond it weights are scaled down
// (256 servers of weight 256 fit without scaling).
const maxSchedule = 1 << 16

func newRoundRobin(servers []*Server) *roundRobin {
	weights := make([]int, len(servers))
	total := 0
	for i, s := range servers {
		weights[i] = int(s.Weight())
		total += weights[i]
	}
	if total > maxSchedule {
		scale := (total + maxSchedule - 1) / maxSchedule
		total = 0
		for i, w := range weights {
			if w > 0 {
				weights[i] = max(1, w/scale)
			}
			total += weights[i]
		}
	}
	rr := &roundRobin{sched: make([]*Server, 0, total)}
	current := make([]int, len(servers))
	for range total {
		best := -1
		for i, w := range weights {
			if w == 0 {
				continue
			}
			current[i] += w
			if best < 0 || current[i] > current[best] {
				best = i
			}
		}
		current[best] -= total
		rr.sched = append(rr.sched, servers[best])
	}
	return rr
}

func (rr *roundRobin) Pick(_ *Client, skip *Server) *Server {
	n := uint64(len(rr.sched))
	if n == 0 {
		return nil
	}
	start := rr.next.Add(1) - 1
	for i := uint64(0); i < n; i++ {
		s := rr.sched[(start+i)%n]
		if s != skip && s.Available() {
			return s
		}
	}
	return nil
}
