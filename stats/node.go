package stats

import (
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
)

// Node is this node's own admin state: in maintenance or ready. A node in
// maintenance goes on serving what reaches it, but tells whoever routes
// traffic to it (keepalived through global.track_file, /healthz, `check
// --live`) to send it elsewhere. The engine creates it; the admin API, the
// control socket (through the master) and the stats page share it.
type Node struct {
	maint atomic.Bool

	mu       sync.Mutex
	onChange []func()
}

// Maint reports whether the node is in maintenance.
func (n *Node) Maint() bool { return n != nil && n.maint.Load() }

// SetMaint puts the node in maintenance (or takes it out) and reports
// whether that changed anything; the functions of OnChange run after a
// change, before SetMaint returns.
func (n *Node) SetMaint(on bool) bool {
	if n.maint.Swap(on) == on {
		return false
	}
	n.mu.Lock()
	fns := n.onChange
	n.mu.Unlock()
	for _, fn := range fns {
		fn()
	}
	return true
}

// OnChange adds fn to what runs after each change.
func (n *Node) OnChange(fn func()) {
	n.mu.Lock()
	n.onChange = append(n.onChange, fn)
	n.mu.Unlock()
}

// NodeAdminName is the word for a node admin state: "maint" or "ready".
func NodeAdminName(maint bool) string {
	if maint {
		return "maint"
	}
	return "ready"
}

// ParseNodeAdmin reads "maint" or "ready".
func ParseNodeAdmin(s string) (maint bool, err error) {
	switch s {
	case "maint":
		return true, nil
	case "ready":
		return false, nil
	}
	return false, fmt.Errorf("node state %q is not one of ready, maint", s)
}

// setNode is POST /api/node/state with state=maint|ready.
func (s *Server) setNode(r *http.Request) (int, string, any) {
	name := r.PostFormValue("state")
	maint, err := ParseNodeAdmin(name)
	if err != nil {
		return http.StatusBadRequest, err.Error(), nil
	}
	prev := s.node.Maint()
	s.node.SetMaint(maint)
	return http.StatusOK, fmt.Sprintf("node: state %s -> %s", NodeAdminName(prev), NodeAdminName(maint)), nil
}
