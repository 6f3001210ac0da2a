package backend

import "math/rand/v2"

// p2c is random choice with two choices, for very large pools: draw two
// servers at random in proportion to their weights and take the one with
// fewer active connections per unit of weight. It needs no shared counter,
// so it scales across cores, and it avoids both herding (every pick
// choosing the same least-loaded server) and the imbalance of one random
// draw. Idle servers tie, and the first draw wins a tie, so with short
// connections the shares follow the weights.
type p2c struct {
	servers []*Server
	// Alias table (Vose) for O(1) weighted draws: slot i is server i when
	// the low 32 random bits are under prob[i], else server alias[i].
	prob  []uint64
	alias []uint32
	total int64

	// rnd returns uniform random bits; math/rand/v2's Uint64 by default
	// (lock-free, per-thread state). Tests set a seeded source.
	rnd func() uint64
}

func newP2C(servers []*Server) *p2c {
	n := len(servers)
	r := &p2c{servers: servers, prob: make([]uint64, n), alias: make([]uint32, n), rnd: rand.Uint64}
	for _, s := range servers {
		r.total += int64(max(s.Weight(), 0))
	}
	if r.total == 0 {
		return r
	}
	// scaled[i] = w_i * n; a slot is full at total. Exact in integers.
	scaled := make([]int64, n)
	var small, large []int
	for i, s := range servers {
		scaled[i] = int64(max(s.Weight(), 0)) * int64(n)
		if scaled[i] < r.total {
			small = append(small, i)
		} else {
			large = append(large, i)
		}
	}
	prob := make([]int64, n)
	for len(small) > 0 && len(large) > 0 {
		l, g := small[len(small)-1], large[len(large)-1]
		small, large = small[:len(small)-1], large[:len(large)-1]
		prob[l], r.alias[l] = scaled[l], uint32(g)
		scaled[g] += scaled[l] - r.total
		if scaled[g] < r.total {
			small = append(small, g)
		} else {
			large = append(large, g)
		}
	}
	for _, i := range append(small, large...) {
		prob[i], r.alias[i] = r.total, uint32(i)
	}
	for i, p := range prob {
		r.prob[i] = uint64(p) << 32 / uint64(r.total)
	}
	return r
}

// draw returns a server index with probability weight/total.
func (r *p2c) draw() *Server {
	x := r.rnd()
	i := (x >> 32) * uint64(len(r.servers)) >> 32
	if x&0xffffffff < r.prob[i] {
		return r.servers[i]
	}
	return r.servers[r.alias[i]]
}

// maxDraws bounds the draws spent looking for two available servers before
// falling back to a scan (when most of the pool is unavailable).
const maxDraws = 8

func (r *p2c) Pick(_ *Client, skip *Server) *Server {
	if r.total == 0 {
		return nil
	}
	var first *Server
	for range maxDraws {
		s := r.draw()
		if s == skip || s == first || !s.Available() {
			continue
		}
		if first == nil {
			first = s
			continue
		}
		if lighter(s, first) {
			return s
		}
		return first
	}
	if first != nil {
		return first
	}
	return leastLoaded(r.servers, int(r.rnd()%uint64(len(r.servers))), skip)
}
