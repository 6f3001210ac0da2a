package frontend

import "fmt"

// Tracked is how many accepted connections the server still tracks (to
// close them at a hard stop); every ended connection must have left.
func (s *Server) Tracked() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// SetConnHook makes h run for every connection before it is served (nil:
// none); a test panics in it to see the worker survive.
func SetConnHook(h func(frontend string)) { testConnHook = h }

// TrackedTypes names the types of the connections the server tracks.
func (s *Server) TrackedTypes() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for c := range s.conns {
		out = append(out, fmt.Sprintf("%T", c))
	}
	return out
}
