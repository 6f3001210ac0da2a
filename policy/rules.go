package policy

import (
	"bytes"
	"math/bits"
	"net/netip"
	"strconv"
	"strings"

	"sluice/conf"
)

// Rules are a frontend's compiled rules.
type Rules struct {
	list  []rule
	edits []Edit // by rule index; Name "" for rules that edit no header
	// Masks of the header rules, by side: those that drop a field of
	// their name (del_header, set_header) and those that write one
	// (set_header, add_header).
	dropReq, dropResp uint64
	addReq, addResp   uint64
}

type rule struct {
	conf.Rule
	hostSuffix string // "*.example.com" → ".example.com"
}

// Compile prepares rules for Eval; nil for none. Rules are validated by
// package conf (at most MaxRules; header names and values clean).
func Compile(rs []conf.Rule) *Rules {
	if len(rs) == 0 {
		return nil
	}
	if len(rs) > MaxRules {
		rs = rs[:MaxRules] // conf refuses more; never a silent wrap of the masks
	}
	r := &Rules{list: make([]rule, len(rs)), edits: make([]Edit, len(rs))}
	for i, c := range rs {
		r.list[i] = rule{Rule: c}
		// Compared without the trailing dot of an absolute name, as
		// the request's host (matchHost).
		r.list[i].Host = strings.TrimSuffix(c.Host, ".")
		if strings.HasPrefix(c.Host, "*.") {
			r.list[i].hostSuffix = r.list[i].Host[1:]
		}
		for j := range r.list[i].Src {
			r.list[i].Src[j] = unmapPrefix(r.list[i].Src[j])
		}
		for j := range r.list[i].NotSrc {
			r.list[i].NotSrc[j] = unmapPrefix(r.list[i].NotSrc[j])
		}
		if !c.Action.IsHeader() {
			continue
		}
		r.edits[i] = Edit{Name: c.Name, Lower: strings.ToLower(c.Name), value: parseTemplate(c.Value)}
		bit := uint64(1) << i
		drop, add := &r.dropReq, &r.addReq
		if c.Response {
			drop, add = &r.dropResp, &r.addResp
		}
		if c.Action != conf.ActionAddHeader {
			*drop |= bit
		}
		if c.Action != conf.ActionDelHeader {
			*add |= bit
		}
	}
	return r
}

// unmapPrefix writes an IPv4-mapped IPv6 prefix as its IPv4 one, as
// clients' addresses are compared unmapped.
func unmapPrefix(p netip.Prefix) netip.Prefix {
	if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
		return netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p
}

// Eval runs the rules over req in order; r may be nil.
func (r *Rules) Eval(req *Request) Verdict {
	v := Verdict{Rule: -1}
	if r == nil {
		return v
	}
	client := req.Client.Unmap()
	for i := range r.list {
		ru := &r.list[i]
		if !ru.matches(req, client) {
			continue
		}
		switch ru.Action {
		case conf.ActionAllow:
			v.Rule = i
			return v
		case conf.ActionDeny:
			v.Outcome, v.Status, v.Rule = Deny, ru.Status, i
			return v
		case conf.ActionTarpit:
			v.Outcome, v.Status, v.Hold, v.Rule = Tarpit, ru.Status, ru.Tarpit, i
			return v
		case conf.ActionRedirect:
			if ru.Scheme != "" && !validAuthority(req.Host) {
				// Nowhere to redirect to: a request without Host
				// (HTTP/1.0) keeping "its" host has none, and a Host
				// that is not one would point Location elsewhere.
				v.Outcome, v.Status, v.Rule = Deny, 400, i
				return v
			}
			v.Outcome, v.Status, v.Rule = Redirect, ru.Code, i
			return v
		default: // header actions
			v.Edits |= 1 << i
		}
	}
	return v
}

