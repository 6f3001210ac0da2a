package frontend

import (
	"context"
	"net"

	"sluice/conf"
	"sluice/l4"
)

// newUDP builds the flow proxy of a udp frontend over its sockets.
func (s *Server) newUDP(f *Frontend, bc *conf.Backend) error {
	conns := make([]net.PacketConn, 0, len(f.socks))
	for _, sock := range f.socks {
		conns = append(conns, sock.Packet)
	}
	idle := f.cfg.TimeoutUDP
	if bc != nil && bc.TimeoutUDP > 0 {
		idle = bc.TimeoutUDP
	}
	if idle <= 0 {
		idle = conf.DefaultTimeoutUDP
	}
	o := l4.UDPOptions{
		Backend:  f.backend,
		Idle:     idle,
		MaxFlows: f.cfg.MaxFlows,
		// Fitted to the descriptor limit by the engine when the file sets
		// none (fdlimit.Plan); per source as the file says.
		MaxFlowsPerSource: f.cfg.MaxFlowsPerSource,
		Retries:           f.backend.Retries,
		Counters:          &f.UDP,
		Log:               s.log.With("frontend", f.Name),
		Totals: l4.UDPTotals{
			Sessions: &f.Counters.Sessions,
			Current:  &f.Counters.Current,
			BytesIn:  &f.Counters.BytesIn,
			BytesOut: &f.Counters.BytesOut,
			Errors:   &f.Counters.Errors,
			Denied:   &f.Counters.Denied,
			Panics:   &f.Counters.Panics,
		},
	}
	if bc != nil {
		o.Responses = bc.Responses
		o.SendProxy = bc.SendProxy
	}
	p, err := l4.NewUDPProxy(conns, o)
	if err != nil {
		return err
	}
	f.udp = p
	return nil
}

// UDPProxy returns the flow proxy of a udp frontend, else nil.
func (f *Frontend) UDPProxy() *l4.UDPProxy { return f.udp }

// shutdownUDP lets the flows of udp frontends end on their own (idle,
// responses) until ctx ends, then ends the rest, and closes the sockets. It
// returns how many flows it cut.
func (s *Server) shutdownUDP(ctx context.Context) int {
	cut := 0
	for _, f := range s.Frontends {
		if f.udp == nil {
			continue
		}
		select {
		case <-f.udp.Wait():
		case <-ctx.Done():
		}
		cut += f.udp.Close()
		for _, sock := range f.socks {
			sock.Close()
		}
	}
	return cut
}
