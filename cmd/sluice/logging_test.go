package main

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"sluice/internal/testutil"
)

// TestProcessLogsJSON: with global.log_format = "json" every line the
// master and its workers write on stderr, through a start, a reload and a
// stop, is one JSON object with a level and a message.
func TestProcessLogsJSON(t *testing.T) {
	set := []*pair{startPair(t, "a1")}
	dir := shortDir(t)
	web, raw := testutil.FreeAddr(t), testutil.FreeAddr(t)
	file := filepath.Join(dir, "sluice.toml")
	src := strings.Replace(lbConfig(dir, web, raw, set), "[global]\n", "[global]\nlog_format = \"json\"\n", 1)
	os.WriteFile(file, []byte(src), 0o644)
	l := startLB(t, binary, file, filepath.Join(dir, "ctl.sock"))
	freshReachesSet(t, web, raw, "a")
	l.reload(src)
	freshReachesSet(t, web, raw, "a")
	l.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-l.done:
	case <-time.After(20 * time.Second):
		t.Fatal("no exit within 20s of SIGTERM")
	}
	out := l.logs.String()
	msgs := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Errorf("not a JSON line: %q (%v)", line, err)
			continue
		}
		lvl, _ := rec["level"].(string)
		msg, _ := rec["msg"].(string)
		if lvl == "" || msg == "" || rec["time"] == nil {
			t.Errorf("line without time, level or msg: %q", line)
		}
		msgs[msg] = true
	}
	for _, want := range []string{"sluice started", "worker serving", "reloaded", "worker draining", "sluice stopped"} {
		if !msgs[want] {
			t.Errorf("no %q line among the JSON logs:\n%s", want, out)
		}
	}
}

// syslogLine is what log/syslog sends to a local socket (RFC 3164 without
// the hostname, as syslogd reads /dev/log): <PRI>Mmm dd hh:mm:ss TAG[PID]: MSG.
var syslogLine = regexp.MustCompile(`^<(\d+)>[A-Z][a-z]{2} [ 0-9]\d \d\d:\d\d:\d\d sltest\[(\d+)\]: (.*)$`) // log/syslog ends each with \n

// TestProcessLogsToSyslog: a reload that sets global.log_target = "syslog"
// moves the new worker's and the master's lines to the syslog socket, with
// the configured facility and tag and the severity of each level.
func TestProcessLogsToSyslog(t *testing.T) {
	set := []*pair{startPair(t, "a1")}
	dir := shortDir(t)
	sock := filepath.Join(dir, "log.sock")
	pc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	lines := make(chan string, 1000)
	go func() {
		buf := make([]byte, 64<<10)
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				close(lines)
				return
			}
			select {
			case lines <- string(buf[:n]):
			default: // a test that stopped reading: drop
			}
		}
	}()

	web, raw := testutil.FreeAddr(t), testutil.FreeAddr(t)
	file := filepath.Join(dir, "sluice.toml")
	src := lbConfig(dir, web, raw, set)
	os.WriteFile(file, []byte(src), 0o644)
	l := startLB(t, binary, file, filepath.Join(dir, "ctl.sock"))
	l.reload(strings.Replace(src, "[global]\n", "[global]\nlog_target = \"syslog\"\nlog_syslog_address = \"unixgram:"+sock+
		"\"\nlog_syslog_facility = \"local3\"\nlog_syslog_tag = \"sltest\"\n", 1))
	st := l.status()
	freshReachesSet(t, web, raw, "a")

	// local3 is facility 19: PRI = 19*8 + severity (6 info, 4 warning).
	want := map[string]bool{"reloaded": false, "worker serving": false}
	deadline := time.After(20 * time.Second)
	for !want["reloaded"] || !want["worker serving"] {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatal("syslog socket closed")
			}
			m := syslogLine.FindStringSubmatch(strings.TrimSuffix(line, "\n"))
			if m == nil {
				t.Fatalf("not an RFC 3164 line from tag sltest: %q", line)
			}
			pri, _ := strconv.Atoi(m[1])
			if pri>>3 != 19 {
				t.Errorf("facility %d, want 19 (local3): %q", pri>>3, line)
			}
			body := m[3]
			if strings.Contains(body, "time=") {
				t.Errorf("the body repeats the time the header carries: %q", line)
			}
			for msg := range want {
				if strings.Contains(body, "msg=\""+msg+"\"") || strings.Contains(body, "msg="+msg+" ") {
					want[msg] = true
					if pri&7 != 6 {
						t.Errorf("severity %d for an info line, want 6: %q", pri&7, line)
					}
					pid := strconv.Itoa(st.PID)
					if msg == "worker serving" {
						pid = strconv.Itoa(st.WorkerPID)
					}
					if m[2] != pid {
						t.Errorf("%q came from pid %s, want %s", msg, m[2], pid)
					}
				}
			}
		case <-deadline:
			t.Fatalf("within 20s, syslog got these of %v; stderr:\n%s", want, l.logs.String())
		}
	}
	// Once moved, the new worker writes nothing more to stderr.
	if s := l.logs.String(); strings.Contains(s, "worker=2") {
		t.Errorf("the new worker logged to stderr:\n%s", s)
	}
}
