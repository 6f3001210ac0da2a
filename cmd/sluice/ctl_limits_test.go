package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sluice/conf"
	"sluice/engine"
	"sluice/internal/testutil"
)

// TestCtlShowLimits: `sluice ctl show limits FRONTEND` prints the clients
// of the frontend's rate limit as a table, and says what to do for a
// frontend without one.
func TestCtlShowLimits(t *testing.T) {
	dir := t.TempDir()
	tok := filepath.Join(dir, "admin.token")
	if err := os.WriteFile(tok, []byte("ctl-limits-token-123456\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := testutil.Serve(t, "s", testutil.Namer("s"))
	front := testutil.FreeAddr(t)
	src := fmt.Sprintf(`[stats]
bind = %q
admin_token_file = %q
[frontend.f]
bind = [%q]
default_backend = "b"
[frontend.g]
bind = [%q]
default_backend = "b"
[backend.b]
[[backend.b.server]]
name = "s"
address = %q
`, testutil.FreeAddr(t), tok, front, testutil.FreeAddr(t), srv.Addr)
	file := filepath.Join(dir, "sluice.toml")
	if err := os.WriteFile(file, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := conf.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	// Set as conf.Parse fills [frontend.f.rate_limit].
	cfg.Frontends[0].RateLimit = &conf.RateLimit{Connections: 5, ConnectionRate: 50, Period: 10 * time.Second, Action: conf.LimitDeny, TableSize: 1000}
	eng, err := engine.Start(cfg, nil, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		eng.Shutdown(ctx)
	})
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.3")}}
	c, err := d.Dial("tcp", front)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(make([]byte, 2)); err != nil {
		t.Fatal(err)
	}
	ctl := func(want int, args ...string) string {
		t.Helper()
		var out, errb bytes.Buffer
		if code := Main(append([]string{"ctl", "-f", file}, args...), &out, &errb); code != want {
			t.Fatalf("ctl %v: exit %d, want %d\n%s%s", args, code, want, out.String(), errb.String())
		}
		return out.String() + errb.String()
	}
	out := ctl(0, "show", "limits", "f")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.Contains(lines[0], "frontend f") || !strings.Contains(lines[0], "clients tracked 1") {
		t.Fatalf("show limits:\n%s", out)
	}
	for _, col := range []string{"CLIENT", "REQUESTS", "CONN RATE (max 50)", "CONNECTIONS (max 5)"} {
		if !strings.Contains(lines[1], col) {
			t.Errorf("header lacks %q: %q", col, lines[1])
		}
	}
	if f := strings.Fields(lines[2]); len(f) != 4 || f[0] != "127.0.0.3" || f[1] != "0.0" || f[2] != "1.0" || f[3] != "1" {
		t.Errorf("client line %q, want 127.0.0.3 with 1 new connection, 1 open", lines[2])
	}
	if out := ctl(0, "show", "limits", "f", "5"); !strings.Contains(out, "127.0.0.3") {
		t.Errorf("show limits f 5:\n%s", out)
	}
	if out := ctl(1, "show", "limits", "g"); !strings.Contains(out, "frontend g has no rate limit") {
		t.Errorf("show limits g: %q", out)
	}
}
