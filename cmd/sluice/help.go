package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
)

// defaultConfig is the file a command reads without -f.
var defaultConfig = "/etc/sluice/sluice.toml"

// commandUsage is each documented sub-command's synopsis and what it does;
// `sluice help CMD` and `sluice CMD -h` print it with the command's flags.
var commandUsage = map[string][2]string{
	"run":     {"run [-f FILE] [-x SOCKET] [-debug]", "Run the load balancer (a master and its worker) in the foreground."},
	"reload":  {"reload [-f FILE | -S SOCKET] [-timeout D] [--diff | -n]", "Reload the running master's configuration; prints the errors of a refused file. --diff first prints what the reload changes; -n (--dry-run) only prints it."},
	"upgrade": {"upgrade [-f FILE | -S SOCKET] [-timeout D]", "Re-execute the master's binary (same PID), then reload."},
	"stop":    {"stop [-drain] [-f FILE | -S SOCKET] [-timeout D]", "Stop the running master (-drain: let open connections finish first)."},
	"control": {"control [-f FILE | -S SOCKET] COMMAND [key=value ...]", "Send a raw control-socket command (status, show-servers, set-server-state) and print the JSON reply."},
	"check":   {"check [-f FILE] [-live]", "Validate FILE as run would (certificates, error pages, token and secret files, access logs), binding nothing; exit 1 on errors.\nWith -live: exit 0 when the sluice running FILE serves, else 1 with the reason (keepalived's vrrp_script)."},
	"demo":    {"demo [-listen ADDR] [-stats ADDR]", "Run sluice in front of three demo backends and show how to try it."},
}

// flagSet is the flag set of sub-command name: -h prints its own usage.
func flagSet(name string, w io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(w)
	fs.Usage = func() {
		u := commandUsage[name]
		fmt.Fprintf(w, "usage: sluice %s\n\n%s\n\nflags:\n", u[0], u[1])
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args into fs. When it returns false the command ends
// with code: 0 after -h (help was asked for), 2 on a bad flag.
func parseFlags(fs *flag.FlagSet, args []string) (code int, ok bool) {
	err := fs.Parse(args)
	switch {
	case err == nil:
		return 0, true
	case errors.Is(err, flag.ErrHelp):
		return 0, false
	}
	return 2, false
}

// cmdHelp prints the general usage, or one command's with its flags.
func cmdHelp(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, usage)
		return 0
	}
	if _, ok := commandUsage[args[0]]; !ok && args[0] != "ctl" {
		fmt.Fprintf(stderr, "sluice help: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	Main([]string{args[0], "-h"}, stdout, stdout)
	return 0
}
