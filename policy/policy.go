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
const MaxRules = conf.MaxRules

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
	if len(f.Rules) == 0 && f.RateLimit == nil {
		return nil
	}
	return &Frontend{Name: f.Name, Mode: f.Mode, Rules: Compile(f.Rules), Limit: NewLimiter(f.RateLimit)}
}

// CheckConn decides a new connection from client: in tcp mode the rules
// (their src, not_src and tls conditions), in both modes the connection
// limits of the rate limit. A connection that passes must be followed by
// Closed when it ends. Counted.
func (p *Frontend) CheckConn(client netip.Addr, tls bool, now time.Time) Verdict {
	if p.Mode != conf.ModeHTTP && p.Rules != nil {
		req := Request{Client: client, TLS: tls}
		switch v := p.Rules.Eval(&req); v.Outcome {
		case Deny:
			p.Counters.ConnDenied.Add(1)
			return v
		case Tarpit:
			p.Counters.ConnDenied.Add(1)
			p.Counters.Tarpitted.Add(1)
			return v
		}
	}
	if l := p.Limit; l.limitsConns() && !l.open(client, now) {
		p.Counters.ConnLimited.Add(1)
		return p.refusal(0)
	}
	return Verdict{Rule: -1}
}

// Closed tells the rate limit that a connection CheckConn passed has ended.
func (p *Frontend) Closed(client netip.Addr) {
	if l := p.Limit; l.limitsConns() {
		l.close(client)
	}
}

// CheckRequest decides an HTTP request: the request rate of the client
// first (a client over it is refused before any rule runs), then the rules
// in order. Counted.
func (p *Frontend) CheckRequest(req *Request, now time.Time) Verdict {
	if l := p.Limit; l != nil && l.cfg.Requests > 0 && !l.request(req.Client, now) {
		p.Counters.Limited.Add(1)
		return p.refusal(429)
	}
	if p.Rules == nil {
		return Verdict{Rule: -1}
	}
	v := p.Rules.Eval(req)
	switch v.Outcome {
	case Deny:
		p.Counters.Denied.Add(1)
	case Redirect:
		p.Counters.Redirected.Add(1)
	case Tarpit:
		p.Counters.Tarpitted.Add(1)
	}
	return v
}

// refusal is the verdict for a client over the limit: status for HTTP
// requests (0 for a connection, which closes).
func (p *Frontend) refusal(status int) Verdict {
	v := Verdict{Outcome: Deny, Status: status, Rule: -1, Limited: true}
	if p.Limit.cfg.Action == conf.LimitTarpit {
		v.Outcome, v.Hold = Tarpit, p.Limit.cfg.Tarpit
		p.Counters.Tarpitted.Add(1)
	}
	return v
}
