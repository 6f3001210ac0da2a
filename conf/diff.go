package conf

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
)

// Change is one difference between a running configuration and the one a
// reload would load (`sluice reload --diff`).
type Change struct {
	Op      string // "+" added, "-" removed, "~" changed
	Section string // "global", "stats", "peers", "frontend NAME", "backend NAME"
	// Item is what changed in the section: a key ("timeout_client",
	// "health.interval"), "bind ADDR", "server NAME", "server NAME weight",
	// "route ..."; "" for the whole section.
	Item string
	// Old and New are the values of a "~"; New details a "+".
	Old, New string
}

// String renders c on one line:
//
//   - frontend api (mode http, bind [127.0.0.1:8080])
//   - frontend web: bind 127.0.0.1:80
//     ~ backend app: server s1 weight 1 -> 3
func (c Change) String() string {
	s := c.Op + " " + c.Section
	if c.Item != "" {
		s += ": " + c.Item
	}
	switch {
	case c.Op == "~" && (c.Old != "" || c.New != ""):
		s += " " + c.Old + " -> " + c.New
	case c.New != "":
		s += " (" + c.New + ")"
	}
	return s
}

// Diff lists what changes from old to cur, section by section in a fixed
// order (global, stats, peers, then frontends and backends by name), so
// the same pair of files always gives the same text. Keys are named as in
// the file; values that [defaults] or a default gives count as set, since
// they are what runs.
func Diff(old, cur *Config) []Change {
	var d differ
	d.fields("global", "", reflect.ValueOf(old.Global), reflect.ValueOf(cur.Global), reflect.TypeFor[rawGlobal]())
	d.fields("stats", "", reflect.ValueOf(old.Stats), reflect.ValueOf(cur.Stats), reflect.TypeFor[rawStats]())
	if old.Stats.AdminToken != cur.Stats.AdminToken && old.Stats.AdminTokenFile == cur.Stats.AdminTokenFile {
		d.add("~", "stats", "admin token (the contents of admin_token_file)", "", "")
	}
	d.fields("peers", "", reflect.ValueOf(old.Peers), reflect.ValueOf(cur.Peers), reflect.TypeFor[rawPeers]())
	d.bgp(old.BGP, cur.BGP)
	for _, name := range unionNames(old.Frontends, cur.Frontends, func(f *Frontend) string { return f.Name }) {
		o, n := old.Frontend(name), cur.Frontend(name)
		sec := "frontend " + name
		switch {
		case o == nil:
			d.add("+", sec, "", "", fmt.Sprintf("mode %s, bind %s", n.Mode, render(reflect.ValueOf(n.Bind))))
		case n == nil:
			d.add("-", sec, "", "", "")
		default:
			d.frontend(sec, o, n)
		}
	}
	for _, name := range unionNames(old.Backends, cur.Backends, func(b *Backend) string { return b.Name }) {
		o, n := old.Backend(name), cur.Backend(name)
		sec := "backend " + name
		switch {
		case o == nil:
			what := fmt.Sprintf("%d servers", len(n.Servers))
			if n.DNS != nil {
				what = "servers from DNS " + n.DNS.Name
			}
			d.add("+", sec, "", "", fmt.Sprintf("mode %s, balance %s, %s", n.Mode, n.Balance, what))
		case n == nil:
			d.add("-", sec, "", "", "")
		default:
			d.backend(sec, o, n)
		}
	}
	return d.out
}

type differ struct{ out []Change }

func (d *differ) add(op, sec, item, old, cur string) {
	d.out = append(d.out, Change{Op: op, Section: sec, Item: item, Old: old, New: cur})
}

// diffSkip are the fields Diff compares in a way of its own.
var diffSkip = map[string]bool{"Frontend.Bind": true, "Frontend.TLS": true, "Server.Name": true}

