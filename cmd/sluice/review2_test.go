package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"sluice/internal/testutil"
	"sluice/supervisor"
)

// Review of issue 15: a state set through the stats admin API is answered
// 200 by the worker, but the master only hears of it at the worker's next
// poll (supervisor.statePushInterval, 250 ms). A worker that dies inside that window
// is restarted with the older state: a server the operator just put in
// maintenance takes traffic again. The set-server answer should come only
// once the master holds the new state (as the control socket's does).
func TestAdminAPIStateSurvivesImmediateCrash(t *testing.T) {
	ready, maint := startPair(t, "s-ready"), startPair(t, "s-maint")
	dir := shortDir(t)
	web, raw, statsAddr := testutil.FreeAddr(t), testutil.FreeAddr(t), testutil.FreeAddr(t)
	file := filepath.Join(dir, "sluice.toml")
	token := filepath.Join(dir, "token")
	os.WriteFile(token, []byte("sekret\n"), 0o600)
	src := lbConfig(dir, web, raw, []*pair{ready, maint}) +
		fmt.Sprintf("\n[stats]\nbind = %q\nadmin_token_file = %q\n", statsAddr, token)
	os.WriteFile(file, []byte(src), 0o644)
	l := startLB(t, binary, file, filepath.Join(dir, "ctl.sock"))

	req, _ := http.NewRequest("POST", "http://"+statsAddr+"/api/servers/app/s-maint/state", strings.NewReader("state=maint"))
	req.Header.Set("Authorization", "Bearer sekret")
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("set state: %d %s", resp.StatusCode, body)
	}
	// The operator was told "done"; the worker crashes right after.
	old := l.status()
	syscall.Kill(old.WorkerPID, syscall.SIGKILL)
	waitFor(t, 20*time.Second, "a new worker", func() bool {
		r, _, err := supervisor.Control(l.ctl, map[string]any{"cmd": "status"}, 5*time.Second)
		return err == nil && r.WorkerPID > 0 && r.WorkerPID != old.WorkerPID
	})
	r, _, err := supervisor.Control(l.ctl, map[string]any{"cmd": "show-servers"}, 10*time.Second)
	if err != nil || !r.OK {
		t.Fatalf("show-servers: %v %s", err, r.Error)
	}
	for _, s := range r.Servers {
		if s.Backend == "app" && s.Server == "s-maint" && s.Admin != "maint" {
			t.Errorf("app/s-maint after a crash right after the admin API answered: admin=%s, want maint", s.Admin)
		}
	}
}
