package engine

import (
	"context"
	"fmt"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"sluice/backend"
)

// aZone is a real miekg/dns server on 127.0.0.1 that answers A queries for
// app.test. with the addresses a test sets.
type aZone struct {
	addr string
	mu   sync.Mutex
	ips  []string
}

func startAZone(t *testing.T) *aZone {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	z := &aZone{addr: pc.LocalAddr().String()}
	started := make(chan struct{})
	srv := &dns.Server{PacketConn: pc, NotifyStartedFunc: func() { close(started) },
		Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
			m := new(dns.Msg)
			m.SetReply(r)
			if q := r.Question[0]; q.Qtype == dns.TypeA && dns.CanonicalName(q.Name) == "app.test." {
				z.mu.Lock()
				for _, ip := range z.ips {
					m.Answer = append(m.Answer, &dns.A{
						Hdr: dns.RR_Header{Name: "app.test.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
						A:   net.ParseIP(ip),
					})
				}
				z.mu.Unlock()
			}
			w.WriteMsg(m)
		})}
	go srv.ActivateAndServe()
	select {
	case <-started:
	case <-time.After(5 * time.Second):
		t.Fatal("dns server did not start")
	}
	t.Cleanup(func() { srv.Shutdown() })
	return z
}

func (z *aZone) set(ips ...string) {
	z.mu.Lock()
	z.ips = ips
	z.mu.Unlock()
}

// TestPoolWritersDoNotOverwriteEachOther: DNS discovery, weight changes
// (Reweigh, as the agent and the admin API do), admin state changes and
// reload carry-over (Restore) all write the pool of one backend at once.
// Each writer must start from the pool the previous one left: a server
// found by DNS must end up in the pool that picks read, and every weight
// must be the one the schedule uses.
func TestPoolWritersDoNotOverwriteEachOther(t *testing.T) {
	z := startAZone(t)
	e := build(t, sprintf(`
[frontend.f]
bind = ["127.0.0.1:0"]
default_backend = "b"
[backend.b.dns]
name = "app.test"
port = 8080
resolvers = [%q]
interval = "1h"
[[backend.b.server]]
name = "s1"
address = "127.0.0.1:1"
weight = 2
[[backend.b.server]]
name = "s2"
address = "127.0.0.1:2"
`, z.addr))
	t.Cleanup(func() { e.Shutdown(context.Background()) })
	b, d := e.Backends["b"], e.Discovery["b"]
	st := e.State() // what a reload would carry over for s1 and s2

	const dnsRounds = 20 // each adds one server (more would not fit a UDP answer)
	const extra = 200    // writes the others still make once DNS is done
	dnsDone := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // DNS discovery: one new server per answer
		defer wg.Done()
		defer close(dnsDone)
		var ips []string
		for i := 1; i <= dnsRounds; i++ {
			ips = append(ips, fmt.Sprintf("10.0.%d.%d", i/250, i%250+1))
			z.set(slices.Clone(ips)...)
			d.Refresh(context.Background())
		}
	}()
	writer := func(write func(i int)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			after := -1
			for i := 0; i < 100000; i++ {
				if after < 0 {
					select {
					case <-dnsDone:
						after = i
					default:
					}
				}
				if after >= 0 && i-after >= extra {
					return
				}
				write(i)
			}
		}()
	}
	writer(func(int) {
		if err := b.Reweigh(); err != nil {
			t.Error(err)
		}
	})
	writer(func(i int) { // the admin API: state and weight of s1
		w := 1 + i%5
		state := []string{"ready", "drain", "maint"}[i%3]
		if err := e.SetServer("b", "s1", state, nil, &w); err != nil {
			t.Error(err)
		}
	})
	writer(func(i int) { // reload carry-over: s2's runtime weight
		st := slices.Clone(st)
		for j := range st {
			if st[j].Server == "s2" {
				st[j].Weight = 1 + i%4
			}
		}
		e.Restore(st)
	})
	wg.Wait()

	want := []string{"s1", "s2"}
	for i := 1; i <= dnsRounds; i++ {
		want = append(want, fmt.Sprintf("10.0.%d.%d:8080", i/250, i%250+1))
	}
	var got []string
	total := 0
	for _, s := range b.Servers() {
		got = append(got, s.Name)
		s.SetAdmin(backend.AdminReady) // not a pool write: picks read it live
		s.SetUp(true)
		total += int(s.Weight())
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("pool after concurrent writers has %d servers, want %d: missing %v",
			len(got), len(want), missing(want, got))
	}
	// One cycle of the round-robin schedule picks each server as often as
	// its weight says: a snapshot built from stale weights or a stale list
	// does not.
	picked := map[string]int{}
	for range total {
		s := b.Pick(&backend.Client{}, nil)
		if s == nil {
			t.Fatal("no server picked")
		}
		picked[s.Name]++
	}
	for _, s := range b.Servers() {
		if picked[s.Name] != int(s.Weight()) {
			t.Errorf("%s picked %d times in a cycle of %d, its weight is %d", s.Name, picked[s.Name], total, s.Weight())
		}
	}
}

func missing(want, got []string) []string {
	var out []string
	for _, w := range want {
		if !slices.Contains(got, w) {
			out = append(out, w)
		}
	}
	return out
}
