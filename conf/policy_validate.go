package conf

import (
	"fmt"
	"net/netip"
	"net/textproto"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Raw decoding targets of [[frontend.NAME.rule]] and
// [frontend.NAME.rate_limit]. Pointers tell a key left out from one written
// with its zero value: keys that do not belong to a rule's action are
// refused, not ignored.
type rawRule struct {
	Src        []string      `toml:"src"`
	NotSrc     []string      `toml:"not_src"`
	Host       *string       `toml:"host"`
	PathPrefix *string       `toml:"path_prefix"`
	Method     []string      `toml:"method"`
	Header     *string       `toml:"header"`
	TLS        *bool         `toml:"tls"`
	Action     rawRuleAction `toml:"action"`
	Status     *int          `toml:"status"`
	Tarpit     *string       `toml:"tarpit"`
	Location   *string       `toml:"location"`
	Scheme     *string       `toml:"scheme"`
	Port       *int          `toml:"port"`
	Code       *int          `toml:"code"`
	Name       *string       `toml:"name"`
	Value      *string       `toml:"value"`
	Response   *bool         `toml:"response"`
}

// rawRateLimit's field names are those of RateLimit: Diff pairs them.
type rawRateLimit struct {
	Requests       *int           `toml:"requests"`
	Period         string         `toml:"period"`
	Connections    *int           `toml:"connections"`
	ConnectionRate *int           `toml:"connection_rate"`
	Action         rawLimitAction `toml:"action"`
	Tarpit         *string        `toml:"tarpit"`
	Shared         bool           `toml:"shared"`
	TableSize      *int           `toml:"table_size"`
}

type (
	rawRuleAction  = choice[RuleAction, *RuleAction]
	rawLimitAction = choice[RateLimitAction, *RateLimitAction]
)

// Limits of the policy keys.
const (
	// MaxRules is the most rules a frontend may have: package policy
	// carries a request's header edits as one bit per rule in a uint64.
	MaxRules = 64
	// MaxTarpit bounds a tarpit: a held request pins a connection slot of
	// this node; longer holds cost the attacker nothing more.
	MaxTarpit = time.Minute
	// MaxRateLimitPeriod bounds rate_limit.period.
	MaxRateLimitPeriod = time.Hour
)

// TemplateVars are the variables a header value may use, as "{name}".
var TemplateVars = []string{"client_ip", "client_port", "frontend", "tls_sni", "request_id"}

// reservedHeaders are the names header actions may not touch: the framing
// of HTTP/1 and HTTP/2 (sluice writes it itself), Host (routing and the
// server's view of the request) and the forwarding headers sluice writes
// on every request (l7/forwarding.go), which a client must not choose.
var reservedHeaders = []string{
	"Host", "Content-Length", "Transfer-Encoding", "Connection", "Upgrade", "Te", "Trailer",
	"Keep-Alive", "Proxy-Connection",
	"X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Port", "Forwarded",
}

// policy checks and fills f.Rules and f.RateLimit from the rule and
// rate_limit keys of frontend p.
func (v *validator) policy(p string, rf *rawFrontend, f *Frontend, peers Peers) {
	if f.Mode == ModeUDP {
		if len(rf.Rule) > 0 || v.defined(p+".rule") {
			v.errf(p+".rule", "a udp frontend takes no rules; rules need mode = \"http\" or \"tcp\" (max_flows_per_source bounds one client of a udp frontend)")
		}
		if rf.RateLimit != nil {
			v.errf(p+".rate_limit", "a udp frontend takes no rate_limit; it needs mode = \"http\" or \"tcp\" (max_flows_per_source bounds one client of a udp frontend)")
		}
		return
	}
	if len(rf.Rule) > MaxRules {
		v.errf(fmt.Sprintf("%s.rule.%d", p, MaxRules), "is rule %d of %d; a frontend has at most %d rules: merge rules (src and method take lists) or move some to another frontend", MaxRules+1, len(rf.Rule), MaxRules)
	}
	for i := range rf.Rule {
		key := fmt.Sprintf("%s.rule.%d", p, i)
		f.Rules = append(f.Rules, v.rule(key, &rf.Rule[i], f.Mode))
	}
	if rf.RateLimit != nil {
		f.RateLimit = v.rateLimit(p+".rate_limit", rf.RateLimit, f.Mode, peers)
	}
}

// rule checks one [[frontend.NAME.rule]] at key ("frontend.web.rule.0").
func (v *validator) rule(key string, rr *rawRule, mode Mode) Rule {
	r := Rule{Line: v.loc.line(key), Action: rr.Action.val, TLS: rr.TLS}
	v.refused(key+".action", rr.Action.err)
	act := r.Action
	if act == "" && rr.Action.err == nil {
		v.errf(key+".action", "a rule needs an action: one of %s", strings.Join(quoteAll(namesOf(RuleActionNames)), ", "))
	}

	// Conditions.
	r.Src = v.prefixes(key+".src", rr.Src)
	r.NotSrc = v.prefixes(key+".not_src", rr.NotSrc)
	if rr.Host != nil {
		r.Host = *rr.Host
		if msg := hostPatternProblem(r.Host); msg != "" {
			v.errf(key+".host", "%q %s", r.Host, msg)
		}
	}
	if rr.PathPrefix != nil {
		r.PathPrefix = *rr.PathPrefix
		switch {
		case !strings.HasPrefix(r.PathPrefix, "/"):
			v.errf(key+".path_prefix", "%q does not start with \"/\"; write a path like \"/admin\" (remove the key to match every path)", r.PathPrefix)
		case strings.IndexFunc(r.PathPrefix, func(c rune) bool { return c <= ' ' || c == 0x7f }) >= 0:
			v.errf(key+".path_prefix", "%q holds spaces or control characters, which no request path has; percent-encode them as clients send them (\"%%20\")", r.PathPrefix)
		}
	}
	if rr.Method != nil && len(rr.Method) == 0 {
		v.errf(key+".method", "is empty, so no request would match; list methods like [\"POST\", \"PUT\"], or remove the key to match every method")
	}
	for _, m := range rr.Method {
		if !isToken(m) {
			v.errf(key+".method", "%q is not a method name; write names like \"GET\" or \"POST\"", m)
			continue
		}
		// Methods are case-sensitive on the wire and clients send them in
		// upper case: "get" means GET.
		r.Method = append(r.Method, strings.ToUpper(m))
	}
	if rr.Header != nil {
		name, val, has := strings.Cut(*rr.Header, ":")
		name = strings.TrimSpace(name)
		switch {
		case !isToken(name):
			v.errf(key+".header", "%q: %q is not a header name; write \"Name\" (present) or \"Name: value\" (exactly that value), like \"X-Debug: 1\"", *rr.Header, name)
		case has && badFieldValue(val):
			v.errf(key+".header", "%q: the value holds a CR, LF, NUL or other control character, which no header value has; remove it", *rr.Header)
		default:
			r.Header = textproto.CanonicalMIMEHeaderKey(name)
			r.HeaderVal = strings.TrimSpace(val) // a field value's surrounding blanks are not part of it
			r.HasHeaderVal = has
		}
	}

	// The action's own keys: set for another action they would be a silent
	// no-op, so they are refused.
	belongs := []struct {
		key     string
		set     bool
		actions []RuleAction
	}{
		{"status", rr.Status != nil, []RuleAction{ActionDeny, ActionTarpit}},
		{"tarpit", rr.Tarpit != nil, []RuleAction{ActionTarpit}},
		{"location", rr.Location != nil, []RuleAction{ActionRedirect}},
		{"scheme", rr.Scheme != nil, []RuleAction{ActionRedirect}},
		{"port", rr.Port != nil, []RuleAction{ActionRedirect}},
		{"code", rr.Code != nil, []RuleAction{ActionRedirect}},
		{"name", rr.Name != nil, []RuleAction{ActionSetHeader, ActionAddHeader, ActionDelHeader}},
		{"value", rr.Value != nil, []RuleAction{ActionSetHeader, ActionAddHeader}},
		{"response", rr.Response != nil, []RuleAction{ActionSetHeader, ActionAddHeader, ActionDelHeader}},
	}
	for _, b := range belongs {
		if b.set && act != "" && rr.Action.err == nil && !slices.Contains(b.actions, act) {
			v.errf(key+"."+b.key, "belongs to action = %s, not %q; remove it (or change the action)", strings.Join(quoteAll(namesOf(b.actions)), " or "), act)
		}
	}

	if mode != ModeHTTP {
		for _, c := range []struct {
			key string
			set bool
		}{{"host", rr.Host != nil}, {"path_prefix", rr.PathPrefix != nil}, {"method", rr.Method != nil}, {"header", rr.Header != nil}} {
			if c.set {
				v.errf(key+"."+c.key, "needs mode = \"http\"; a %s frontend's rules see only src, not_src and tls", mode)
			}
		}
		switch act {
		case ActionRedirect, ActionSetHeader, ActionAddHeader, ActionDelHeader:
			v.errf(key+".action", "%q needs mode = \"http\"; a %s frontend's rules take action \"deny\", \"allow\" or \"tarpit\" (on the connection)", act, mode)
		}
		if rr.Status != nil && (act == ActionDeny || act == ActionTarpit) {
			v.errf(key+".status", "a %s frontend closes a denied connection, there is no status to answer; remove it", mode)
		}
	}

	switch act {
	case ActionDeny, ActionTarpit:
		r.Status = DefaultDenyStatus
		if rr.Status != nil {
			r.Status = *rr.Status
			if r.Status < 400 || r.Status > 599 {
				v.errf(key+".status", "%d is not an error status; use 400..599 (403 by default; a redirect is action = \"redirect\")", r.Status)
			}
		}
		if act == ActionTarpit {
			r.Tarpit = v.tarpit(key+".tarpit", rr.Tarpit)
		}
	case ActionRedirect:
		v.redirect(key, rr, &r)
	case ActionSetHeader, ActionAddHeader, ActionDelHeader:
		v.headerAction(key, rr, &r)
	}
	return r
}

// tarpit checks a tarpit duration; left out, it is DefaultTarpit.
func (v *validator) tarpit(key string, s *string) time.Duration {
	if s == nil {
		return DefaultTarpit
	}
	d := v.dur(key, *s, DefaultTarpit)
	switch {
	case d == 0:
		v.errf(key, "is 0, which holds nothing; write a duration like \"5s\", or use action = \"deny\"")
	case d > MaxTarpit:
		v.errf(key, "%s is longer than %s: every held client keeps one of this node's connection slots; a few seconds slow a scanner as much", d, MaxTarpit)
	}
	return d
}

func (v *validator) redirect(key string, rr *rawRule, r *Rule) {
	r.Code = DefaultRedirectCode
	if rr.Code != nil {
		r.Code = *rr.Code
		if !slices.Contains([]int{301, 302, 303, 307, 308}, r.Code) {
			v.errf(key+".code", "%d is not a redirect code; use 301, 302, 303, 307 or 308 (302 by default)", r.Code)
		}
	}
	switch {
	case rr.Location == nil && rr.Scheme == nil:
		v.errf(key+".action", "a redirect needs location (an absolute URL like \"https://example.com/new\") or scheme (\"https\": the same host and path)")
	case rr.Location != nil && rr.Scheme != nil:
		v.errf(key+".scheme", "a redirect takes location or scheme, not both; keep location for a fixed URL, scheme to keep the request's host and path")
	case rr.Location != nil:
		r.Location = *rr.Location
		u, err := url.Parse(r.Location)
		switch {
		case badFieldValue(r.Location) || strings.ContainsAny(r.Location, " \t"):
			v.errf(key+".location", "%q holds spaces or control characters; percent-encode them (\"%%20\")", r.Location)
		case err != nil || u.Scheme == "" || u.Host == "":
			v.errf(key+".location", "%q is not an absolute URL; write it with scheme and host, like \"https://example.com/new\" (or use scheme = \"https\" to keep the host and path)", r.Location)
		}
	default:
		r.Scheme = *rr.Scheme
		if r.Scheme != "http" && r.Scheme != "https" {
			v.errf(key+".scheme", "%q is not \"http\" or \"https\"; for another target write location = an absolute URL", r.Scheme)
		}
	}
	if rr.Port != nil {
		r.Port = *rr.Port
		switch {
		case rr.Scheme == nil:
			v.errf(key+".port", "goes with scheme (the redirect keeps the host and sets this port); with location, write the port in the URL")
		case r.Port < 1 || r.Port > 65535:
			v.errf(key+".port", "%d is not a port; use 1..65535, or remove the key for the scheme's default port", r.Port)
		}
	}
}

func (v *validator) headerAction(key string, rr *rawRule, r *Rule) {
	if rr.Response != nil {
		r.Response = *rr.Response
	}
	if rr.Name == nil {
		v.errf(key+".name", "action %q needs name, the header, like name = \"X-Env\"", r.Action)
	} else {
		r.Name = *rr.Name
		switch {
		case !isToken(r.Name):
			v.errf(key+".name", "%q is not a header name; use letters, digits and \"-\", like \"X-Env\"", r.Name)
		default:
			for _, h := range reservedHeaders {
				if strings.EqualFold(r.Name, h) {
					v.errf(key+".name", "%s is written by sluice itself (framing, Host or forwarding) and cannot be edited; choose another header", h)
					break
				}
			}
		}
	}
	if r.Action == ActionDelHeader {
		return
	}
	if rr.Value == nil {
		v.errf(key+".value", "action %q needs value, like value = \"prod\" or \"{client_ip}\" (\"\" for an empty header)", r.Action)
		return
	}
	r.Value = *rr.Value
	switch {
	case badFieldValue(r.Value):
		v.errf(key+".value", "%q holds a CR, LF, NUL or other control character, which would split or break the header; remove it", r.Value)
	default:
		if msg := templateProblem(r.Value); msg != "" {
			v.errf(key+".value", "%q %s", r.Value, msg)
		}
	}
}

// prefixes parses a list of addresses or CIDR prefixes (a bare address is
// its /32 or /128), reporting each bad one.
func (v *validator) prefixes(key string, list []string) []netip.Prefix {
	if list != nil && len(list) == 0 {
		v.errf(key, "is an empty list; list networks like [\"192.0.2.0/24\", \"2001:db8::/32\"], or remove the key")
		return nil
	}
	var out []netip.Prefix
	for _, s := range list {
		pfx, err := parsePrefix(strings.TrimSpace(s))
		if err != nil {
			v.errf(key, "%q is not an address or CIDR prefix; write one like \"192.0.2.0/24\", \"2001:db8::/32\" or \"198.51.100.7\"", s)
			continue
		}
		out = append(out, pfx)
	}
	return out
}

// rateLimit checks [frontend.NAME.rate_limit] at key.
func (v *validator) rateLimit(key string, rr *rawRateLimit, mode Mode, peers Peers) *RateLimit {
	rl := &RateLimit{
		Requests:       intOr(rr.Requests, 0),
		Period:         v.dur(key+".period", rr.Period, DefaultRateLimitPeriod),
		Connections:    intOr(rr.Connections, 0),
		ConnectionRate: intOr(rr.ConnectionRate, 0),
		Action:         rr.Action.val,
		Shared:         rr.Shared,
		TableSize:      intOr(rr.TableSize, DefaultRateTableSize),
	}
	v.refused(key+".action", rr.Action.err)
	if rl.Action == "" {
		rl.Action = LimitDeny
	}
	v.count(key+".requests", rl.Requests, 0, MaxCount, "requests per period from one client; 0: no limit")
	v.count(key+".connections", rl.Connections, 0, MaxCount, "connections of one client at once; 0: no limit")
	v.count(key+".connection_rate", rl.ConnectionRate, 0, MaxCount, "new connections per period from one client; 0: no limit")
	v.count(key+".table_size", rl.TableSize, 1, MaxCount, "clients tracked; the least recently seen are evicted")
	if rl.Requests <= 0 && rl.Connections <= 0 && rl.ConnectionRate <= 0 {
		v.errf(key, "limits nothing; set requests (http), connections or connection_rate, or remove the table")
	}
	if rr.Requests != nil && mode != ModeHTTP {
		v.errf(key+".requests", "counts HTTP requests and needs mode = \"http\"; a %s frontend limits connections and connection_rate", mode)
	}
	if v.defined(key+".period") || rr.Period != "" {
		switch {
		case rl.Period == 0:
			v.errf(key+".period", "is 0; write the window of requests and connection_rate, like \"10s\"")
		case rl.Period > MaxRateLimitPeriod:
			v.errf(key+".period", "%s is longer than %s; scale the counts down to a shorter period (100 per 1h is about 3 per 2m)", rl.Period, MaxRateLimitPeriod)
		}
	}
	switch {
	case rl.Action == LimitTarpit:
		rl.Tarpit = v.tarpit(key+".tarpit", rr.Tarpit)
	case rr.Tarpit != nil && rr.Action.err == nil:
		v.errf(key+".tarpit", "belongs to action = \"tarpit\" (this rate_limit's action is %q); remove it, or set action = \"tarpit\"", rl.Action)
	}
	if rl.Shared && !peers.Enabled() {
		v.errf(key+".shared", "sums the counters with the other nodes of [peers], but this file has no [peers] section; add [peers] with bind, peers and secret_file (see docs/reference.md), or remove shared")
	}
	return rl
}

// hostPatternProblem says what is wrong with a host condition, or "".
func hostPatternProblem(h string) string {
	name := strings.TrimPrefix(h, "*.")
	switch {
	case h == "" || h == "*" || name == "":
		return "matches no host; write a name like \"example.com\" or \"*.example.com\", or remove the key to match any host"
	case strings.Contains(name, "*"):
		return "has a \"*\" elsewhere than a leading \"*.\"; write \"*.example.com\" for every subdomain"
	case strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]"):
		return "" // an IPv6 literal, as clients send it in Host
	case strings.Contains(name, ":"):
		return "has a port; write the host alone (the port of the Host header is ignored)"
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_') {
			return fmt.Sprintf("holds %q, which no host name has; write a name like \"example.com\" or \"*.example.com\"", c)
		}
	}
	return ""
}

// templateProblem says what is wrong with a header value template, or "".
func templateProblem(s string) string {
	for i := 0; i < len(s); {
		j := strings.IndexByte(s[i:], '{')
		if j < 0 {
			return ""
		}
		j += i
		k := strings.IndexByte(s[j:], '}')
		if k < 0 {
			return fmt.Sprintf("has a \"{\" without its \"}\"; the variables are %s", templateList())
		}
		if name := s[j+1 : j+k]; !slices.Contains(TemplateVars, name) {
			return fmt.Sprintf("uses {%s}, which is not a variable; the variables are %s", name, templateList())
		}
		i = j + k + 1
	}
	return ""
}

func templateList() string {
	out := make([]string, len(TemplateVars))
	for i, n := range TemplateVars {
		out[i] = "{" + n + "}"
	}
	return strings.Join(out, " ")
}

// badFieldValue reports a character no header value may hold: control
// characters other than tab (CR, LF and NUL would split the head).
func badFieldValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' && c != '\t' || c == 0x7f {
			return true
		}
	}
	return false
}
