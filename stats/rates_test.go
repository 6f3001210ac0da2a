package stats

import (
	"testing"
	"time"

	"sluice/backend"
	"sluice/conf"
)

func TestRates(t *testing.T) {
	b, err := backend.New(&conf.Backend{Name: "b", Balance: "roundrobin", Servers: []conf.Server{
		{Name: "s1", Address: "127.0.0.1:1", Weight: 1}, {Name: "s2", Address: "127.0.0.1:2", Weight: 1},
	}})
	if err != nil {
		t.Fatal(err)
	}
	s1, s2 := b.Server("s1"), b.Server("s2")
	r := newRates(nil, []*backend.Backend{b})
	t0 := r.last
	s1.Counters.Sessions.Add(30)
	s2.Counters.Sessions.Add(10)
	r.sample(t0.Add(time.Second))
	if cur, mx := r.get(s1); cur != 30 || mx != 30 {
		t.Errorf("s1 rate %d max %d, want 30 30", cur, mx)
	}
	if cur, _ := r.get(b); cur != 40 {
		t.Errorf("backend rate %d, want 40", cur)
	}
	s1.Counters.Sessions.Add(5)
	r.sample(t0.Add(1500 * time.Millisecond)) // 5 in half a second
	if cur, mx := r.get(s1); cur != 10 || mx != 30 {
		t.Errorf("s1 rate %d max %d, want 10 30", cur, mx)
	}
	// A server replaced at run time (DNS) is picked up and the old one dropped.
	s3 := backend.NewServer("b", "s3", "127.0.0.1:3", 1, false, 0)
	if err := b.SetServers([]*backend.Server{s1, s3}); err != nil {
		t.Fatal(err)
	}
	r.sample(t0.Add(2 * time.Second))
	s3.Counters.Sessions.Add(4)
	r.sample(t0.Add(3 * time.Second))
	if cur, _ := r.get(s3); cur != 4 {
		t.Errorf("new server rate %d, want 4", cur)
	}
	if _, ok := r.m[s2]; ok {
		t.Error("removed server still sampled")
	}
}

func TestFormatting(t *testing.T) {
	for _, c := range []struct{ got, want string }{
		{fmtDur(42), "42s"}, {fmtDur(192), "3m12s"}, {fmtDur(5*3600 + 120), "5h02m"}, {fmtDur(3*86400 + 4*3600), "3d4h"},
		{fmtBytes(999), "999"}, {fmtBytes(1536), "1.5K"}, {fmtBytes(200 << 20), "200M"},
		{fmtNum(99999), "99999"}, {fmtNum(123456), "123.5k"}, {fmtNum(1234567), "1.23M"}, {fmtNum(2500000000), "2.50G"},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
}
