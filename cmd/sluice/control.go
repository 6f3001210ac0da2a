package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"sluice/supervisor"
)

// cmdControl runs the client commands that talk to a running master over
// its control socket: reload, upgrade, stop and control (raw commands).
func cmdControl(name string, args []string, stdout, stderr io.Writer) int {
	fs := flagSet(name, stderr)
	file := fs.String("f", defaultConfig, "configuration file (to find the control socket)")
	sock := fs.String("S", "", "control socket (default: global.control_socket of -f)")
	timeout := fs.Duration("timeout", 2*time.Minute, "how long to wait for the outcome")
	drain := new(bool)
	if name == "stop" {
		drain = fs.Bool("drain", false, "let open connections finish (up to global.hard_stop_after)")
	}
	diff, dry := new(bool), new(bool)
	if name == "reload" {
		diff = fs.Bool("diff", false, "first print what the reload changes, then reload")
		dry = fs.Bool("n", false, "print what a reload would change, and do not reload")
		fs.BoolVar(dry, "dry-run", false, "same as -n")
	}
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	path := *sock
	if path == "" {
		p, err := supervisor.ControlPathOf(*file)
		if err != nil {
			fmt.Fprintf(stderr, "sluice %s: %v\n", name, err)
			return 1
		}
		path = p
	}
	if (name == "reload" || name == "upgrade") && flagGiven(fs, "f") {
		// A reload re-reads the master's own file: naming another one must
		// not look like checking or applying it.
		if code := sameConfig(name, path, *file, *timeout, stderr); code != 0 {
			return code
		}
	}
	if name == "reload" && (*diff || *dry) {
		if code := printDiff(path, *timeout, stdout, stderr); code != 0 || *dry {
			return code
		}
	}
	req := map[string]any{"cmd": name}
	switch name {
	case "stop":
		req["drain"] = *drain
	case "control":
		if fs.NArg() == 0 {
			fmt.Fprintln(stderr, "usage: sluice control [-S SOCKET | -f FILE] COMMAND [key=value ...]")
			return 2
		}
		req["cmd"] = fs.Arg(0)
		for _, kv := range fs.Args()[1:] {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				fmt.Fprintf(stderr, "sluice control: %q is not key=value\n", kv)
				return 2
			}
			req[k] = ctlValue(v)
		}
	}
	reply, raw, err := supervisor.Control(path, req, *timeout)
	if err != nil {
		fmt.Fprintf(stderr, "sluice %s: %v\n", name, err)
		return 1
	}
	if !reply.OK {
		fmt.Fprintf(stderr, "sluice %s failed:\n%s\n", name, reply.Error)
		return 1
	}
	switch name {
	case "reload", "upgrade":
		fmt.Fprintf(stdout, "%s done: master %d, worker %d (generation %d), version %s\n", name, reply.PID, reply.WorkerPID, reply.Generation, reply.Version)
	case "stop":
		fmt.Fprintf(stdout, "master %d stopped\n", reply.PID)
	default:
		stdout.Write(raw)
	}
	return 0
}

// sameConfig returns 0 when the master on path runs file, else prints why
// not and returns 1.
func sameConfig(name, path, file string, timeout time.Duration, stderr io.Writer) int {
	r, _, err := supervisor.Control(path, map[string]any{"cmd": "status"}, timeout)
	if err != nil {
		fmt.Fprintf(stderr, "sluice %s: %v\n", name, err)
		return 1
	}
	if r.Config == "" {
		return 0
	}
	a, errA := os.Stat(file)
	b, errB := os.Stat(r.Config)
	if errA == nil && errB == nil && os.SameFile(a, b) {
		return 0
	}
	if abs, err := filepath.Abs(file); errA != nil && err == nil && abs == r.Config {
		return 0 // the master's file, gone or unreadable: the reload says so
	}
	fmt.Fprintf(stderr, "sluice %s: the master on %s runs %s, not %s: a reload re-reads the file the master was started with; edit that file (or start a master on %s)\n",
		name, path, r.Config, file, file)
	return 1
}

// printDiff prints what reloading the master on path would change.
func printDiff(path string, timeout time.Duration, stdout, stderr io.Writer) int {
	r, _, err := supervisor.Control(path, map[string]any{"cmd": "diff"}, timeout)
	if err != nil {
		fmt.Fprintf(stderr, "sluice reload: %v\n", err)
		return 1
	}
	if !r.OK {
		fmt.Fprintf(stderr, "sluice reload refused, nothing changed:\n%s\n", r.Error)
		return 1
	}
	if len(r.Changes) == 0 {
		fmt.Fprintf(stdout, "%s: no change from the running configuration\n", r.Config)
		return 0
	}
	plural := "s"
	if len(r.Changes) == 1 {
		plural = ""
	}
	fmt.Fprintf(stdout, "%s: %d change%s from the running configuration:\n", r.Config, len(r.Changes), plural)
	for _, c := range r.Changes {
		fmt.Fprintln(stdout, c)
	}
	return 0
}

// ctlValue turns "true", "false" and integers into JSON values.
func ctlValue(v string) any {
	if b, err := strconv.ParseBool(v); err == nil {
		return b
	}
	if n, err := strconv.Atoi(v); err == nil {
		return n
	}
	return v
}
