package policy

import (
	"math/bits"
	"net/netip"
	"sync"
	"testing"
	"time"

	"sluice/conf"
)

type hdrs map[string]string

func (h hdrs) Get(name string) []byte {
	if v, ok := h[name]; ok {
		return []byte(v)
	}
	return nil
}

func pfx(s ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, x := range s {
		out = append(out, netip.MustParsePrefix(x))
	}
	return out
}

func req(client, method, host, path string, h hdrs) *Request {
	return &Request{Client: netip.MustParseAddr(client), Method: []byte(method), Host: []byte(host), Path: []byte(path), Headers: h}
}

func TestRulesOrderAndConditions(t *testing.T) {
	f := false
	rs := Compile([]conf.Rule{
		{Action: conf.ActionSetHeader, Name: "X-Env", Value: "prod"},                                           // 0
		{Action: conf.ActionAllow, Src: pfx("10.0.0.0/8"), PathPrefix: "/admin"},                               // 1
		{Action: conf.ActionDeny, PathPrefix: "/admin", Status: 403},                                           // 2
		{Action: conf.ActionRedirect, TLS: &f, Scheme: "https", Code: 301, Host: "*.example.com"},              // 3
		{Action: conf.ActionTarpit, Method: []string{"TRACE"}, Status: 403, Tarpit: time.Second},               // 4
		{Action: conf.ActionDelHeader, Name: "X-Debug", Header: "X-Debug", HeaderVal: "1", HasHeaderVal: true}, // 5
		{Action: conf.ActionDeny, NotSrc: pfx("127.0.0.0/8", "::1/128"), Status: 451},                          // 6
	})
	cases := []struct {
		name    string
		r       *Request
		outcome Outcome
		status  int
		rule    int
		edits   uint64
	}{
		{"admin from inside", req("10.1.2.3", "GET", "a", "/admin/x", nil), Pass, 0, 1, 1},
		{"admin from outside", req("127.0.0.2", "GET", "a", "/admin/x", nil), Deny, 403, 2, 1},
		{"mapped v4 client", req("::ffff:10.1.2.3", "GET", "a", "/admin", nil), Pass, 0, 1, 1},
		{"redirect subdomain", req("127.0.0.1", "GET", "www.Example.com:80", "/p?q", nil), Redirect, 301, 3, 1},
		{"not the bare domain", req("127.0.0.1", "GET", "example.com", "/", nil), Pass, 0, -1, 1},
		{"tarpit", req("127.0.0.1", "TRACE", "h", "/", nil), Tarpit, 403, 4, 1},
		{"header value exact", req("127.0.0.1", "GET", "h", "/", hdrs{"X-Debug": "1"}), Pass, 0, -1, 1 | 1<<5},
		{"header value differs", req("127.0.0.1", "GET", "h", "/", hdrs{"X-Debug": "2"}), Pass, 0, -1, 1},
		{"not_src", req("192.0.2.1", "GET", "h", "/", nil), Deny, 451, 6, 1},
	}
	for _, c := range cases {
		v := rs.Eval(c.r)
		if v.Outcome != c.outcome || v.Status != c.status || v.Rule != c.rule || v.Edits != c.edits {
			t.Errorf("%s: got %+v, want outcome %d status %d rule %d edits %b", c.name, v, c.outcome, c.status, c.rule, c.edits)
		}
	}
	v := rs.Eval(req("127.0.0.1", "GET", "www.example.com:8080", "/p?q=1", nil))
	if got := string(rs.AppendLocation(nil, v, req("127.0.0.1", "GET", "www.example.com:8080", "/p?q=1", nil))); got != "https://www.example.com/p?q=1" {
		t.Errorf("Location %q", got)
	}
}