// fields compares the fields of two structs of one type that stand for
// keys: those with a field of the same name in raw, the struct the file
// decodes into, whose toml tag is the key's name. The others are derived
// (MaxConnSet, ExpectStatus), or compared by the caller.
func (d *differ) fields(sec, prefix string, o, n reflect.Value, raw reflect.Type) {
	t := o.Type()
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		if sf.Anonymous && sf.Type.Kind() == reflect.Struct {
			d.fields(sec, prefix, o.Field(i), n.Field(i), raw) // Global.Logging: the raw struct inlines its keys too
			continue
		}
		if diffSkip[t.Name()+"."+sf.Name] {
			continue
		}
		key, rt, ok := rawKey(raw, sf.Name)
		if !ok {
			continue
		}
		ov, nv := o.Field(i), n.Field(i)
		ft := sf.Type
		switch {
		case ft.Kind() == reflect.Struct && ft.PkgPath() == t.PkgPath() && rt.Kind() == reflect.Struct:
			d.fields(sec, prefix+key+".", ov, nv, rt) // a table: [backend.NAME.health]
		case ft.Kind() == reflect.Pointer && ft.Elem().Kind() == reflect.Struct:
			switch {
			case ov.IsNil() && nv.IsNil():
			case ov.IsNil():
				d.add("+", sec, prefix+key, "", "")
			case nv.IsNil():
				d.add("-", sec, prefix+key, "", "")
			default:
				d.fields(sec, prefix+key+".", ov.Elem(), nv.Elem(), derefType(rt))
			}
		default:
			if !reflect.DeepEqual(ov.Interface(), nv.Interface()) {
				d.add("~", sec, prefix+key, render(ov), render(nv))
			}
		}
	}
}

// rawKey is the key of the field called name in raw (a struct, or a
// pointer or slice of one), and the field's type.
func rawKey(raw reflect.Type, name string) (string, reflect.Type, bool) {
	raw = derefType(raw)
	rf, ok := raw.FieldByName(name)
	if !ok {
		return "", nil, false
	}
	key, _, _ := strings.Cut(rf.Tag.Get("toml"), ",")
	if key == "" || key == "-" {
		return "", nil, false
	}
	return key, derefType(rf.Type), true
}

func derefType(t reflect.Type) reflect.Type {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
		t = t.Elem()
	}
	return t
}

func (d *differ) frontend(sec string, o, n *Frontend) {
	d.set(sec, "bind ", o.Bind, n.Bind)
	d.fields(sec, "", reflect.ValueOf(*o), reflect.ValueOf(*n), reflect.TypeFor[rawFrontend]())
	d.set(sec, "tls ", tlsItems(o.TLS), tlsItems(n.TLS))
	or, nr := routeItems(o.Routes), routeItems(n.Routes)
	d.set(sec, "route ", or, nr)
	if !reflect.DeepEqual(or, nr) && sameMultiset(or, nr) {
		d.add("~", sec, "route order (the first route that matches wins)", strings.Join(or, "; "), strings.Join(nr, "; "))
	}
	ol, nl := ruleItems(o.Rules), ruleItems(n.Rules)
	d.set(sec, "rule ", ol, nl)
	if !reflect.DeepEqual(ol, nl) && sameMultiset(ol, nl) {
		d.add("~", sec, "rule order (rules run in order; the first that ends the request decides)", strings.Join(ol, "; "), strings.Join(nl, "; "))
	}
	for _, code := range unionKeys(o.ErrorPages, n.ErrorPages) {
		key := "error_page_" + strconv.Itoa(code)
		op, oin := o.ErrorPages[code]
		np, nin := n.ErrorPages[code]
		switch {
		case !oin:
			d.add("+", sec, key, "", np)
		case !nin:
			d.add("-", sec, key, "", "")
		case op != np:
			d.add("~", sec, key, strconv.Quote(op), strconv.Quote(np))
		case !bytes.Equal(o.ErrorBodies[code], n.ErrorBodies[code]):
			// The same path, new content: a reload reads it again.
			d.add("~", sec, key+" content", "", "the file changed")
		}
	}
	if oc, nc := o.ClientAuth, n.ClientAuth; oc != nil && nc != nil && oc.CAFile == nc.CAFile && oc.CRLFile == nc.CRLFile && !sameClientAuthFiles(oc, nc) {
		d.add("~", sec, "client_auth content", "", "the CA or CRL file changed")
	}
	for _, nt := range n.TLS {
		for _, ot := range o.TLS {
			if ot.Cert == nt.Cert && ot.Key == nt.Key && !samePair(ot.Pair, nt.Pair) {
				d.add("~", sec, "tls cert "+nt.Cert+" content", "", "the certificate or key file changed")
			}
			if ot.Cert == nt.Cert && ot.OCSP == nt.OCSP && nt.OCSP != "" && !bytes.Equal(ot.OCSPStaple, nt.OCSPStaple) {
				d.add("~", sec, "tls ocsp "+nt.OCSP+" content", "", "the OCSP response file changed")
			}
		}
	}
}