func (ru *rule) matches(req *Request, client netip.Addr) bool {
	if len(ru.Src) > 0 && !inAny(ru.Src, client) {
		return false
	}
	if len(ru.NotSrc) > 0 && inAny(ru.NotSrc, client) {
		return false
	}
	if ru.TLS != nil && *ru.TLS != req.TLS {
		return false
	}
	if ru.Host != "" && !ru.hostMatches(req.Host) {
		return false
	}
	if ru.PathPrefix != "" && !bytes.HasPrefix(req.Path, []byte(ru.PathPrefix)) {
		return false
	}
	if len(ru.Method) > 0 {
		ok := false
		for _, m := range ru.Method {
			if string(req.Method) == m {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	if ru.Header != "" {
		if req.Headers == nil {
			return false
		}
		if ru.HasHeaderVal {
			if !headerHas(req.Headers, ru.Header, ru.HeaderVal) {
				return false
			}
		} else if req.Headers.Get(ru.Header) == nil {
			return false
		}
	}
	return true
}

func inAny(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// hostMatches compares a Host header (port ignored, case-insensitive) with
// the rule's host, which may be "*.example.com" (any subdomain, not the
// domain itself), as routes do.
func (ru *rule) hostMatches(host []byte) bool {
	h := matchHost(host)
	if ru.hostSuffix != "" {
		n := len(ru.hostSuffix)
		return len(h) > n && strings.EqualFold(string(h[len(h)-n:]), ru.hostSuffix)
	}
	return strings.EqualFold(string(h), ru.Host)
}

// hostOnly strips the port of a Host value ("[::1]:80" → "[::1]").
func hostOnly(h []byte) []byte {
	if i := bytes.LastIndexByte(h, ':'); i >= 0 && !bytes.HasSuffix(h, []byte("]")) {
		return h[:i]
	}
	return h
}

// Drops reports whether a header named name (any case) of the request
// (response false) or response (true) is to be left out because a rule in
// edits deletes or sets it.
func (r *Rules) Drops(edits uint64, response bool, name []byte) bool {
	if r == nil {
		return false
	}
	m := edits & r.dropReq
	if response {
		m = edits & r.dropResp
	}
	for ; m != 0; m &= m - 1 {
		if equalFold(r.edits[bits.TrailingZeros64(m)].Lower, name) {
			return true
		}
	}
	return false
}

// Adds returns the rules of edits that write a header (set_header,
// add_header) on the given side, in rule order: iterate with
// bits.TrailingZeros64 and Edit.
func (r *Rules) Adds(edits uint64, response bool) uint64 {
	if r == nil {
		return 0
	}
	if response {
		return edits & r.addResp
	}
	return edits & r.addReq
}

// Edit returns rule i's header edit.
func (r *Rules) Edit(i int) *Edit { return &r.edits[i] }

// equalFold compares lower, in lower case, with b in any case (ASCII).
func equalFold(lower string, b []byte) bool {
	if len(lower) != len(b) {
		return false
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

// Edit is a header a rule writes.
type Edit struct {
	Name  string // as configured
	Lower string // lower case, for HTTP/2
	value []segment
}

type segment struct {
	lit string
	v   variable
}

type variable uint8

const (
	literal variable = iota
	varClientIP
	varClientPort
	varFrontend
	varSNI
	varRequestID
)

// Variables are the names a header value may use, as "{name}".
var Variables = map[string]variable{
	"client_ip":   varClientIP,
	"client_port": varClientPort,
	"frontend":    varFrontend,
	"tls_sni":     varSNI,
	"request_id":  varRequestID,
}

// parseTemplate splits a value into literals and variables; a "{...}"
// that names no variable stays literal (conf refuses it before).
func parseTemplate(s string) []segment {
	var out []segment
	for s != "" {
		i := strings.IndexByte(s, '{')
		if i < 0 {
			break
		}
		j := strings.IndexByte(s[i:], '}')
		if j < 0 {
			break
		}
		v, ok := Variables[s[i+1:i+j]]
		if !ok {
			out = append(out, segment{lit: s[:i+j+1]})
			s = s[i+j+1:]
			continue
		}
		if i > 0 {
			out = append(out, segment{lit: s[:i]})
		}
		out = append(out, segment{v: v})
		s = s[i+j+1:]
	}
	if s != "" {
		out = append(out, segment{lit: s})
	}
	return out
}

// AppendValue appends the edit's value with its template variables
// filled from v. Characters that could split or end a header (control
// characters) never come out of it.
func (e *Edit) AppendValue(b []byte, v *Vars) []byte {
	for _, s := range e.value {
		switch s.v {
		case literal:
			b = append(b, s.lit...)
		case varClientIP:
			b = v.Client.Addr().Unmap().AppendTo(b)
		case varClientPort:
			b = strconv.AppendUint(b, uint64(v.Client.Port()), 10)
		case varFrontend:
			b = append(b, v.Frontend...)
		case varSNI:
			b = appendClean(b, v.SNI)
		case varRequestID:
			b = append(b, v.ConnID...)
			b = append(b, '-')
			b = strconv.AppendUint(b, v.Seq, 10)
		}
	}
	return b
}

// appendClean appends s without control characters: a value that comes
// from the client (the TLS server name) must not split a header.
func appendClean(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c > ' ' && c < 0x7f {
			b = append(b, c)
		}
	}
	return b
}

// AppendLocation appends the Location of a Redirect verdict for req: the
// rule's location as written, or the request's host (its port dropped) and
// path under the rule's scheme, with its port when one is set and not the
// scheme's default.
func (r *Rules) AppendLocation(b []byte, v Verdict, req *Request) []byte {
	ru := &r.list[v.Rule]
	if ru.Location != "" {
		return append(b, ru.Location...)
	}
	b = append(b, ru.Scheme...)
	b = append(b, "://"...)
	b = appendCleanBytes(b, hostOnly(req.Host))
	if ru.Port != 0 && !(ru.Port == 443 && ru.Scheme == "https" || ru.Port == 80 && ru.Scheme == "http") {
		b = append(b, ':')
		b = strconv.AppendInt(b, int64(ru.Port), 10)
	}
	if len(req.Path) == 0 || req.Path[0] != '/' {
		b = append(b, '/')
	}
	return appendCleanBytes(b, req.Path)
}

func appendCleanBytes(b, s []byte) []byte {
	for _, c := range s {
		if c > ' ' && c < 0x7f {
			b = append(b, c)
		}
	}
	return b
}

// Vars are the values a header value template may use.
type Vars struct {
	Client   netip.AddrPort // {client_ip} {client_port}
	Frontend string         // {frontend}
	SNI      string         // {tls_sni}
	ConnID   string         // {request_id} is ConnID "-" Seq
	Seq      uint64         //   (the request's number on its connection, or its HTTP/2 stream id)
}
