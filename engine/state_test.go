package engine

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"sluice/conf"
)

func build(t *testing.T, src string) *Engine {
	t.Helper()
	cfg, err := conf.Parse("t.toml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	e, err := StartWith(cfg, nil, slog.New(slog.NewTextHandler(io.Discard, nil)), Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Sockets.Close() })
	return e
}

const stateConf = `
[frontend.f]
bind = ["127.0.0.1:0"]
default_backend = "b"
[[backend.b.server]]
name = "s1"
address = "127.0.0.1:1"
weight = %d
[[backend.b.server]]
name = "s2"
address = %q
`

func TestRestore(t *testing.T) {
	old := build(t, sprintf(stateConf, 2, "127.0.0.1:2"))
	down := false
	w := 7
	if err := old.SetServer("b", "s1", "drain", &down, &w); err != nil {
		t.Fatal(err)
	}
	if err := old.SetServer("b", "s2", "maint", &down, nil); err != nil {
		t.Fatal(err)
	}
	if err := old.SetServer("b", "nope", "drain", nil, nil); err == nil {
		t.Error("unknown server accepted")
	}
	st := old.State()

	for _, tc := range []struct {
		desc       string
		confWeight int
		s2Addr     string
		want       map[string]string // server -> admin/up/weight
	}{
		{"same config: everything carried", 2, "127.0.0.1:2", map[string]string{"s1": "drain false 7", "s2": "maint false 1"}},
		{"weight edited: the file wins", 3, "127.0.0.1:2", map[string]string{"s1": "drain false 3", "s2": "maint false 1"}},
		{"address changed: health starts afresh", 2, "127.0.0.1:3", map[string]string{"s1": "drain false 7", "s2": "maint true 1"}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			cfg, err := conf.Parse("t.toml", []byte(sprintf(stateConf, tc.confWeight, tc.s2Addr)))
			if err != nil {
				t.Fatal(err)
			}
			e, err := StartWith(cfg, nil, slog.New(slog.NewTextHandler(io.Discard, nil)), Options{State: st})
			if err != nil {
				t.Fatal(err)
			}
			defer e.Sockets.Close()
			for _, s := range e.State() {
				if got := sprintf("%s %v %d", s.Admin, s.Up, s.Weight); got != tc.want[s.Server] {
					t.Errorf("%s: %s, want %s", s.Server, got, tc.want[s.Server])
				}
			}
		})
	}
}

func sprintf(format string, a ...any) string { return fmt.Sprintf(format, a...) }

// TestRestoredHealthMeetsChecks: a server carried over as down stays down
// when the new worker starts, although its checks will pass, until rise
// checks have passed; one carried over as up stays up although init_state
// is "down".
func TestRestoredHealthMeetsChecks(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	src := sprintf(`
[frontend.f]
bind = ["127.0.0.1:0"]
default_backend = "b"
[backend.b.health]
check = "tcp"
interval = "50ms"
rise = 2
init_state = "down"
[[backend.b.server]]
name = "was_down"
address = %q
[[backend.b.server]]
name = "was_up"
address = %q
`, ln.Addr().String(), ln.Addr().String())
	cfg, err := conf.Parse("t.toml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	st := State{
		{Backend: "b", Server: "was_down", Addr: ln.Addr().String(), Up: false, Admin: "ready", Weight: 1, ConfWeight: 1},
		{Backend: "b", Server: "was_up", Addr: ln.Addr().String(), Up: true, Admin: "ready", Weight: 1, ConfWeight: 1},
	}
	e, err := StartWith(cfg, nil, slog.New(slog.NewTextHandler(io.Discard, nil)), Options{State: st})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Shutdown(context.Background())
	b := e.Backends["b"]
	if b.Server("was_down").Up() {
		t.Fatal("a server carried over as down is up before any check passed")
	}
	if !b.Server("was_up").Up() {
		t.Fatal("a server carried over as up went down for init_state")
	}
	deadline := time.Now().Add(5 * time.Second)
	for !b.Server("was_down").Up() {
		if time.Now().After(deadline) {
			t.Fatal("the server carried over as down never came up although its checks pass")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRestoreKeepsLastChange: the time of the last up/down change (lastchg
// on the stats page) comes along with the state, down or up, so a reload or
// a restarted worker does not make every server look freshly changed.
func TestRestoreKeepsLastChange(t *testing.T) {
	old := build(t, sprintf(stateConf, 1, "127.0.0.1:2"))
	down := false
	if err := old.SetServer("b", "s1", "", &down, nil); err != nil {
		t.Fatal(err)
	}
	// Make the changes look an hour old: no waiting in a test.
	hourAgo := time.Now().Add(-time.Hour)
	for _, s := range old.Backends["b"].Servers() {
		s.RestoreLastChange(hourAgo)
	}
	st := old.State()
	for _, ss := range st {
		if ss.LastChange != hourAgo.UnixNano() {
			t.Fatalf("%s: state carries last change %d, want %d", ss.Server, ss.LastChange, hourAgo.UnixNano())
		}
	}
	e := build(t, sprintf(stateConf, 1, "127.0.0.1:2"))
	e.Restore(st)
	for _, s := range e.Backends["b"].Servers() {
		if got := s.LastChange(); !got.Equal(hourAgo) {
			t.Errorf("%s (up=%v): last change %s after restore, want %s", s.Name, s.Up(), got, hourAgo)
		}
	}
	if d := e.Backends["b"].Server("s1").Downtime(); d < time.Hour {
		t.Errorf("s1 downtime %s after restore, want the hour it has been down", d)
	}
	// An address change starts health afresh, and its last change with it.
	moved := build(t, sprintf(stateConf, 1, "127.0.0.1:3"))
	moved.Restore(st)
	if got := moved.Backends["b"].Server("s2").LastChange(); got.Before(time.Now().Add(-time.Minute)) {
		t.Errorf("s2 moved to another address kept its old last change %s", got)
	}
}
