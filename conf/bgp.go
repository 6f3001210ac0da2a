package conf

import (
	"fmt"
	"net/netip"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// BGP is the [bgp] section: the master announces each prefix of Announce
// to every neighbour while this node can serve (gobgp embedded in the
// master, package bgp). ASN 0 means the section is absent.
type BGP struct {
	ASN        uint32
	RouterID   netip.Addr
	ListenPort int // -1: no incoming sessions
	HoldTime   time.Duration
	// DrainBeforeStop is how long an orderly stop waits after withdrawing
	// the prefixes before connections drain, so that the routers move the
	// flows away first.
	DrainBeforeStop time.Duration
	Neighbors       []BGPNeighbor
	Announce        []BGPAnnounce
}

// Enabled reports whether [bgp] is configured.
func (b BGP) Enabled() bool { return b.ASN != 0 }

// BGPNeighbor is one [[bgp.neighbor]]: a router this node keeps a session with.
type BGPNeighbor struct {
	Address  netip.Addr
	ASN      uint32
	Port     int
	Password string // TCP MD5 (RFC 2385); "" for none
}

// BGPAnnounce is one [[bgp.announce]].
type BGPAnnounce struct {
	Prefix      netip.Prefix
	NextHop     netip.Addr // invalid: "self", the address of the session
	Communities []uint32   // 65000:100 as 65000<<16 | 100
	// WhenVital are frontends that must each have a server up; empty: the
	// node's own rule (global.vital_frontends, as /healthz).
	WhenVital []string
}

type rawBGP struct {
	ASN             *int64           `toml:"asn"`
	RouterID        string           `toml:"router_id"`
	ListenPort      *int             `toml:"listen_port"`
	HoldTime        string           `toml:"hold_time"`
	DrainBeforeStop string           `toml:"drain_before_stop"`
	Neighbor        []rawBGPNeighbor `toml:"neighbor"`
	Announce        []rawBGPAnnounce `toml:"announce"`
}

type rawBGPNeighbor struct {
	Address  string `toml:"address"`
	ASN      *int64 `toml:"asn"`
	Port     *int   `toml:"port"`
	Password string `toml:"password"`
}

type rawBGPAnnounce struct {
	Prefix      string   `toml:"prefix"`
	NextHop     string   `toml:"next_hop"`
	Communities []string `toml:"communities"`
	WhenVital   []string `toml:"when_vital"`
}

const (
	DefaultBGPHoldTime        = 9 * time.Second
	DefaultBGPDrainBeforeStop = 2 * time.Second
	DefaultBGPPort            = 179
)

// bgp checks the [bgp] section; frontend names are checked later
// (bgpVital), once the frontends are known.
func (v *validator) bgp(r rawBGP) BGP {
	set := r.ASN != nil || r.RouterID != "" || r.ListenPort != nil || r.HoldTime != "" || r.DrainBeforeStop != "" ||
		len(r.Neighbor) > 0 || len(r.Announce) > 0
	if !set {
		return BGP{}
	}
	var b BGP
	if r.ASN == nil {
		v.errf("bgp", "[bgp] needs asn: this node's AS number, like 65010 (a private one: 64512..65534 or 4200000000..4294967294)")
	} else {
		b.ASN = v.asn("bgp.asn", *r.ASN)
	}
	if r.RouterID == "" {
		v.errf("bgp", "[bgp] needs router_id: an IPv4 address unique among the routers, usually this node's own, like \"192.0.2.11\"")
	} else if a, err := netip.ParseAddr(r.RouterID); err != nil || !a.Is4() || a.IsUnspecified() {
		v.errf("bgp.router_id", "%q is not an IPv4 address; a router ID is written like one (\"192.0.2.11\"), even for IPv6 sessions", r.RouterID)
	} else {
		b.RouterID = a
	}
	b.ListenPort = -1
	if r.ListenPort != nil {
		b.ListenPort = *r.ListenPort
		if b.ListenPort != -1 && (b.ListenPort < 1 || b.ListenPort > 65535) {
			v.errf("bgp.listen_port", "%d is not a port; use -1 (no incoming sessions: this node connects to its neighbours) or 1..65535 (179 is BGP's)", b.ListenPort)
		}
	}
	b.HoldTime = v.dur("bgp.hold_time", r.HoldTime, DefaultBGPHoldTime)
	if b.HoldTime != 0 && (b.HoldTime < 3*time.Second || b.HoldTime > 65535*time.Second || b.HoldTime%time.Second != 0) {
		v.errf("bgp.hold_time", "%s is not a BGP hold time; use whole seconds, 3s or more (RFC 4271), like \"9s\"", b.HoldTime)
	}
	if b.HoldTime == 0 && r.HoldTime != "" {
		v.errf("bgp.hold_time", "0 turns keepalives off and a dead node's routes would stay; use 3s or more, like \"9s\"")
	}
	b.DrainBeforeStop = v.dur("bgp.drain_before_stop", r.DrainBeforeStop, DefaultBGPDrainBeforeStop)
	if len(r.Neighbor) == 0 {
		v.errf("bgp", "[bgp] has no [[bgp.neighbor]]: add the routers to announce to, each with address and asn")
	}
	seen := map[netip.Addr]bool{}
	for i, rn := range r.Neighbor {
		k := fmt.Sprintf("bgp.neighbor.%d", i)
		var n BGPNeighbor
		a, err := netip.ParseAddr(rn.Address)
		switch {
		case rn.Address == "":
			v.errf(k, "needs address: the router's IP address, like \"192.0.2.1\"")
		case err != nil || a.Zone() != "":
			v.errf(k+".address", "%q is not an IP address; write the router's address, like \"192.0.2.1\" or \"2001:db8::1\" (no port: use port)", rn.Address)
		case seen[a]:
			v.errf(k+".address", "%s is listed twice; one [[bgp.neighbor]] per router", a)
		default:
			n.Address = a
			seen[a] = true
		}
		if rn.ASN == nil {
			v.errf(k, "needs asn: the router's AS number, like 65000")
		} else {
			n.ASN = v.asn(k+".asn", *rn.ASN)
		}
		n.Port = DefaultBGPPort
		if rn.Port != nil {
			n.Port = *rn.Port
			if n.Port < 1 || n.Port > 65535 {
				v.errf(k+".port", "%d is not a port; use 1..65535 (179, BGP's, by default)", n.Port)
			}
		}
		if len(rn.Password) > 80 {
			v.errf(k+".password", "is %d bytes; a TCP MD5 key is at most 80 (Linux's TCP_MD5SIG_MAXKEYLEN)", len(rn.Password))
		}
		n.Password = rn.Password
		if n.Password != "" {
			v.secretMode(k+".password", v.file) // the key is in this file
			if b.ListenPort != -1 {
				// gobgp's listener is Multipath TCP (Go's default), on which
				// Linux refuses TCP_MD5SIG: an incoming session without the
				// key would be accepted. Dialled sessions carry it.
				v.errf(k+".password", "TCP MD5 protects only the sessions this node dials, not those it accepts on listen_port %d; set listen_port = -1 (the router waits: passive on in BIRD)", b.ListenPort)
			}
		}
		b.Neighbors = append(b.Neighbors, n)
	}
	if len(r.Announce) == 0 {
		v.errf("bgp", "[bgp] has no [[bgp.announce]]: add the service address to announce, like prefix = \"198.51.100.10/32\"")
	}
	prefixes := map[netip.Prefix]bool{}
	for i, ra := range r.Announce {
		k := fmt.Sprintf("bgp.announce.%d", i)
		var an BGPAnnounce
		p, err := netip.ParsePrefix(ra.Prefix)
		switch {
		case ra.Prefix == "":
			v.errf(k, "needs prefix: the service address as a prefix, like \"198.51.100.10/32\" or \"2001:db8::10/128\"")
		case err != nil:
			if a, aerr := netip.ParseAddr(ra.Prefix); aerr == nil {
				v.errf(k+".prefix", "%q has no length; write \"%s/%d\" for this one address", ra.Prefix, a, a.BitLen())
			} else {
				v.errf(k+".prefix", "%q is not a prefix; write it like \"198.51.100.10/32\" or \"2001:db8::10/128\"", ra.Prefix)
			}
		case p != p.Masked():
			v.errf(k+".prefix", "%q has host bits set; write %q", ra.Prefix, p.Masked().String())
		case p.Bits() == 0:
			v.errf(k+".prefix", "%s is a default route: every router would send this node all traffic without a better route; announce the service address, like \"198.51.100.10/32\"", p)
		case prefixes[p]:
			v.errf(k+".prefix", "%s is announced twice; one [[bgp.announce]] per prefix", p)
		default:
			an.Prefix = p
			prefixes[p] = true
		}
		switch ra.NextHop {
		case "", "self":
		default:
			a, err := netip.ParseAddr(ra.NextHop)
			if err != nil || a.Zone() != "" {
				v.errf(k+".next_hop", "%q is neither \"self\" (the address of the session, the usual choice) nor an IP address", ra.NextHop)
			} else if an.Prefix.IsValid() && a.Is4() != an.Prefix.Addr().Is4() {
				v.errf(k+".next_hop", "%s is not of the family of prefix %s; use \"self\" or an address of the same family", a, an.Prefix)
			} else {
				an.NextHop = a
			}
		}
		for j, c := range ra.Communities {
			if n, ok := parseCommunity(c); ok {
				an.Communities = append(an.Communities, n)
			} else {
				v.errf(k+".communities", "entry %d %q is not a community; write it as \"ASN:VALUE\", each 0..65535, like \"65000:100\"", j+1, c)
			}
		}
		an.WhenVital = ra.WhenVital
		b.Announce = append(b.Announce, an)
	}
	return b
}

// bgpVital checks that every when_vital names a frontend, and warns of an
// announcement that no server's health gates.
func (v *validator) bgpVital(r rawBGP, cfg *Config) {
	for i, ra := range r.Announce {
		if len(ra.WhenVital) == 0 && len(cfg.Global.VitalFrontends) == 0 {
			v.warnf(fmt.Sprintf("bgp.announce.%d", i), "announced whatever the servers' health (only maintenance and a stop withdraw it): set when_vital = [\"FRONTEND\"] or global.vital_frontends")
		}
		for _, name := range ra.WhenVital {
			if cfg.Frontend(name) == nil {
				v.errf(fmt.Sprintf("bgp.announce.%d.when_vital", i), "frontend %q does not exist; name a [frontend.NAME] of this file", name)
			}
		}
	}
}

// asn checks an AS number: 1..4294967295 but not 23456 (AS_TRANS) nor
// 65535 or 4294967295 (reserved).
func (v *validator) asn(key string, n int64) uint32 {
	switch {
	case n < 1 || n > 4294967294 || n == 65535:
		v.errf(key, "%d is not a usable AS number; use 1..4294967294 without 65535 (private ones: 64512..65534, 4200000000..4294967294)", n)
	case n == 23456:
		v.errf(key, "23456 is AS_TRANS, reserved for 2-byte speakers; use this network's own AS number")
	default:
		return uint32(n)
	}
	return 0
}

// parseCommunity reads "65000:100" as 65000<<16 | 100.
func parseCommunity(s string) (uint32, bool) {
	hi, lo, ok := strings.Cut(s, ":")
	if !ok {
		return 0, false
	}
	h, err1 := strconv.ParseUint(hi, 10, 16)
	l, err2 := strconv.ParseUint(lo, 10, 16)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return uint32(h)<<16 | uint32(l), true
}

// CommunityString writes a community as "65000:100".
func CommunityString(c uint32) string {
	return strconv.Itoa(int(c>>16)) + ":" + strconv.Itoa(int(c&0xffff))
}

// bgp lists the changes of [bgp]: its scalar keys, then neighbours and
// announcements by address and prefix (a password shows as changed, never
// its value).
func (d *differ) bgp(o, n BGP) {
	d.fields("bgp", "", reflect.ValueOf(o), reflect.ValueOf(n), reflect.TypeFor[rawBGP]())
	on, nn := map[netip.Addr]BGPNeighbor{}, map[netip.Addr]BGPNeighbor{}
	for _, x := range o.Neighbors {
		on[x.Address] = x
	}
	for _, x := range n.Neighbors {
		nn[x.Address] = x
		p, had := on[x.Address]
		switch {
		case !had:
			d.add("+", "bgp", "neighbor "+x.Address.String(), "", fmt.Sprintf("asn %d, port %d", x.ASN, x.Port))
		case p.ASN != x.ASN || p.Port != x.Port:
			d.add("~", "bgp", "neighbor "+x.Address.String(), fmt.Sprintf("asn %d port %d", p.ASN, p.Port), fmt.Sprintf("asn %d port %d", x.ASN, x.Port))
		case p.Password != x.Password:
			d.add("~", "bgp", "neighbor "+x.Address.String()+" password", "", "")
		}
	}
	for _, x := range o.Neighbors {
		if _, kept := nn[x.Address]; !kept {
			d.add("-", "bgp", "neighbor "+x.Address.String(), "", "")
		}
	}
	oa, na := map[netip.Prefix]BGPAnnounce{}, map[netip.Prefix]bool{}
	for _, x := range o.Announce {
		oa[x.Prefix] = x
	}
	for _, x := range n.Announce {
		na[x.Prefix] = true
		p, had := oa[x.Prefix]
		switch {
		case !had:
			d.add("+", "bgp", "announce "+x.Prefix.String(), "", "")
		case !reflect.DeepEqual(p, x):
			d.add("~", "bgp", "announce "+x.Prefix.String()+" next_hop, communities or when_vital", "", "")
		}
	}
	for _, x := range o.Announce {
		if !na[x.Prefix] {
			d.add("-", "bgp", "announce "+x.Prefix.String(), "", "")
		}
	}
}
