package main

import (
	"io"

	"sluice/supervisor"
)

// cmdRun starts the master (package supervisor), or resumes one after a
// binary upgrade.
func cmdRun(args []string, stderr io.Writer) int {
	fs := flagSet("run", stderr)
	file := fs.String("f", defaultConfig, "configuration file")
	debug := fs.Bool("debug", false, "log at debug level")
	takeover := fs.String("x", "", "take the listening sockets over from the master on this control socket")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	return supervisor.RunMaster(supervisor.MasterOptions{File: *file, Debug: *debug, Takeover: *takeover}, stderr)
}
