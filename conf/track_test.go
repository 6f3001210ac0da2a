package conf_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sluice/conf"
)

// TestTrackFileKey: global.track_file is resolved beside the configuration
// like the other paths, its directory must exist, and stop_grace is a
// bounded duration; each problem names file, line and key.
func TestTrackFileKey(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "sluice.toml")
	base := "[frontend.f]\nbind = [\"127.0.0.1:0\"]\ndefault_backend = \"b\"\n[[backend.b.server]]\naddress = \"127.0.0.1:1\"\n"
	cfg, err := conf.Parse(file, []byte("[global]\ntrack_file = \"node.track\"\nstop_grace = \"2s\"\n"+base))
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "node.track"); cfg.Global.TrackFile != want {
		t.Errorf("track_file %q, want %q (beside the configuration)", cfg.Global.TrackFile, want)
	}
	if cfg.Global.StopGrace.String() != "2s" {
		t.Errorf("stop_grace %v, want 2s", cfg.Global.StopGrace)
	}
	os.Mkdir(filepath.Join(dir, "adir"), 0o755)
	os.Mkdir(filepath.Join(dir, "run"), 0o755)
	for _, tc := range []struct {
		desc, lines string
		want        want
	}{
		{"missing directory", "track_file = \"/nonexistent/sluice/node.track\"", want{2, "global.track_file", "does not exist: create it"}},
		{"a directory", "track_file = \"adir\"", want{2, "global.track_file", "is a directory"}},
		{"empty", "track_file = \"\"", want{2, "global.track_file", "is empty"}},
		{"grace too long", "stop_grace = \"5m\"", want{2, "global.stop_grace", "longer than 1m0s"}},
		{"grace not a duration", "stop_grace = \"soon\"", want{2, "global.stop_grace", "not a duration"}},
		// The master renames its file over the path: a pid file saying 0
		// (kill $(cat pid) is kill 0, the caller's process group) or a
		// control socket replaced by a file (reload and stop cannot reach
		// the master) must be refused before they happen.
		{"the pid file", "pid_file = \"run/s.pid\"\ntrack_file = \"run/s.pid\"", want{3, "global.track_file", "is also global.pid_file"}},
		{"the control socket", "control_socket = \"s.sock\"\ntrack_file = \"s.sock\"", want{3, "global.track_file", "is also global.control_socket"}},
		{"the default control socket", "pid_file = \"run/s.pid\"\ntrack_file = \"run/sluice.sock\"", want{3, "global.track_file", "is also global.control_socket"}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			_, err := conf.Parse(file, []byte("[global]\n"+tc.lines+"\n"+base))
			errs, ok := err.(conf.Errors)
			if !ok {
				t.Fatalf("got %v, want conf.Errors", err)
			}
			if len(errs) != 1 || errs[0].File != file || errs[0].Line != tc.want.line || errs[0].Key != tc.want.key || !strings.Contains(errs[0].Msg, tc.want.msg) {
				t.Errorf("got %v, want one problem %s:%d: %s: …%s…", errs, file, tc.want.line, tc.want.key, tc.want.msg)
			}
		})
	}
}
