package engine

import (
	"bytes"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sluice/conf"
	"sluice/internal/logbuf"
)

// TestStartLogsConfigWarnings: an admin token others can read is logged
// when the engine starts (a worker's start and every reload), with its
// file, line and key.
func TestStartLogsConfigWarnings(t *testing.T) {
	dir := t.TempDir()
	tok := filepath.Join(dir, "admin.token")
	if err := os.WriteFile(tok, []byte("0123456789abcdef0123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(tok, 0o644); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "sluice.toml")
	l, err := net.Listen("tcp", "127.0.0.1:0") // a free port for the stats listener
	if err != nil {
		t.Fatal(err)
	}
	statsAddr := l.Addr().String()
	l.Close()
	cfg, err := conf.Parse(file, []byte(`[stats]
bind = "`+statsAddr+`"
admin_token_file = "admin.token"
[frontend.f]
bind = ["127.0.0.1:0"]
default_backend = "b"
[[backend.b.server]]
address = "127.0.0.1:1"
`))
	if err != nil {
		t.Fatal(err)
	}
	var buf logbuf.Buffer
	e, err := StartWith(cfg, nil, slog.New(slog.NewTextHandler(&buf, nil)), Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Sockets.Close() })
	want := []string{"level=WARN", "is readable or writable by group or others", "chmod 600", "file=" + file, "line=3", "key=stats.admin_token_file"}
	for _, line := range strings.Split(buf.String(), "\n") {
		if strings.Contains(line, "admin.token") {
			for _, w := range want {
				if !strings.Contains(line, w) {
					t.Errorf("warning %q lacks %q", line, w)
				}
			}
			return
		}
	}
	t.Fatalf("no warning about the token file in the log:\n%s", buf.String())
}

// TestExamplesFitTheDescriptorLimit: the descriptor budget warns about no
// shipped example at a limit of 20000, and at 1024 only about a
// global.maxconn that tcp or http frontends would really need: a udp-only
// file accepts no connection, so its maxconn holds no descriptor.
func TestExamplesFitTheDescriptorLimit(t *testing.T) {
	files, _ := filepath.Glob("../examples/*.toml")
	nodes, _ := filepath.Glob("../examples/*/*/sluice.toml")
	files = append(files, nodes...)
	if len(files) < 5 {
		t.Fatalf("found only %v", files)
	}
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		// /run/sluice is the service's RuntimeDirectory, absent here.
		src = bytes.ReplaceAll(src, []byte("/run/sluice/keepalived.track"), []byte(filepath.Join(t.TempDir(), "keepalived.track")))
		// /var/lib/sluice is the service's state directory, absent here.
		src = bytes.ReplaceAll(src, []byte("/var/lib/sluice/acme"), []byte(t.TempDir()))
		cfg, err := conf.Parse(f, src)
		if err != nil {
			t.Fatal(err)
		}
		tcp := false
		for _, fr := range cfg.Frontends {
			tcp = tcp || fr.Network() == "tcp"
		}
		for _, limit := range []uint64{20000, 1024} {
			fitted, b := FitLimits(cfg, limit)
			for _, w := range b.Warn {
				if limit == 20000 || !tcp || !strings.HasPrefix(w, "global.maxconn = ") {
					t.Errorf("%s at limit %d: %s", f, limit, w)
				}
			}
			if !tcp && fitted.Global.MaxConn != cfg.Global.MaxConn {
				t.Errorf("%s: maxconn %d changed to %d", f, cfg.Global.MaxConn, fitted.Global.MaxConn)
			}
		}
	}
}
