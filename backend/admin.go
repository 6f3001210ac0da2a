package backend

import (
	"fmt"
	"strconv"
)

// AdminState is the state an operator (admin API, control socket, agent
// check, reload carry-over) puts a server in. Its names are spelled here
// only: every caller that reads or writes one goes through String and
// ParseAdminState.
type AdminState int32

// Admin states set by an operator.
const (
	AdminReady AdminState = iota // takes traffic as its health allows
	AdminDrain                   // keeps its sessions, gets no new ones
	AdminMaint                   // gets nothing
)

var adminNames = [...]string{AdminReady: "ready", AdminDrain: "drain", AdminMaint: "maint"}

// String is the state's name: "ready", "drain" or "maint".
func (a AdminState) String() string {
	if a >= 0 && int(a) < len(adminNames) {
		return adminNames[a]
	}
	return "AdminState(" + strconv.Itoa(int(a)) + ")"
}

// ParseAdminState turns "ready", "drain" or "maint" into an admin state.
func ParseAdminState(s string) (AdminState, error) {
	for a, name := range adminNames {
		if name == s {
			return AdminState(a), nil
		}
	}
	return 0, fmt.Errorf("admin state %q is not one of \"ready\", \"drain\", \"maint\"", s)
}
