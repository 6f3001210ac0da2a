package conf

import (
	"encoding"
	"fmt"
	"strconv"
	"strings"
)

// The enumerated keys decode into the types below, once, by the TOML
// decoder (encoding.TextUnmarshaler). Each type spells its names in one
// table here; every other package compares with the constants and prints
// with String. The string-valued ones keep their name as their value, so a
// comparison elsewhere costs what a string comparison did.

// ValueError is a value that is not one of a key's names.
type ValueError struct {
	Value    string
	Accepted []string
}

func (e *ValueError) Error() string {
	return fmt.Sprintf("%q is not one of %s", e.Value, strings.Join(quoteAll(e.Accepted), ", "))
}

// parseName sets *dst to text and refuses text that is not "" (the key
// left to its default) or one of names. The value is set even when refused,
// so that the messages about other keys of a refused file still name what
// was written.
func parseName[T ~string](dst *T, text []byte, names []T) error {
	*dst = T(text)
	if len(text) == 0 {
		return nil
	}
	for _, n := range names {
		if *dst == n {
			return nil
		}
	}
	return &ValueError{Value: string(text), Accepted: namesOf(names)}
}

func namesOf[T ~string](names []T) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = string(n)
	}
	return out
}

// Mode is how a frontend and its backends handle traffic ("mode").
type Mode string

// Modes of frontends and backends.
const (
	ModeTCP  Mode = "tcp"
	ModeUDP  Mode = "udp"
	ModeHTTP Mode = "http"
)

var modeNames = []Mode{ModeTCP, ModeUDP, ModeHTTP}

func (m Mode) String() string { return string(m) }

// UnmarshalText accepts "tcp", "udp", "http" and "" (not set).
func (m *Mode) UnmarshalText(b []byte) error { return parseName(m, b, modeNames) }

// Network is the socket network a frontend of mode m listens on: "udp" for
// udp, "tcp" for the others (http runs over tcp). Every bind, socket key
// and duplicate check asks here.
func (m Mode) Network() string {
	if m == ModeUDP {
		return "udp"
	}
	return "tcp"
}

// Network is the socket network the frontend listens on (see Mode.Network).
func (f *Frontend) Network() string { return f.Mode.Network() }

// Balance is a backend's balancing algorithm ("balance").
type Balance string

// Balancing algorithms.
const (
	BalanceRoundRobin Balance = "roundrobin"
	BalanceLeastConn  Balance = "leastconn"
	BalanceIPHash     Balance = "iphash"
	BalanceRandom     Balance = "random" // power of two random choices
)

// BalanceNames lists every algorithm, in the order the docs give them.
var BalanceNames = []Balance{BalanceRoundRobin, BalanceLeastConn, BalanceIPHash, BalanceRandom}

func (b Balance) String() string { return string(b) }

// UnmarshalText accepts the names of BalanceNames and "" (the default,
// roundrobin).
func (b *Balance) UnmarshalText(t []byte) error { return parseName(b, t, BalanceNames) }

// Sticky is what keeps a client on its server ("sticky").
type Sticky string

// Stickiness kinds.
const (
	StickyNone   Sticky = ""
	StickyCookie Sticky = "cookie" // the HTTP layer sets and reads a cookie
	StickySource Sticky = "source" // a table of client addresses (backend.StickyTable)
)

var stickyNames = []Sticky{StickyNone, StickyCookie, StickySource}

func (s Sticky) String() string { return string(s) }

// UnmarshalText accepts "", "cookie" and "source".
func (s *Sticky) UnmarshalText(b []byte) error { return parseName(s, b, stickyNames) }

// Proto is the protocol an http backend speaks to its servers ("proto").
type Proto string

// Protocols towards servers.
const (
	ProtoDefault Proto = ""      // HTTP/1.1
	ProtoHTTP1   Proto = "http1" // HTTP/1.1, said explicitly
	ProtoH2C     Proto = "h2c"   // HTTP/2 without TLS, prior knowledge
)

var protoNames = []Proto{ProtoDefault, ProtoHTTP1, ProtoH2C}

func (p Proto) String() string { return string(p) }