func TestLocationPortAndLiteral(t *testing.T) {
	rs := Compile([]conf.Rule{
		{Action: conf.ActionRedirect, Scheme: "https", Port: 8443, Code: 308, PathPrefix: "/a"},
		{Action: conf.ActionRedirect, Scheme: "https", Port: 443, Code: 302, PathPrefix: "/b"},
		{Action: conf.ActionRedirect, Location: "https://example.com/new", Code: 301},
	})
	for _, c := range []struct{ host, path, want string }{
		{"h:80", "/a/x", "https://h:8443/a/x"},
		{"[::1]:80", "/b", "https://[::1]/b"},
		{"h", "/c", "https://example.com/new"},
		{"host", "/b\x7f", "https://host/b"},
	} {
		r := req("127.0.0.1", "GET", c.host, c.path, nil)
		v := rs.Eval(r)
		if v.Outcome != Redirect {
			t.Fatalf("%s: %+v", c.path, v)
		}
		if got := string(rs.AppendLocation(nil, v, r)); got != c.want {
			t.Errorf("%s%s: Location %q, want %q", c.host, c.path, got, c.want)
		}
	}
	// No Host to keep, or one that is not a host: 400, not "https:///"
	// or a Location somewhere else.
	for _, h := range []string{"", "h\x01ost", "evil@h", "evil/h"} {
		if v := rs.Eval(req("127.0.0.1", "GET", h, "/a", nil)); v.Outcome != Deny || v.Status != 400 {
			t.Errorf("host %q: %+v", h, v)
		}
	}
}

func TestHeaderEdits(t *testing.T) {
	rs := Compile([]conf.Rule{
		{Action: conf.ActionSetHeader, Name: "X-Env", Value: "prod {frontend}"},
		{Action: conf.ActionAddHeader, Name: "X-Id", Value: "{request_id} {client_ip}:{client_port} {tls_sni} {nope}"},
		{Action: conf.ActionDelHeader, Name: "Server", Response: true},
		{Action: conf.ActionSetHeader, Name: "Strict-Transport-Security", Value: "max-age=1", Response: true},
	})
	v := rs.Eval(req("127.0.0.1", "GET", "h", "/", nil))
	if v.Edits != 0b1111 {
		t.Fatalf("edits %b", v.Edits)
	}
	for _, c := range []struct {
		resp bool
		name string
		drop bool
	}{{false, "x-env", true}, {false, "X-ID", false}, {false, "Server", false}, {true, "server", true}, {true, "STRICT-transport-security", true}, {true, "x-env", false}} {
		if got := rs.Drops(v.Edits, c.resp, []byte(c.name)); got != c.drop {
			t.Errorf("Drops(resp=%v, %s) = %v", c.resp, c.name, got)
		}
	}
	vars := &Vars{Client: netip.MustParseAddrPort("[::ffff:127.0.0.2]:4242"), Frontend: "web", SNI: "a.example\r\nX: y", ConnID: "c1", Seq: 7}
	var got []string
	for m := rs.Adds(v.Edits, false); m != 0; m &= m - 1 {
		e := rs.Edit(bits.TrailingZeros64(m))
		got = append(got, e.Name+": "+string(e.AppendValue(nil, vars)))
	}
	want := []string{"X-Env: prod web", "X-Id: c1-7 127.0.0.2:4242 a.exampleX:y {nope}"}
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("request adds %q, want %q", got, want)
	}
	if m := rs.Adds(v.Edits, true); m != 1<<3 || rs.Edit(3).Lower != "strict-transport-security" {
		t.Errorf("response adds %b", m)
	}
	var nilRules *Rules
	if nilRules.Drops(^uint64(0), false, []byte("x")) || nilRules.Adds(^uint64(0), true) != 0 {
		t.Error("nil rules edit")
	}
}

var t0 = time.Unix(1_800_000_000, 0) // a period boundary for 10s

