package bgp

import (
	"log/slog"
	"net/netip"

	api "github.com/osrg/gobgp/v3/api"
	gobgplog "github.com/osrg/gobgp/v3/pkg/log"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"sluice/conf"
)

// peerOf is the gobgp peer of a neighbour: IPv4 and IPv6 unicast (each
// session carries what both ends negotiate), keepalives every third of the
// hold time.
func peerOf(n conf.BGPNeighbor, hold interface{ Seconds() float64 }) *api.Peer {
	h := uint64(hold.Seconds())
	return &api.Peer{
		Conf:      &api.PeerConf{NeighborAddress: n.Address.String(), PeerAsn: n.ASN, AuthPassword: n.Password},
		Transport: &api.Transport{RemotePort: uint32(n.Port)},
		Timers:    &api.Timers{Config: &api.TimersConfig{HoldTime: h, KeepaliveInterval: max(1, h/3), ConnectRetry: connectRetry}},
		AfiSafis: []*api.AfiSafi{
			{Config: &api.AfiSafiConfig{Family: &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}, Enabled: true}},
			{Config: &api.AfiSafiConfig{Family: &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}, Enabled: true}},
		},
	}
}

// pathOf is the route of an announcement. An unspecified next hop is
// "self": gobgp puts the session's local address there, for iBGP and eBGP.
func pathOf(a conf.BGPAnnounce) *api.Path {
	v4 := a.Prefix.Addr().Is4()
	nh := a.NextHop
	if !nh.IsValid() {
		nh = netip.IPv6Unspecified()
		if v4 {
			nh = netip.IPv4Unspecified()
		}
	}
	nlri := mustAny(&api.IPAddressPrefix{Prefix: a.Prefix.Addr().String(), PrefixLen: uint32(a.Prefix.Bits())})
	attrs := []*anypb.Any{mustAny(&api.OriginAttribute{Origin: 0})} // IGP
	family := &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
	if v4 {
		attrs = append(attrs, mustAny(&api.NextHopAttribute{NextHop: nh.String()}))
	} else {
		family = &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}
		attrs = append(attrs, mustAny(&api.MpReachNLRIAttribute{Family: family, NextHops: []string{nh.String()}, Nlris: []*anypb.Any{nlri}}))
	}
	if len(a.Communities) > 0 {
		attrs = append(attrs, mustAny(&api.CommunitiesAttribute{Communities: a.Communities}))
	}
	return &api.Path{Family: family, Nlri: nlri, Pattrs: attrs}
}

func mustAny(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		panic(err) // only for messages of gobgp's own API, which always marshal
	}
	return a
}

// logger sends gobgp's logs to slog. gobgp's Info is chatty (every
// configuration step): it goes to Debug, but for session changes which
// the speaker logs itself.
type logger struct{ l *slog.Logger }

func (g *logger) attrs(f gobgplog.Fields) []any {
	out := make([]any, 0, 2*len(f))
	for k, v := range f {
		out = append(out, k, v)
	}
	return out
}

func (g *logger) Panic(msg string, f gobgplog.Fields) { g.l.Error(msg, g.attrs(f)...); panic(msg) }
func (g *logger) Fatal(msg string, f gobgplog.Fields) { g.l.Error(msg, g.attrs(f)...) }
func (g *logger) Error(msg string, f gobgplog.Fields) { g.l.Error(msg, g.attrs(f)...) }
func (g *logger) Warn(msg string, f gobgplog.Fields)  { g.l.Warn(msg, g.attrs(f)...) }
func (g *logger) Info(msg string, f gobgplog.Fields)  { g.l.Debug(msg, g.attrs(f)...) }
func (g *logger) Debug(msg string, f gobgplog.Fields) { g.l.Debug(msg, g.attrs(f)...) }
func (g *logger) SetLevel(gobgplog.LogLevel)          {}
func (g *logger) GetLevel() gobgplog.LogLevel         { return gobgplog.DebugLevel }
