package l7

import (
	"context"

	"sluice/backend"
)

// errServerConns is a server connection refused for want of a slot of the
// process's budget (backend.ServerConns).
var errServerConns = backend.ErrServerConns

// stopCtx is the context every connect of p runs under: it ends at a hard
// stop, so that requests still queued or dialing give up at once.
func (p *Proxy) stopCtx() context.Context {
	if p.Stop != nil {
		return p.Stop
	}
	return context.Background()
}
