package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestImportsPointDown keeps the layering of issue 16: cmd/sluice is the
// only user of the supervisor, the composition root engine is
// used only from above it, nothing imports cmd, and the leaf helpers in
// internal/ import no other sluice package outside internal/.
func TestImportsPointDown(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}} {{join .Imports \" \"}}", "sluice/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	may := map[string][]string{ // imported package: the only importers allowed
		"sluice/supervisor": {"sluice/cmd/sluice"},
		"sluice/engine":     {"sluice/cmd/sluice", "sluice/supervisor", "sluice/internal/testutil"},
		"sluice/peers":      {"sluice/engine"},
	}
	// internal/testutil starts whole engines for tests; every other
	// internal package is a leaf helper.
	wiring := map[string]bool{"sluice/internal/testutil": true}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		pkg, imports := fields[0], fields[1:]
		for _, imp := range imports {
			if !strings.HasPrefix(imp, "sluice/") {
				continue
			}
			if strings.HasPrefix(imp, "sluice/cmd/") {
				t.Errorf("%s imports %s: nothing imports cmd", pkg, imp)
			}
			if allowed, ok := may[imp]; ok && !contains(allowed, pkg) {
				t.Errorf("%s imports %s: only %v may", pkg, imp, allowed)
			}
			if strings.HasPrefix(pkg, "sluice/internal/") && !wiring[pkg] && !strings.HasPrefix(imp, "sluice/internal/") {
				t.Errorf("leaf helper %s imports %s, above it", pkg, imp)
			}
			if !strings.HasPrefix(pkg, "sluice/internal/") && rank(imp) < rank(pkg) {
				t.Errorf("%s imports %s, a layer above it (see docs/architecture.md)", pkg, imp)
			}
		}
	}
}

// layers lists the packages from the top down, as docs/architecture.md
// draws them; a package may import only its own layer or those below.
var layers = [][]string{
	{"cmd/sluice"},
	{"supervisor"},
	{"bgp"},
	{"engine"},
	{"frontend", "stats", "peers"},
	{"l7"},
	{"l4"},
	{"policy"},
	{"backend"},
	{"health"},
	{"conf"},
}

// rank is pkg's layer, counted from the top; packages outside the drawing
// (bench, test/…) sit above everything, internal/ helpers below.
func rank(pkg string) int {
	pkg = strings.TrimPrefix(pkg, "sluice/")
	if strings.HasPrefix(pkg, "internal/") {
		return len(layers)
	}
	for i, l := range layers {
		if contains(l, pkg) {
			return i
		}
	}
	return -1
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// TestThinCLI: cmd/sluice stays a thin CLI (flags, output, sub-command
// dispatch) under 1,000 lines; the process model lives in package
// supervisor.
func TestThinCLI(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	lines := 0
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		lines += strings.Count(string(b), "\n")
	}
	if lines >= 1000 {
		t.Errorf("cmd/sluice has %d lines of non-test code; move logic into a package (limit 1,000)", lines)
	}
}
