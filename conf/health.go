package conf

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// Health defaults.
const (
	DefaultCheckInterval = 2 * time.Second
	DefaultCheckTimeout  = time.Second
	DefaultRise          = 2
	DefaultFall          = 3
	// MaxRiseFall bounds rise and fall: more checks than this (over 16
	// minutes at a 1s interval) is a typo, and 2^31 would overflow the
	// health counter's arithmetic.
	MaxRiseFall           = 1000
	DefaultObserveErrors  = 10
	DefaultExpect         = "200-399"
	DefaultCheckMethod    = "GET"
	DefaultCheckQueryName = "."
	DefaultCheckQueryType = "A"
	minCheckInterval      = 10 * time.Millisecond
)

// Health describes the active checks of a backend's servers and their
// passive observation. Every field is defaulted and validated.
type Health struct {
	Check         CheckKind
	Method        string // http
	Path          string // http
	Host          string // http Host header; "" = the server's address
	Expect        string // http status codes as written ("200-399", "200,204")
	ExpectStatus  StatusSet
	ExpectBody    string // http: the body must contain it; udp: the reply must
	QueryName     string // dns, fully qualified
	QueryType     uint16 // dns, a miekg/dns type (dns.TypeA...)
	AgentPort     int    // agent; 0 = the check port
	CheckPort     int    // 0 = the server's port
	Send          string // udp payload
	Interval      time.Duration
	IntervalDown  time.Duration // between checks of a server that is down
	Timeout       time.Duration
	Rise          int
	Fall          int
	SlowStart     time.Duration // 0: a returning server takes its full share at once
	Observe       bool
	ObserveErrors int
	InitState     InitState
}

// StatusSet is a set of HTTP status codes 0..1023. It is an array, so a
// Health stays comparable.
type StatusSet [16]uint64

// Has reports whether code is in the set.
func (s *StatusSet) Has(code int) bool {
	return code >= 0 && code < 1024 && s[code>>6]&(1<<(code&63)) != 0
}

func (s *StatusSet) add(lo, hi int) {
	for c := lo; c <= hi; c++ {
		s[c>>6] |= 1 << (c & 63)
	}
}

// ParseStatusSet reads "200-399", "200,204" or a mix ("200-299,404").
func ParseStatusSet(spec string) (StatusSet, error) {
	var s StatusSet
	if strings.TrimSpace(spec) == "" {
		return s, fmt.Errorf("empty")
	}
	for _, part := range strings.Split(spec, ",") {
		part = strings.TrimSpace(part)
		lo, hi, isRange := strings.Cut(part, "-")
		a, err1 := strconv.Atoi(strings.TrimSpace(lo))
		b := a
		var err2 error
		if isRange {
			b, err2 = strconv.Atoi(strings.TrimSpace(hi))
		}
		if err1 != nil || err2 != nil || a < 100 || b > 599 || a > b {
			return s, fmt.Errorf("%q is not a status code 100..599 or a range like \"200-399\"", part)
		}
		s.add(a, b)
	}
	return s, nil
}

type rawHealth struct {
	Check         rawCheck     `toml:"check"`
	Method        string       `toml:"method"`
	Path          string       `toml:"path"`
	Host          string       `toml:"host"`
	Expect        string       `toml:"expect"`
	ExpectBody    string       `toml:"expect_body"`
	QueryName     string       `toml:"query_name"`
	QueryType     string       `toml:"query_type"`
	AgentPort     *int         `toml:"agent_port"`
	CheckPort     *int         `toml:"check_port"`
	Send          string       `toml:"send"`
	Interval      string       `toml:"interval"`
	IntervalDown  string       `toml:"interval_down"`
	Timeout       string       `toml:"timeout"`
	Rise          *int         `toml:"rise"`
	Fall          *int         `toml:"fall"`
	SlowStart     string       `toml:"slowstart"`
	Observe       bool         `toml:"observe"`
	ObserveErrors *int         `toml:"observe_errors"`
	InitState     rawInitState `toml:"init_state"`
}