// UnmarshalText accepts "", "http1" and "h2c".
func (p *Proto) UnmarshalText(b []byte) error { return parseName(p, b, protoNames) }

// CheckKind is the active health check of a backend's servers
// ("health.check").
type CheckKind string

// Check kinds.
const (
	CheckNone  CheckKind = "none"
	CheckTCP   CheckKind = "tcp"
	CheckHTTP  CheckKind = "http"
	CheckDNS   CheckKind = "dns"
	CheckAgent CheckKind = "agent"
	CheckUDP   CheckKind = "udp"
)

var checkNames = []CheckKind{CheckTCP, CheckHTTP, CheckDNS, CheckAgent, CheckUDP, CheckNone}

func (c CheckKind) String() string { return string(c) }

// UnmarshalText accepts the check kinds and "" (none).
func (c *CheckKind) UnmarshalText(b []byte) error { return parseName(c, b, checkNames) }

// Active reports whether c runs checks: not none, and not the zero value
// of a Health built in code.
func (c CheckKind) Active() bool { return c != CheckNone && c != "" }

// InitState is the health a server starts with ("health.init_state").
type InitState string

// Initial health states.
const (
	InitUp   InitState = "up"
	InitDown InitState = "down"
)

var initNames = []InitState{InitUp, InitDown}

func (s InitState) String() string { return string(s) }

// UnmarshalText accepts "up", "down" and "" (up).
func (s *InitState) UnmarshalText(b []byte) error { return parseName(s, b, initNames) }

// ProxyVersion is the PROXY protocol header a backend's server connections
// open with ("send_proxy"): ProxyNone, ProxyV1 or ProxyV2. It is a number,
// the version on the wire, so the dialers test it against 0.
type ProxyVersion uint8

// PROXY protocol versions.
const (
	ProxyNone ProxyVersion = 0
	ProxyV1   ProxyVersion = 1
	ProxyV2   ProxyVersion = 2
)

var proxyNames = [...]string{ProxyNone: "", ProxyV1: "v1", ProxyV2: "v2"}

// String is the key's value: "", "v1" or "v2".
func (v ProxyVersion) String() string {
	if int(v) < len(proxyNames) {
		return proxyNames[v]
	}
	return "ProxyVersion(" + strconv.Itoa(int(v)) + ")"
}

// UnmarshalText accepts "", "v1" and "v2".
func (v *ProxyVersion) UnmarshalText(b []byte) error {
	for n, name := range proxyNames {
		if string(b) == name {
			*v = ProxyVersion(n)
			return nil
		}
	}
	return &ValueError{Value: string(b), Accepted: proxyNames[:]}
}

// MarshalText is String, so the type round-trips.
func (v ProxyVersion) MarshalText() ([]byte, error) { return []byte(v.String()), nil }

// AdminState is the state an operator (admin API, control socket, agent
// check, reload carry-over) puts a server in. Its names are spelled here
// only: every caller that reads or writes one goes through String and
// ParseAdminState. It is a number so that a server keeps it in an atomic.
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

// choice decodes one enumerated key with T's UnmarshalText but never stops
// the decoder: a refused value is kept in err, and validation reports it
// with its file, line and key next to every other problem of the file.
type choice[T any, P interface {
	*T
	encoding.TextUnmarshaler
}] struct {
	val T
	err error
}

func (c *choice[T, P]) UnmarshalText(b []byte) error {
	c.err = P(&c.val).UnmarshalText(b)
	return nil
}

// Raw decoding targets of the enumerated keys.
type (
	rawMode      = choice[Mode, *Mode]
	rawBalance   = choice[Balance, *Balance]
	rawSticky    = choice[Sticky, *Sticky]
	rawProto     = choice[Proto, *Proto]
	rawCheck     = choice[CheckKind, *CheckKind]
	rawInitState = choice[InitState, *InitState]
	rawProxy     = choice[ProxyVersion, *ProxyVersion]
)

// refused reports a value its type refused at decoding, at key.
func (v *validator) refused(key string, err error) {
	if err != nil {
		v.errf(key, "%v", err)
	}
}
