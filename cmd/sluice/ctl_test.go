package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sluice/backend"
	"sluice/internal/testutil"
)

// TestCtl drives a running engine through `sluice ctl`, reading the stats
// address and the admin token from the same config file.
func TestCtl(t *testing.T) {
	dir := t.TempDir()
	tok := filepath.Join(dir, "admin.token")
	if err := os.WriteFile(tok, []byte("ctl-test-token-123456\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s1 := testutil.Serve(t, "s1", testutil.Echo)
	s2 := testutil.Serve(t, "s2", testutil.Echo)
	statsAddr := testutil.FreeAddr(t)
	src := fmt.Sprintf(`[stats]
bind = %q
admin_token_file = %q
[frontend.f]
bind = ["{{FRONT}}"]
default_backend = "b"
[backend.b]
sticky = "source"
[[backend.b.server]]
name = "one"
address = %q
[[backend.b.server]]
name = "two"
address = %q
`, statsAddr, tok, s1.Addr, s2.Addr)
	eng, front := testutil.Start(t, src)
	cfg := filepath.Join(dir, "sluice.toml")
	if err := os.WriteFile(cfg, []byte(strings.ReplaceAll(src, "{{FRONT}}", front)), 0o600); err != nil {
		t.Fatal(err)
	}
	c := testutil.Dial(t, front)
	c.Write([]byte("hi"))
	c.CloseWrite()
	buf := make([]byte, 2)
	if _, err := c.Read(buf); err != nil {
		t.Fatal(err)
	}
	c.Close()

	ctl := func(want int, args ...string) string {
		t.Helper()
		var out, errb bytes.Buffer
		if code := Main(append([]string{"ctl", "-f", cfg}, args...), &out, &errb); code != want {
			t.Fatalf("ctl %v: exit %d, want %d\n%s%s", args, code, want, out.String(), errb.String())
		}
		return out.String() + errb.String()
	}
	b := eng.Backends["b"]
	if out := ctl(0, "set", "state", "b/two", "drain"); !strings.Contains(out, "b/two: state ready -> drain") {
		t.Errorf("set state: %q", out)
	}
	if b.Server("two").Admin() != backend.AdminDrain {
		t.Error("server two not drained")
	}
	if out := ctl(0, "set", "weight", "b/one", "9"); !strings.Contains(out, "weight 1 -> 9") || b.Server("one").Weight() != 9 {
		t.Errorf("set weight: %q", out)
	}
	out := ctl(0, "show", "servers")
	for _, want := range []string{"b/one", "b/two", "DRAIN", "9/1", s1.Addr} {
		if !strings.Contains(out, want) {
			t.Errorf("show servers lacks %q:\n%s", want, out)
		}
	}
	out = ctl(0, "show", "stat")
	for _, want := range []string{"frontend f", "backend b", "  one", "OPEN", "pid"} {
		if !strings.Contains(out, want) {
			t.Errorf("show stat lacks %q:\n%s", want, out)
		}
	}
	if out := ctl(0, "show", "sticky", "b"); !strings.Contains(out, "127.0.0.1") {
		t.Errorf("show sticky:\n%s", out)
	}
	if out := ctl(1, "set", "state", "b/nope", "drain"); !strings.Contains(out, "404") {
		t.Errorf("unknown server: %q", out)
	}
	if out := ctl(1, "set", "state", "b/one", "sideways"); !strings.Contains(out, "400") {
		t.Errorf("bad state: %q", out)
	}
	ctl(2, "frobnicate")
	ctl(2, "set", "state", "nobackend", "drain")
}

// TestCtlShowStickyWithoutTable: on a backend that keeps no sticky table
// `ctl show sticky` says so and fails, rather than print an empty table.
func TestCtlShowStickyWithoutTable(t *testing.T) {
	dir := t.TempDir()
	tok := filepath.Join(dir, "admin.token")
	if err := os.WriteFile(tok, []byte("ctl-test-token-123456\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s1 := testutil.Serve(t, "s1", testutil.Echo)
	src := fmt.Sprintf(`[stats]
bind = %q
admin_token_file = %q
[frontend.f]
bind = ["{{FRONT}}"]
default_backend = "b"
[backend.b]
[[backend.b.server]]
name = "one"
address = %q
`, testutil.FreeAddr(t), tok, s1.Addr)
	_, front := testutil.Start(t, src)
	cfg := filepath.Join(dir, "sluice.toml")
	if err := os.WriteFile(cfg, []byte(strings.ReplaceAll(src, "{{FRONT}}", front)), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	code := Main([]string{"ctl", "-f", cfg, "show", "sticky", "b"}, &out, &errb)
	if code != 1 || !strings.Contains(errb.String(), "backend b keeps no sticky table") || out.Len() != 0 {
		t.Errorf("exit %d, stdout %q, stderr %q; want 1 and \"backend b keeps no sticky table\"", code, out.String(), errb.String())
	}
}