// health defaults and validates a backend's [health] table; hp is its key
// ("backend.app.health").
func (v *validator) health(hp string, h rawHealth) Health {
	out := Health{
		Check:         h.Check.val,
		Method:        h.Method,
		Path:          h.Path,
		Host:          h.Host,
		Expect:        h.Expect,
		ExpectBody:    h.ExpectBody,
		QueryName:     h.QueryName,
		AgentPort:     intOr(h.AgentPort, 0),
		CheckPort:     intOr(h.CheckPort, 0),
		Send:          h.Send,
		Interval:      v.dur(hp+".interval", h.Interval, DefaultCheckInterval),
		Timeout:       v.dur(hp+".timeout", h.Timeout, DefaultCheckTimeout),
		Rise:          intOr(h.Rise, DefaultRise),
		Fall:          intOr(h.Fall, DefaultFall),
		SlowStart:     v.dur(hp+".slowstart", h.SlowStart, 0),
		Observe:       h.Observe,
		ObserveErrors: intOr(h.ObserveErrors, DefaultObserveErrors),
		InitState:     h.InitState.val,
	}
	out.IntervalDown = out.Interval
	if d := v.dur(hp+".interval_down", h.IntervalDown, -1); d >= 0 {
		out.IntervalDown = d
		if d < minCheckInterval {
			v.errf(hp+".interval_down", "must be at least %v, got %v", minCheckInterval, d)
		}
	}
	if out.Check == "" {
		out.Check = CheckNone
	}
	v.refused(hp+".check", h.Check.err)

	// Keys that mean something for some kinds only: set for another kind
	// they are a mistake worth reporting, not a silent no-op.
	only := []struct {
		key   string
		set   bool
		kinds []CheckKind
	}{
		{"method", h.Method != "", []CheckKind{CheckHTTP}},
		{"path", h.Path != "", []CheckKind{CheckHTTP}},
		{"host", h.Host != "", []CheckKind{CheckHTTP}},
		{"expect", h.Expect != "", []CheckKind{CheckHTTP}},
		{"expect_body", h.ExpectBody != "", []CheckKind{CheckHTTP, CheckUDP}},
		{"query_name", h.QueryName != "", []CheckKind{CheckDNS}},
		{"query_type", h.QueryType != "", []CheckKind{CheckDNS}},
		{"agent_port", h.AgentPort != nil, []CheckKind{CheckAgent}},
		{"send", h.Send != "", []CheckKind{CheckUDP}},
	}
	for _, o := range only {
		if o.set && !contains(o.kinds, out.Check) {
			v.errf(hp+"."+o.key, "only applies to check = %s, but check is %q", strings.Join(quoteAll(namesOf(o.kinds)), " or "), out.Check)
		}
	}

	if out.Method == "" {
		out.Method = DefaultCheckMethod
	} else if !isToken(out.Method) {
		v.errf(hp+".method", "%q is not an HTTP method like \"GET\" or \"HEAD\"", out.Method)
	}
	if out.Path == "" {
		out.Path = "/"
	} else if !strings.HasPrefix(out.Path, "/") || strings.ContainsAny(out.Path, " \r\n\t") {
		v.errf(hp+".path", "%q must start with \"/\" and hold no spaces, like \"/healthz\"", out.Path)
	}
	if strings.ContainsAny(out.Host, " \r\n\t") {
		v.errf(hp+".host", "%q is not a host name", out.Host)
	}
	if out.Expect == "" {
		out.Expect = DefaultExpect
	}
	if set, err := ParseStatusSet(out.Expect); err != nil {
		v.errf(hp+".expect", "%v; write status codes like \"200-399\" or \"200,204\"", err)
	} else {
		out.ExpectStatus = set
	}
	if out.QueryName == "" {
		out.QueryName = DefaultCheckQueryName
	}
	if _, ok := dns.IsDomainName(out.QueryName); !ok {
		v.errf(hp+".query_name", "%q is not a domain name", out.QueryName)
	}
	out.QueryName = dns.Fqdn(out.QueryName)
	qt := strings.ToUpper(h.QueryType)
	if qt == "" {
		qt = DefaultCheckQueryType
	}
	if t, ok := dns.StringToType[qt]; ok {
		out.QueryType = t
	} else {
		v.errf(hp+".query_type", "%q is not a DNS record type like \"A\", \"AAAA\", \"SRV\" or \"SOA\"", h.QueryType)
	}
	if h.AgentPort != nil && (out.AgentPort < 1 || out.AgentPort > 65535) {
		v.errf(hp+".agent_port", "must be a port 1..65535, got %d", out.AgentPort)
	}
	if h.CheckPort != nil && (out.CheckPort < 1 || out.CheckPort > 65535) {
		v.errf(hp+".check_port", "must be a port 1..65535, got %d", out.CheckPort)
	}
	if out.Interval < minCheckInterval {
		v.errf(hp+".interval", "must be at least %v, got %v", minCheckInterval, out.Interval)
	}
	if out.Timeout <= 0 {
		v.errf(hp+".timeout", "must be more than 0, like \"1s\"")
	}
	for _, c := range []struct {
		key string
		n   int
	}{{"rise", out.Rise}, {"fall", out.Fall}} {
		switch {
		case c.n < 1:
			v.errf(hp+"."+c.key, "must be at least 1, got %d", c.n)
		case c.n > MaxRiseFall:
			v.errf(hp+"."+c.key, "must be at most %d checks in a row, got %d", MaxRiseFall, c.n)
		}
	}
	if out.ObserveErrors < 1 {
		v.errf(hp+".observe_errors", "must be at least 1, got %d", out.ObserveErrors)
	}
	if h.ObserveErrors != nil && !out.Observe {
		v.errf(hp+".observe_errors", "has no effect without observe = true")
	}
	if out.InitState == "" {
		out.InitState = InitUp
	}
	v.refused(hp+".init_state", h.InitState.err)
	if out.Check == CheckNone {
		// Without an active check nothing would ever bring a server back.
		if out.Observe {
			v.errf(hp+".observe", "needs an active check to bring a server back up; set check (\"tcp\", \"http\"...)")
		}
		if out.InitState == InitDown {
			v.errf(hp+".init_state", "\"down\" needs an active check to bring the servers up; set check (\"tcp\", \"http\"...)")
		}
	}
	return out
}

func contains[T comparable](list []T, s T) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// isToken reports whether s is an HTTP token (a method name).
func isToken(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return s != ""
}
