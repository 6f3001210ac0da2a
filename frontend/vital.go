package frontend

import (
	"fmt"
	"strings"

	"sluice/backend"
)

// MaintReason is Unserved's answer while the node is in maintenance.
const MaintReason = "node in maintenance (sluice ctl set node ready to end it)"

// Unserved is the one rule for "this node can serve": it returns why it
// cannot, or "". /healthz, `check --live` (through /healthz and the
// master's status) and global.track_file all ask it. The node cannot serve
// while it is in maintenance (maint), or while a vital frontend has no
// server that can take traffic (up, ready, weighted above zero) in its
// default backend, or, with none, in any of its route backends.
func Unserved(maint bool, vital []string, fronts map[string]*Frontend, backends map[string]*backend.Backend) string {
	if maint {
		return MaintReason
	}
	for _, name := range vital {
		f := fronts[name]
		if f == nil {
			return fmt.Sprintf("vital frontend %s does not exist", name)
		}
		var bes []*backend.Backend
		if b := f.Backend(); b != nil {
			bes = append(bes, b)
		} else if cfg := f.Config(); cfg != nil {
			for _, rt := range cfg.Routes {
				if b := backends[rt.Backend]; b != nil {
					bes = append(bes, b)
				}
			}
		}
		if !anyInService(bes) {
			names := make([]string, len(bes))
			for i, b := range bes {
				names[i] = b.Name
			}
			return fmt.Sprintf("vital frontend %s has no server up (backend %s)", name, strings.Join(names, ", "))
		}
	}
	return ""
}

func anyInService(bes []*backend.Backend) bool {
	for _, b := range bes {
		for _, sv := range b.Servers() {
			if sv.Up() && sv.Admin() == backend.AdminReady && sv.Weight() > 0 {
				return true
			}
		}
	}
	return false
}
