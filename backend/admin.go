package backend

import "sluice/conf"

// AdminState is the state an operator puts a server in; its names and
// parser are conf's (conf.AdminState, conf.ParseAdminState), so that the
// agent check below this package reads the same words.
type AdminState = conf.AdminState

// Admin states set by an operator.
const (
	AdminReady = conf.AdminReady // takes traffic as its health allows
	AdminDrain = conf.AdminDrain // keeps its sessions, gets no new ones
	AdminMaint = conf.AdminMaint // gets nothing
)
