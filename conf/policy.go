package conf

import (
	"net/netip"
	"time"
)

// Edge traffic policy: [[frontend.NAME.rule]] and [frontend.NAME.rate_limit].
// Validated in policy_validate.go; compiled and run by package policy.

// RuleAction is what a rule does when its conditions hold ("action").
type RuleAction string

// Rule actions. deny, redirect and tarpit end the request (the first that
// matches stops evaluation); allow ends evaluation and lets the request
// pass; header actions apply and evaluation goes on.
const (
	ActionDeny      RuleAction = "deny"
	ActionAllow     RuleAction = "allow"
	ActionRedirect  RuleAction = "redirect"
	ActionTarpit    RuleAction = "tarpit"
	ActionSetHeader RuleAction = "set_header"
	ActionAddHeader RuleAction = "add_header"
	ActionDelHeader RuleAction = "del_header"
)

// RuleActionNames lists every action, in the order the docs give them.
var RuleActionNames = []RuleAction{ActionDeny, ActionAllow, ActionRedirect, ActionTarpit, ActionSetHeader, ActionAddHeader, ActionDelHeader}

func (a RuleAction) String() string { return string(a) }

// UnmarshalText accepts the names of RuleActionNames.
func (a *RuleAction) UnmarshalText(b []byte) error { return parseName(a, b, RuleActionNames) }

// Ends reports whether the action ends rule evaluation.
func (a RuleAction) Ends() bool {
	return a == ActionDeny || a == ActionAllow || a == ActionRedirect || a == ActionTarpit
}

// IsHeader reports whether the action edits a header.
func (a RuleAction) IsHeader() bool {
	return a == ActionSetHeader || a == ActionAddHeader || a == ActionDelHeader
}

// Rule is one [[frontend.NAME.rule]]: conditions (all optional, all must
// hold) and an action.
type Rule struct {
	// Line is the rule's line in the file, for logs and `ctl show limits`.
	Line int

	// Conditions.
	Src          []netip.Prefix // client address within one of these (the PROXY one when accepted)
	NotSrc       []netip.Prefix // client address within none of these
	Host         string         // http: exact (case-insensitive, port ignored) or "*.example.com"
	PathPrefix   string         // http: path starts with this
	Method       []string       // http: one of these methods (upper case)
	Header       string         // http: this header is present (canonical name) ...
	HeaderVal    string         // ... with exactly this value, when HasHeaderVal ("Name: value")
	HasHeaderVal bool
	TLS          *bool // connection was (true) or was not (false) TLS; nil: either

	// Action and its arguments.
	Action   RuleAction
	Status   int           // deny and tarpit: the answer (default 403); tcp closes
	Tarpit   time.Duration // tarpit: how long to hold before denying (default DefaultTarpit)
	Location string        // redirect: absolute location, or
	Scheme   string        // redirect: keep host and path, change the scheme ("https")
	Port     int           // redirect with scheme: the port in Location (0: none)
	Code     int           // redirect: 301 302 303 307 308 (default 302)
	Name     string        // header actions: the header
	Value    string        // set_header, add_header: the value; may use {client_ip} {client_port} {frontend} {tls_sni} {request_id}
	Response bool          // header actions on the response instead of the request
}

// RateLimitAction is what happens to a client over its limit.
type RateLimitAction string

// Rate limit actions.
const (
	LimitDeny   RateLimitAction = "deny"   // 429 (http requests) or close (connections)
	LimitTarpit RateLimitAction = "tarpit" // hold for rate_limit.tarpit, then deny
)

var rateLimitActionNames = []RateLimitAction{LimitDeny, LimitTarpit}

func (a RateLimitAction) String() string { return string(a) }

// UnmarshalText accepts "deny" and "tarpit".
func (a *RateLimitAction) UnmarshalText(b []byte) error {
	return parseName(a, b, rateLimitActionNames)
}

// RateLimit is [frontend.NAME.rate_limit]: per client address counters.
type RateLimit struct {
	Requests       int           // http requests per Period (0: no limit); 429 past it
	Period         time.Duration // the window of Requests and ConnectionRate
	Connections    int           // concurrent connections per client (0: no limit)
	ConnectionRate int           // new connections per Period (0: no limit)
	Action         RateLimitAction
	Tarpit         time.Duration // Action tarpit: how long to hold
	Shared         bool          // sum the rate counters with every node of [peers]
	TableSize      int           // clients tracked; the least recently seen are evicted
}

// Defaults of the policy keys.
const (
	DefaultTarpit          = 5 * time.Second
	DefaultRateLimitPeriod = 10 * time.Second
	DefaultRateTableSize   = 100000
	DefaultRedirectCode    = 302
	DefaultDenyStatus      = 403
)
