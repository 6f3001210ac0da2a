package main

import (
	"flag"
	"io"

	"sluice/supervisor"
)

// cmdRun starts the master (package supervisor), or resumes one after a
// binary upgrade.
func cmdRun(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("f", "/etc/sluice/sluice.toml", "configuration file")
	debug := fs.Bool("debug", false, "log at debug level")
	takeover := fs.String("x", "", "take the listening sockets over from the master on this control socket")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	return supervisor.RunMaster(supervisor.MasterOptions{File: *file, Debug: *debug, Takeover: *takeover}, stderr)
}