func TestRequestRateSlidingWindow(t *testing.T) {
	p := New(&conf.Frontend{Name: "web", Mode: conf.ModeHTTP, RateLimit: &conf.RateLimit{Requests: 10, Period: 10 * time.Second, Action: conf.LimitDeny}})
	a, b := req("127.0.0.2", "GET", "h", "/", nil), req("127.0.0.3", "GET", "h", "/", nil)
	for i := 0; i < 10; i++ {
		if v := p.CheckRequest(a, t0.Add(time.Duration(i)*time.Millisecond)); v.Outcome != Pass {
			t.Fatalf("request %d refused: %+v", i+1, v)
		}
	}
	if v := p.CheckRequest(a, t0.Add(20*time.Millisecond)); v.Outcome != Deny || v.Status != 429 || !v.Limited {
		t.Fatalf("11th: %+v", v)
	}
	if v := p.CheckRequest(b, t0.Add(20*time.Millisecond)); v.Outcome != Pass {
		t.Fatalf("other client: %+v", v)
	}
	// Half way into the next period, half of the previous 11 still
	// count: 5.5 + 1 ≤ 10 passes, and so on until the sum passes 10.
	mid := t0.Add(15 * time.Second)
	n := 0
	for ; n < 20 && p.CheckRequest(a, mid).Outcome == Pass; n++ {
	}
	if n != 4 {
		t.Errorf("half a window later %d requests passed, want 4 (10 - 5.5 weighted)", n)
	}
	// Two periods later nothing is left.
	if v := p.CheckRequest(a, t0.Add(30*time.Second)); v.Outcome != Pass {
		t.Errorf("after the window: %+v", v)
	}
	if got := p.Counters.Limited.Load(); got != 2 {
		t.Errorf("Limited = %d, want 2", got)
	}
}

func TestConnectionLimits(t *testing.T) {
	p := New(&conf.Frontend{Name: "t", Mode: conf.ModeTCP, RateLimit: &conf.RateLimit{Connections: 2, ConnectionRate: 3, Period: time.Second, Action: conf.LimitTarpit, Tarpit: time.Second}})
	a := netip.MustParseAddr("127.0.0.2")
	for i := 0; i < 2; i++ {
		if v := p.CheckConn(a, false, t0); v.Outcome != Pass {
			t.Fatalf("conn %d: %+v", i, v)
		}
	}
	if v := p.CheckConn(a, false, t0); v.Outcome != Tarpit || v.Hold != time.Second || !v.Limited {
		t.Fatalf("third concurrent: %+v", v)
	}
	p.Closed(a)
	// The rate: 3 made in this period, the next is the fourth.
	if v := p.CheckConn(a, false, t0); v.Outcome != Tarpit {
		t.Fatalf("fourth in the period: %+v", v)
	}
	p.Closed(a)
	p.Closed(a)
	p.Closed(a) // one too many: never below zero
	if got := p.Limit.Top(1, t0); len(got) != 1 || got[0].Connections != 0 || got[0].ConnectionRate != 4 {
		t.Errorf("top %+v", got)
	}
	if p.Counters.ConnLimited.Load() != 2 || p.Counters.Tarpitted.Load() != 2 {
		t.Errorf("counters limited %d tarpitted %d", p.Counters.ConnLimited.Load(), p.Counters.Tarpitted.Load())
	}
}

func TestTCPRules(t *testing.T) {
	p := New(&conf.Frontend{Name: "t", Mode: conf.ModeTCP, Rules: []conf.Rule{
		{Action: conf.ActionAllow, Src: pfx("127.0.0.2/32")},
		{Action: conf.ActionDeny, Src: pfx("127.0.0.0/8")},
	}})
	if v := p.CheckConn(netip.MustParseAddr("127.0.0.2"), false, t0); v.Outcome != Pass {
		t.Errorf("allowed: %+v", v)
	}
	if v := p.CheckConn(netip.MustParseAddr("127.0.0.3"), false, t0); v.Outcome != Deny {
		t.Errorf("denied: %+v", v)
	}
	if p.Counters.ConnDenied.Load() != 1 {
		t.Error("ConnDenied not counted")
	}
	if New(&conf.Frontend{Name: "none"}) != nil {
		t.Error("a frontend without policy must give nil")
	}
	// http frontends' rules are per request, not per connection.
	h := New(&conf.Frontend{Name: "h", Mode: conf.ModeHTTP, Rules: []conf.Rule{{Action: conf.ActionDeny}}})
	if v := h.CheckConn(netip.MustParseAddr("127.0.0.3"), false, t0); v.Outcome != Pass {
		t.Errorf("http conn: %+v", v)
	}
	h.Closed(netip.MustParseAddr("127.0.0.3"))
}

