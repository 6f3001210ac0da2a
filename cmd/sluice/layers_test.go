package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestImportsPointDown keeps the layering of issue 16: cmd/sluice is the
// only user of the supervisor, the composition root internal/engine is
// used only from above it, nothing imports cmd, and the leaf helpers in
// internal/ import no other sluice package outside internal/.
func TestImportsPointDown(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}} {{join .Imports \" \"}}", "sluice/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	may := map[string][]string{ // imported package: the only importers allowed
		"sluice/supervisor":      {"sluice/cmd/sluice"},
		"sluice/internal/engine": {"sluice/cmd/sluice", "sluice/supervisor", "sluice/internal/testutil"},
		"sluice/internal/peers":  {"sluice/internal/engine"},
	}
	// Wiring in internal/ that may reach up; every other internal package
	// is a leaf helper.
	wiring := map[string]bool{"sluice/internal/engine": true, "sluice/internal/peers": true, "sluice/internal/testutil": true}
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
		}
	}
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