// samePair reports whether two loaded key pairs hold the same certificate
// chain and key.
func samePair(a, b *tls.Certificate) bool {
	if a == nil || b == nil {
		return a == b
	}
	if len(a.Certificate) != len(b.Certificate) {
		return false
	}
	for i := range a.Certificate {
		if !bytes.Equal(a.Certificate[i], b.Certificate[i]) {
			return false
		}
	}
	return reflect.DeepEqual(a.PrivateKey, b.PrivateKey)
}

func (d *differ) backend(sec string, o, n *Backend) {
	for _, name := range unionNames(serverPtrs(o.Servers), serverPtrs(n.Servers), func(s *Server) string { return s.Name }) {
		osrv, nsrv := findServer(o.Servers, name), findServer(n.Servers, name)
		item := "server " + name
		switch {
		case osrv == nil:
			detail := fmt.Sprintf("address %s, weight %d", nsrv.Address, nsrv.Weight)
			if nsrv.Backup {
				detail += ", backup"
			}
			d.add("+", sec, item, "", detail)
		case nsrv == nil:
			d.add("-", sec, item, "", "")
		default:
			d.fields(sec, item+" ", reflect.ValueOf(*osrv), reflect.ValueOf(*nsrv), reflect.TypeFor[rawServer]())
		}
	}
	d.fields(sec, "", reflect.ValueOf(*o), reflect.ValueOf(*n), reflect.TypeFor[rawBackend]())
}

// set reports the items of o missing from n as removed and those of n
// missing from o as added, each as often as it is missing.
func (d *differ) set(sec, prefix string, o, n []string) {
	count := map[string]int{}
	for _, s := range o {
		count[s]++
	}
	for _, s := range n {
		count[s]--
	}
	for _, s := range o {
		if count[s] > 0 {
			count[s]--
			d.add("-", sec, prefix+s, "", "")
		}
	}
	for _, s := range n {
		if count[s] < 0 {
			count[s]++
			d.add("+", sec, prefix+s, "", "")
		}
	}
}

func sameMultiset(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	x, y := append([]string(nil), a...), append([]string(nil), b...)
	sort.Strings(x)
	sort.Strings(y)
	return reflect.DeepEqual(x, y)
}

func tlsItems(ts []TLS) []string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = fmt.Sprintf("cert %s key %s", t.Cert, t.Key)
		if t.OCSP != "" {
			out[i] += " ocsp " + t.OCSP
		}
		if t.OCSPFetch {
			out[i] += " ocsp_fetch"
		}
	}
	return out
}

// routeItems renders each route as its conditions and its backend, in the
// file's order.
func routeItems(rs []Route) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		var c []string
		if r.Host != "" {
			c = append(c, "host "+strconv.Quote(r.Host))
		}
		if r.PathPrefix != "" {
			c = append(c, "path_prefix "+strconv.Quote(r.PathPrefix))
		}
		for _, h := range sortedKeys(r.Header) {
			c = append(c, "header."+h+" "+strconv.Quote(r.Header[h]))
		}
		if len(c) == 0 {
			c = append(c, "any request")
		}
		out[i] = strings.Join(c, " ") + " -> " + r.Backend
	}
	return out
}