func TestTableBoundAndEviction(t *testing.T) {
	l := NewLimiter(&conf.RateLimit{Requests: 5, Period: time.Second, TableSize: 100})
	for i := 0; i < 1000; i++ {
		a := netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})
		l.request(a, t0)
	}
	if l.Tracked() > 100 || l.Tracked() < 50 {
		t.Errorf("tracked %d, table_size 100", l.Tracked())
	}
	if l.Evicted() != uint64(1000-l.Tracked()) {
		t.Errorf("evicted %d tracked %d", l.Evicted(), l.Tracked())
	}
}

func TestSharedIncrements(t *testing.T) {
	cfg := &conf.RateLimit{Requests: 10, Period: 10 * time.Second, Shared: true}
	a, b := NewLimiter(cfg), NewLimiter(cfg)
	c := netip.MustParseAddr("127.0.0.2")
	for i := 0; i < 6; i++ {
		a.request(c, t0)
	}
	incs := a.TakeIncrements(nil)
	if len(incs) != 1 || incs[0].Requests != 6 || incs[0].Period != t0.UnixNano()/int64(10*time.Second) {
		t.Fatalf("increments %+v", incs)
	}
	if again := a.TakeIncrements(nil); len(again) != 0 {
		t.Fatalf("taken twice: %+v", again)
	}
	for _, in := range incs {
		b.AddRemote(in, t0)
	}
	n := 0
	for ; n < 20 && b.request(c, t0); n++ {
	}
	if n != 4 {
		t.Errorf("node b allowed %d more, want 4 (10 - 6 from a)", n)
	}
	// A period far off (clock skew or replay) is ignored.
	b.AddRemote(Increment{Client: netip.MustParseAddr("127.0.0.9"), Period: 1, Requests: 100}, t0)
	for _, r := range b.Top(10, t0) {
		if r.Client == netip.MustParseAddr("127.0.0.9") && r.Requests > 0 {
			t.Errorf("stale increment applied: %+v", r)
		}
	}
	// Not shared: nothing to take.
	if got := NewLimiter(&conf.RateLimit{Requests: 1}).TakeIncrements(nil); len(got) != 0 {
		t.Error("unshared limiter gave increments")
	}
}

func TestLimiterConcurrent(t *testing.T) {
	l := NewLimiter(&conf.RateLimit{Requests: 1 << 30, Connections: 1 << 20, Period: time.Second, TableSize: 64, Shared: true})
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 2000; i++ {
				a := netip.AddrFrom4([4]byte{10, byte(g), 0, byte(i % 100)})
				l.request(a, t0)
				if l.open(a, t0) {
					l.close(a)
				}
				if i%100 == 0 {
					l.TakeIncrements(nil)
				}
			}
		}(g)
	}
	wg.Wait()
	if l.Tracked() > 64 {
		t.Errorf("tracked %d > 64", l.Tracked())
	}
}

func BenchmarkCheckRequest(b *testing.B) {
	p := New(&conf.Frontend{Name: "web", Mode: conf.ModeHTTP,
		Rules: []conf.Rule{
			{Action: conf.ActionRedirect, TLS: new(bool), Scheme: "https", Host: "old.example.com"},
			{Action: conf.ActionDeny, PathPrefix: "/admin", NotSrc: pfx("10.0.0.0/8")},
			{Action: conf.ActionSetHeader, Name: "X-Env", Value: "prod"},
		},
		RateLimit: &conf.RateLimit{Requests: 1 << 30, Period: 10 * time.Second}})
	r := req("127.0.0.2", "GET", "www.example.com", "/index.html", hdrs{})
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		if p.CheckRequest(r, now).Outcome != Pass {
			b.Fatal("refused")
		}
	}
}

// conf refuses a value template that names a variable policy does not fill.
func TestTemplateVariablesAgreeWithConf(t *testing.T) {
	if len(conf.TemplateVars) != len(Variables) {
		t.Fatalf("conf accepts %v, policy fills %v", conf.TemplateVars, Variables)
	}
	for _, name := range conf.TemplateVars {
		if _, ok := Variables[name]; !ok {
			t.Errorf("conf accepts {%s}, which policy does not fill", name)
		}
	}
}
