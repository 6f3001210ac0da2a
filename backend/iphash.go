package backend

import (
	"encoding/binary"
	"math"
	"net/netip"
)

// ipHash sends a client address to the same server for as long as that
// server is available. It is weighted rendezvous hashing (highest random
// weight): every server scores the client with its own hash, and the best
// available score wins.
//
// Rendezvous rather than a ring or Maglev: the code is a loop with no table
// to build or rebuild when weights or health change, and it disturbs as
// little as possible by construction: when a server leaves, only the clients
// it was winning move (each to its own runner-up), and when it returns,
// exactly those clients come back. A pick is O(servers), a few ns each,
// which is fine for pools of hundreds. Seeds derive from the server ID, so
// two sluice instances with the same config agree on every client.
type ipHash struct {
	nodes []hashNode
	equal bool // all weights are equal: compare raw hashes, no logarithm
}

type hashNode struct {
	s      *Server
	seed   uint64
	weight float64
}

func newIPHash(servers []*Server) *ipHash {
	h := &ipHash{nodes: make([]hashNode, len(servers)), equal: true}
	for i, s := range servers {
		h.nodes[i] = hashNode{s: s, seed: mix64(fnv1a(s.ID)), weight: float64(s.Weight())}
		if s.Weight() != servers[0].Weight() {
			h.equal = false
		}
	}
	return h
}

func (h *ipHash) Pick(c *Client, skip *Server) *Server {
	var a netip.Addr
	if c != nil {
		a = c.Addr
	}
	ah := addrHash(a)
	var best *Server
	if h.equal {
		var bestHash uint64
		for i := range h.nodes {
			n := &h.nodes[i]
			x := mix64(ah ^ n.seed)
			if (best == nil || x > bestHash) && n.s != skip && n.s.Available() {
				best, bestHash = n.s, x
			}
		}
		return best
	}
	// Weighted form: with u uniform in (0,1), the score w / -ln(u) is the
	// highest at server i with probability w_i / sum(w).
	//
	// -ln(u) > 1-u, so w/(1-u) bounds the score from above: a server whose
	// bound does not beat the best so far cannot win, and its logarithm is
	// not needed. Past the first few servers almost all fail that test, so a
	// pick costs about ln(servers) logarithms. (The bound is loosened by
	// 2^-40 so that rounding in math.Log can never make it wrong.)
	var bestScore float64
	for i := range h.nodes {
		n := &h.nodes[i]
		u := (float64(mix64(ah^n.seed)>>11) + 0.5) * 0x1p-53
		if best != nil && n.weight <= bestScore*(1-u)*(1-0x1p-40) {
			continue
		}
		score := n.weight / -math.Log(u)
		if (best == nil || score > bestScore) && n.s != skip && n.s.Available() {
			best, bestScore = n.s, score
		}
	}
	return best
}

// addrHash hashes a client address (the zone is ignored).
func addrHash(a netip.Addr) uint64 {
	b := a.As16()
	hi := binary.BigEndian.Uint64(b[:8])
	lo := binary.BigEndian.Uint64(b[8:])
	return mix64(hi ^ mix64(lo^0x9e3779b97f4a7c15))
}

// mix64 is MurmurHash3's 64-bit finalizer: a bijection in which every input
// bit affects every output bit.
func mix64(x uint64) uint64 {
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}

// fnv1a is 64-bit FNV-1a.
func fnv1a(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}
