// Package policy is the edge traffic policy of a frontend: the rules of
// [[frontend.NAME.rule]] (deny, allow, redirect, tarpit, header edits) and
// the per-client counters of [frontend.NAME.rate_limit]. The HTTP paths of
// package l7 (HTTP/1 and HTTP/2 alike) ask it once per request, the tcp
// accept paths of package frontend once per connection; it counts what it
// decides, so every path reports the same way.
//
// Nothing here allocates or takes a global lock per request: rules are
// compiled once per configuration, the rate table is sharded, and a
// request's header edits travel as a bit mask of rule indexes.
package policy

import (
	"net/netip"
	"sync/atomic"
	"time"

	"sluice/conf"
)

// Headers is what rules read of a request's headers.
type Headers interface {
	// Get returns the first value of the header name (canonical form, as
	// "X-Debug"), or nil when absent.
	Get(name string) []byte
}

// Request is what rules look at. A tcp connection sets Client and TLS
// only.
type Request struct {
	Client netip.Addr // the PROXY header's source when one was accepted
	TLS    bool
	// HTTP only.
	Method, Host, Path []byte // Host as sent (port included); Path with its query
	Headers            Headers
}

// Outcome is what a request or connection becomes.
type Outcome uint8

// Outcomes.
const (
	Pass     Outcome = iota // serve it (header edits in Verdict.Edits)
	Deny                    // answer Verdict.Status (tcp: close)
	Redirect                // answer Verdict.Status with Location (AppendLocation)
	Tarpit                  // hold for Verdict.Hold, then as Deny
)

// Verdict is the decision for one request or connection.
type Verdict struct {
	Outcome Outcome
	Status  int           // Deny, Tarpit: the status to answer; Redirect: the code
	Hold    time.Duration // Tarpit: how long to hold first
	Rule    int           // index of the rule that decided; -1: none, or the rate limit
	Limited bool          // the rate limit decided (Status 429 for requests)
	// Edits has bit i set when rule i is a header action whose conditions
	// held: the request and response writers apply those (Drops, Adds).
	Edits uint64
}

// MaxRules is the most rules a frontend may have (one bit of
// Verdict.Edits each).
const MaxRules = 64

// Counters are a frontend's policy totals. Must not be copied.
type Counters struct {
	Denied      atomic.Uint64 // requests answered deny by a rule (http)
	Redirected  atomic.Uint64 // requests answered with a redirect
	Tarpitted   atomic.Uint64 // requests and connections held by a tarpit (rule or rate limit)
	Limited     atomic.Uint64 // requests over rate_limit.requests (429)
	ConnDenied  atomic.Uint64 // tcp connections closed by a rule
	ConnLimited atomic.Uint64 // connections closed over rate_limit.connections or connection_rate
}

// Frontend is the policy of one frontend.
type Frontend struct {
	Name     string
	Mode     conf.Mode
	Rules    *Rules   // nil: no rules
	Limit    *Limiter // nil: no rate limit
	Counters Counters
}

// New compiles f's rules and rate limit; nil when it has neither, so the
// paths pay one nil check.
func New(f *conf.Frontend) *Frontend {
	panic("TODO")
}

// CheckConn decides a new connection from client: in tcp mode the rules
// (their src, not_src and tls conditions), in both modes the connection
// limits of the rate limit. A connection that passes must be followed by
// Closed when it ends. Counted.
func (p *Frontend) CheckConn(client netip.Addr, tls bool, now time.Time) Verdict {
	panic("TODO")
}

// Closed tells the rate limit that a connection CheckConn passed has ended.
func (p *Frontend) Closed(client netip.Addr) {
	panic("TODO")
}

// CheckRequest decides an HTTP request: the request rate of the client
// first (a client over it is refused before any rule runs), then the rules
// in order. Counted.
func (p *Frontend) CheckRequest(req *Request, now time.Time) Verdict {
	panic("TODO")
}

// Vars are the values a header value template may use.
type Vars struct {
	Client   netip.AddrPort // {client_ip} {client_port}
	Frontend string         // {frontend}
	SNI      string         // {tls_sni}
	ConnID   string         // {request_id} is ConnID "-" Seq
	Seq      uint64         //   (the request's number on its connection, or its HTTP/2 stream id)
}

// Drops reports whether a header named name (any case) of the request
// (response false) or response (true) is to be left out because a rule in
// edits deletes or sets it.
func (r *Rules) Drops(edits uint64, response bool, name []byte) bool {
	panic("TODO")
}

// Adds returns the rules of edits that write a header (set_header,
// add_header) on the given side, in rule order: iterate with
// bits.TrailingZeros64 and Edit.
func (r *Rules) Adds(edits uint64, response bool) uint64 {
	panic("TODO")
}

// Edit is a header a rule writes.
type Edit struct {
	Name  string // as configured
	Lower string // lower case, for HTTP/2
	value []segment
}

type segment struct {
	lit string
	v   uint8 // 0: literal; else one of the template variables
}

// Edit returns rule i's header edit.
func (r *Rules) Edit(i int) *Edit {
	panic("TODO")
}

// AppendValue appends the edit's value with its template variables
// filled from v. Characters that could split a header (CR, LF, NUL) never
// come out of it.
func (e *Edit) AppendValue(b []byte, v *Vars) []byte {
	panic("TODO")
}

// AppendLocation appends the Location of a Redirect verdict for req.
func (r *Rules) AppendLocation(b []byte, v Verdict, req *Request) []byte {
	panic("TODO")
}

// Rules are a frontend's compiled rules.
type Rules struct {
	list []conf.Rule
}

// Limiter holds the per-client counters of a rate_limit: a sliding window
// (HAProxy's http_req_rate: the previous period's count weighted by the
// part of it still in the window, plus the current one) for requests and
// new connections, and the concurrent connections. Sharded; bounded to
// table_size clients, the least recently seen evicted.
type Limiter struct {
	cfg conf.RateLimit
}

// ClientRate is one client's counters, for `sluice ctl show limits`.
type ClientRate struct {
	Client         netip.Addr
	Requests       float64 // requests in the sliding window (peers' included when shared)
	ConnectionRate float64 // new connections in the sliding window
	Connections    int     // open now, on this node
}

// Tracked returns how many clients the table holds.
func (l *Limiter) Tracked() int { panic("TODO") }

// Evicted returns how many clients were evicted to keep table_size.
func (l *Limiter) Evicted() uint64 { panic("TODO") }

// Top returns up to n clients with the highest request rates (then
// connection rates).
func (l *Limiter) Top(n int, now time.Time) []ClientRate { panic("TODO") }

// Increment is a node's count for one client in one period, sent to peers
// when the limit is shared. Periods are numbered from the Unix epoch
// (unix time / period), so that nodes agree on them.
type Increment struct {
	Client      netip.Addr
	Period      int64
	Requests    uint32
	Connections uint32 // new connections
}

// Shared reports whether the limit's counters are summed with peers.
func (l *Limiter) Shared() bool { return l != nil && l.cfg.Shared }

// TakeIncrements appends the counts made on this node since the last call
// (only when shared) and forgets them.
func (l *Limiter) TakeIncrements(dst []Increment) []Increment { panic("TODO") }

// AddRemote adds a peer's increment to the client's counters; one for a
// period that has left the window is ignored.
func (l *Limiter) AddRemote(inc Increment, now time.Time) { panic("TODO") }
