package backend

import (
	"fmt"
	"strings"
	"testing"
)

func servers(weights ...int) []*Server {
	var out []*Server
	for i, w := range weights {
		out = append(out, NewServer("b", string(rune('a'+i)), fmt.Sprintf("127.0.0.1:%d", 1000+i), w, false, 0))
	}
	return out
}

func TestRoundRobinSmoothSequences(t *testing.T) {
	for _, tc := range []struct {
		desc    string
		weights []int
		want    string // one full cycle
	}{
		{"equal weights rotate", []int{1, 1, 1}, "abc"},
		{"3:1 interleaves", []int{3, 1}, "aaba"},
		{"5:1:1 spreads the small ones", []int{5, 1, 1}, "aabacaa"},
		{"weight 0 takes nothing", []int{2, 0, 1}, "aca"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			rr := newRoundRobin(servers(tc.weights...))
			var b strings.Builder
			for range 3 * len(tc.want) {
				b.WriteString(rr.Pick(nil, nil).Name)
			}
			if want := strings.Repeat(tc.want, 3); b.String() != want {
				t.Fatalf("got %s, want %s", b.String(), want)
			}
		})
	}
}

func TestRoundRobinSkipsUnavailable(t *testing.T) {
	ss := servers(1, 1, 1)
	rr := newRoundRobin(ss)
	ss[1].SetUp(false)
	ss[2].SetAdmin(AdminMaint)
	for range 6 {
		if s := rr.Pick(nil, nil); s != ss[0] {
			t.Fatalf("picked %s, only a is available", s.Name)
		}
	}
	ss[0].SetUp(false)
	if s := rr.Pick(nil, nil); s != nil {
		t.Fatalf("picked %s with none available", s.Name)
	}
}

func TestBackupOnlyWhenNoPrimary(t *testing.T) {
	ss := servers(1, 1)
	bk := NewServer("b", "backup", "127.0.0.1:9", 1, true, 0)
	b := &Backend{Name: "b", algo: "roundrobin"}
	if err := b.SetServers(append(ss, bk)); err != nil {
		t.Fatal(err)
	}
	for range 10 {
		if s := b.Pick(&Client{}, nil); s == bk {
			t.Fatal("backup picked while primaries are up")
		}
	}
	ss[0].SetUp(false)
	ss[1].SetUp(false)
	if s := b.Pick(&Client{}, nil); s != bk {
		t.Fatalf("picked %v, want the backup", s)
	}
}
