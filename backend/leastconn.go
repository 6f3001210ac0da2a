package backend

import "sync/atomic"

// leastConn sends each connection to the server with the fewest active
// connections relative to its weight. Equal servers share the load: the scan
// starts at a rotating offset and the first of equals wins.
type leastConn struct {
	servers []*Server
	next    atomic.Uint64
}

func newLeastConn(servers []*Server) *leastConn { return &leastConn{servers: servers} }

func (lc *leastConn) Pick(_ *Client, skip *Server) *Server {
	n := uint64(len(lc.servers))
	if n == 0 {
		return nil
	}
	return leastLoaded(lc.servers, int((lc.next.Add(1)-1)%n), skip)
}

// leastLoaded scans servers from start, wrapping around, and returns the
// available one with the lowest active/weight; the first found wins a tie.
func leastLoaded(servers []*Server, start int, skip *Server) *Server {
	var best *Server
	var bestActive, bestWeight int64
	i := start
	for range servers {
		s := servers[i]
		if i++; i == len(servers) {
			i = 0
		}
		if s == skip || !s.Available() {
			continue
		}
		a, w := s.Active(), int64(s.Weight())
		// a/w < bestActive/bestWeight, without dividing (weights are > 0).
		if best == nil || a*bestWeight < bestActive*w {
			best, bestActive, bestWeight = s, a, w
		}
	}
	return best
}

// lighter reports whether a carries less load per unit of weight than b.
func lighter(a, b *Server) bool {
	return a.Active()*int64(b.Weight()) < b.Active()*int64(a.Weight())
}
