// Package bgppeer is a BGP router for tests: a gobgp server of its own on
// 127.0.0.1 that accepts one neighbour (a sluice master on the same host)
// and reports the routes it learns.
package bgppeer

import (
	"context"
	"fmt"
	"net"
	"slices"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	gobgplog "github.com/osrg/gobgp/v3/pkg/log"
	"github.com/osrg/gobgp/v3/pkg/server"
)

// Peer is the router.
type Peer struct {
	srv  *server.BgpServer
	Port int // where it listens on 127.0.0.1
}

// Start starts a router of AS asn that accepts a session from 127.0.0.1
// (AS neighborASN) on a free port of 127.0.0.1; it never connects itself.
func Start(asn, neighborASN uint32) (*Peer, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	srv := server.NewBgpServer(server.LoggerOption(quiet{}))
	go srv.Serve()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn: asn, RouterId: "192.0.2.254", ListenPort: int32(port), ListenAddresses: []string{"127.0.0.1"},
	}}); err != nil {
		srv.Stop()
		return nil, err
	}
	err = srv.AddPeer(ctx, &api.AddPeerRequest{Peer: &api.Peer{
		Conf:      &api.PeerConf{NeighborAddress: "127.0.0.1", PeerAsn: neighborASN},
		Transport: &api.Transport{PassiveMode: true},
		Timers:    &api.Timers{Config: &api.TimersConfig{HoldTime: 9, KeepaliveInterval: 3}},
		AfiSafis: []*api.AfiSafi{
			{Config: &api.AfiSafiConfig{Family: v4, Enabled: true}},
			{Config: &api.AfiSafiConfig{Family: v6, Enabled: true}},
		},
	}})
	if err != nil {
		srv.Stop()
		return nil, err
	}
	return &Peer{srv: srv, Port: port}, nil
}

var (
	v4 = &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
	v6 = &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}
)

// Established reports whether the session with the neighbour is up.
func (p *Peer) Established() bool {
	up := false
	p.srv.ListPeer(context.Background(), &api.ListPeerRequest{}, func(q *api.Peer) {
		up = up || q.GetState().GetSessionState() == api.PeerState_ESTABLISHED
	})
	return up
}

// Route is a learnt route.
type Route struct {
	Prefix      string
	NextHop     string
	Communities []string
}

// Routes are the routes the router holds now, IPv4 and IPv6.
func (p *Peer) Routes() []Route {
	var out []Route
	for _, f := range []*api.Family{v4, v6} {
		p.srv.ListPath(context.Background(), &api.ListPathRequest{TableType: api.TableType_GLOBAL, Family: f}, func(d *api.Destination) {
			for _, path := range d.Paths {
				if path.IsWithdraw {
					continue
				}
				r := Route{Prefix: d.Prefix}
				for _, a := range path.Pattrs {
					m, err := a.UnmarshalNew()
					if err != nil {
						continue
					}
					switch m := m.(type) {
					case *api.NextHopAttribute:
						r.NextHop = m.NextHop
					case *api.MpReachNLRIAttribute:
						if len(m.NextHops) > 0 {
							r.NextHop = m.NextHops[0]
						}
					case *api.CommunitiesAttribute:
						for _, c := range m.Communities {
							r.Communities = append(r.Communities, fmt.Sprintf("%d:%d", c>>16, c&0xffff))
						}
					}
				}
				out = append(out, r)
			}
		})
	}
	return out
}

// Has reports whether the router holds a route to prefix.
func (p *Peer) Has(prefix string) bool {
	return slices.ContainsFunc(p.Routes(), func(r Route) bool { return r.Prefix == prefix })
}

// Close stops the router.
func (p *Peer) Close() { p.srv.Stop() }

type quiet struct{}

func (quiet) Panic(msg string, _ gobgplog.Fields) { panic(msg) }
func (quiet) Fatal(string, gobgplog.Fields)       {}
func (quiet) Error(string, gobgplog.Fields)       {}
func (quiet) Warn(string, gobgplog.Fields)        {}
func (quiet) Info(string, gobgplog.Fields)        {}
func (quiet) Debug(string, gobgplog.Fields)       {}
func (quiet) SetLevel(gobgplog.LogLevel)          {}
func (quiet) GetLevel() gobgplog.LogLevel         { return gobgplog.ErrorLevel }