// ruleItems renders each rule as its conditions and its action with the
// action's keys, in the file's order; the line is left out, so moving a
// rule without changing it is only an order change.
func ruleItems(rs []Rule) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		var c []string
		add := func(key string, v any) { c = append(c, key+" "+render(reflect.ValueOf(v))) }
		if len(r.Src) > 0 {
			add("src", r.Src)
		}
		if len(r.NotSrc) > 0 {
			add("not_src", r.NotSrc)
		}
		if r.Host != "" {
			add("host", r.Host)
		}
		if r.PathPrefix != "" {
			add("path_prefix", r.PathPrefix)
		}
		if len(r.Method) > 0 {
			add("method", r.Method)
		}
		if r.Header != "" {
			h := r.Header
			if r.HasHeaderVal {
				h += ": " + r.HeaderVal
			}
			add("header", h)
		}
		if r.TLS != nil {
			add("tls", *r.TLS)
		}
		if len(c) == 0 {
			c = append(c, "any")
		}
		a := []string{string(r.Action)}
		switch r.Action {
		case ActionDeny:
			a = append(a, fmt.Sprint(r.Status))
		case ActionTarpit:
			a = append(a, r.Tarpit.String(), fmt.Sprint(r.Status))
		case ActionRedirect:
			if r.Location != "" {
				a = append(a, strconv.Quote(r.Location))
			} else {
				a = append(a, "scheme "+r.Scheme)
				if r.Port != 0 {
					a = append(a, "port "+strconv.Itoa(r.Port))
				}
			}
			a = append(a, strconv.Itoa(r.Code))
		case ActionSetHeader, ActionAddHeader, ActionDelHeader:
			if r.Response {
				a = append(a, "response")
			}
			a = append(a, r.Name)
			if r.Action != ActionDelHeader {
				a = append(a, strconv.Quote(r.Value))
			}
		}
		out[i] = strings.Join(c, " ") + " -> " + strings.Join(a, " ")
	}
	return out
}

func serverPtrs(s []Server) []*Server {
	out := make([]*Server, len(s))
	for i := range s {
		out[i] = &s[i]
	}
	return out
}

func findServer(s []Server, name string) *Server {
	for i := range s {
		if s[i].Name == name {
			return &s[i]
		}
	}
	return nil
}

// unionNames is the names of a and b: those of a in their order, then
// those only in b.
func unionNames[T any](a, b []T, name func(T) string) []string {
	seen := map[string]bool{}
	var out []string
	for _, l := range [][]T{a, b} {
		for _, x := range l {
			if n := name(x); !seen[n] {
				seen[n] = true
				out = append(out, n)
			}
		}
	}
	return out
}

func unionKeys(a, b map[int]string) []int {
	var out []int
	for k := range a {
		out = append(out, k)
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			out = append(out, k)
		}
	}
	sort.Ints(out)
	return out
}

// render writes a value as a config author reads it: strings quoted,
// durations as "5s", lists in brackets.
func render(v reflect.Value) string {
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return "none"
		}
		v = v.Elem()
	}
	if s, ok := v.Interface().(fmt.Stringer); ok && v.Kind() != reflect.String {
		if r := s.String(); r != "" {
			return r
		}
		return `""`
	}
	switch v.Kind() {
	case reflect.String:
		return strconv.Quote(v.String())
	case reflect.Slice, reflect.Array:
		parts := make([]string, v.Len())
		for i := range parts {
			parts[i] = render(v.Index(i))
		}
		return "[" + strings.Join(parts, ", ") + "]"
	case reflect.Map:
		keys := v.MapKeys()
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = fmt.Sprint(k.Interface()) + "=" + render(v.MapIndex(k))
		}
		sort.Strings(parts)
		return "{" + strings.Join(parts, ", ") + "}"
	}
	return fmt.Sprint(v.Interface())
}
