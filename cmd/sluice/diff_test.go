package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sluice/internal/testutil"
)

// TestReloadDiff: `reload -n` prints what a reload of the file would change
// and leaves the worker alone; `reload --diff` prints it and reloads; an
// invalid file prints its problems and changes nothing.
func TestReloadDiff(t *testing.T) {
	setA := []*pair{startPair(t, "a1")}
	setB := []*pair{startPair(t, "b1")}
	dir := shortDir(t)
	web, raw, raw2 := testutil.FreeAddr(t), testutil.FreeAddr(t), testutil.FreeAddr(t)
	file := filepath.Join(dir, "sluice.toml")
	os.WriteFile(file, []byte(lbConfig(dir, web, raw, setA)), 0o644)
	l := startLB(t, binary, file, filepath.Join(dir, "ctl.sock"))
	before := l.status()

	next := strings.Replace(lbConfig(dir, web, raw, setB), "bind = [\""+raw+"\"]", "bind = [\""+raw+"\", \""+raw2+"\"]", 1)
	next = strings.Replace(next, "[backend.app.health]\n", "[backend.app]\nbalance = \"leastconn\"\n[backend.app.health]\n", 1)
	os.WriteFile(file, []byte(next), 0o644)
	want := []string{
		file + ": 6 changes from the running configuration:",
		"+ frontend raw: bind " + raw2,
		"- backend app: server a1",
		"+ backend app: server b1 (address " + setB[0].http + ", weight 1)",
		`~ backend app: balance "roundrobin" -> "leastconn"`,
		"- backend rawb: server a1",
		"+ backend rawb: server b1 (address " + setB[0].tcp + ", weight 1)",
	}
	out, code := l.run("reload", "-n")
	if code != 0 || out != strings.Join(want, "\n")+"\n" {
		t.Fatalf("reload -n: exit %d, output:\n%s\nwant:\n%s", code, out, strings.Join(want, "\n"))
	}
	if st := l.status(); st.WorkerPID != before.WorkerPID {
		t.Fatalf("reload -n replaced the worker (%d -> %d)", before.WorkerPID, st.WorkerPID)
	}
	freshReachesSet(t, web, raw, "a")

	out, code = l.run("reload", "--diff")
	if code != 0 || !strings.HasPrefix(out, strings.Join(want, "\n")+"\n") || !strings.Contains(out, "reload done") {
		t.Fatalf("reload --diff: exit %d, output:\n%s", code, out)
	}
	if st := l.status(); st.WorkerPID == before.WorkerPID {
		t.Fatal("reload --diff did not reload")
	}
	freshReachesSet(t, web, raw, "b")
	freshReachesSet(t, web, raw2, "b")

	if out, code = l.run("reload", "--dry-run"); code != 0 || out != file+": no change from the running configuration\n" {
		t.Errorf("reload --dry-run after the reload: exit %d:\n%s", code, out)
	}

	os.WriteFile(file, []byte(strings.Replace(next, `balance = "leastconn"`, `balance = "fastest"`, 1)), 0o644)
	cur := l.status()
	out, code = l.run("reload", "--diff")
	if code != 1 || !strings.Contains(out, `backend.app.balance: "fastest" is not one of`) || strings.Contains(out, "reload done") {
		t.Errorf("reload --diff of an invalid file: exit %d:\n%s", code, out)
	}
	if st := l.status(); st.WorkerPID != cur.WorkerPID {
		t.Errorf("an invalid file replaced the worker")
	}
}
