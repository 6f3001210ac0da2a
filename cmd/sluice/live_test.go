package main

import (
	"bytes"
	"fmt"
	"net"
	"strings"
	"testing"

	"sluice/internal/testutil"
)

// TestCheckLiveCommand: the flag, the exit codes and the one-line reason.
// What `check --live` probes is tested in package supervisor (CheckLive).
func TestCheckLiveCommand(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	const cfg = "[global]\nvital_frontends = [\"www\"]\n[frontend.www]\nbind = [%q]\ndefault_backend = \"b\"\n[[backend.b.server]]\naddress = \"127.0.0.1:1\"\n"
	good := writeFile(t, "good.toml", fmt.Sprintf(cfg, ln.Addr().String()))
	var out, errb bytes.Buffer
	if code := Main([]string{"check", "--live", "-f", good}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if !strings.Contains(out.String(), "live") {
		t.Errorf("stdout %q", out.String())
	}
	closed := testutil.ClosedAddr(t)
	bad := writeFile(t, "bad.toml", fmt.Sprintf(cfg, closed))
	out.Reset()
	errb.Reset()
	if code := Main([]string{"check", "--live", "-f", bad}, &out, &errb); code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	if lines := strings.Count(errb.String(), "\n"); lines != 1 || !strings.Contains(errb.String(), "not live: vital frontend www") {
		t.Errorf("stderr %q, want one line with the reason", errb.String())
	}
}
