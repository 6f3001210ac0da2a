// Command sluice is an HAProxy-style layer-4/layer-7 load balancer.
//
//	sluice check -f sluice.toml   validate a configuration, bind nothing
//	sluice run -f sluice.toml     run in the foreground (master and worker)
//	sluice reload -f sluice.toml  reload a running master, show the outcome
//	sluice demo                   sluice in front of three demo backends
package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"

	"sluice/engine"
	"sluice/supervisor"
)

// Version is set at build time with -ldflags "-X main.Version=...".
var Version = "dev"

const usage = `usage: sluice <command> [flags]

commands:
  run -f FILE [-x SOCKET]
                   run the load balancer (a master and its worker) with the
                   configuration in FILE; -x takes the listening sockets over
                   from the master on control socket SOCKET
  reload [--diff] [-n]
                   reload the running master's configuration; prints errors
                   (--diff: first print what changes; -n/--dry-run: print
                   it and do not reload)
  upgrade          re-execute the master's binary (same PID), then reload
  stop [-drain]    stop the master (-drain: let connections finish first)
  control CMD [k=v..]
                   send a raw control-socket command to the master (status,
                   show-servers, set-server-state backend=B server=S
                   admin=drain|maint|ready up=true|false weight=N) and print
                   the JSON reply (reload, upgrade, stop, control take -f FILE
                   or -S SOCKET)
  check -f FILE    validate FILE without binding anything (exit 1 on errors)
  check --live -f FILE
                   exit 0 when the sluice running FILE serves, else 1 with the reason
                   (for keepalived's vrrp_script)
  demo             run sluice in front of three demo backends and show how to try it
  ctl -f FILE CMD  talk to a running sluice through its stats listener:
                     show stat | show servers | show sticky BACKEND
                     set state BACKEND/SERVER ready|drain|maint
                     set weight BACKEND/SERVER N
  version          print the version

sluice help COMMAND (or sluice COMMAND -h) shows a command's flags.
`

func main() {
	os.Exit(Main(os.Args[1:], os.Stdout, os.Stderr))
}

// Main runs a sub-command and returns the process exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	engine.Version = Version
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "run":
		return cmdRun(args[1:], stderr)
	case "reload", "upgrade", "stop", "control":
		return cmdControl(args[0], args[1:], stdout, stderr)
	case supervisor.WorkerCommand:
		return supervisor.RunWorker(stderr)
	case "check":
		return cmdCheck(args[1:], stdout, stderr)
	case "demo":
		return cmdDemo(args[1:], stdout, stderr)
	case "ctl":
		return cmdCtl(args[1:], stdout, stderr)
	case "version", "-v", "--version":
		fmt.Fprintln(stdout, "sluice", Version)
		return 0
	case "help", "-h", "--help":
		return cmdHelp(args[1:], stdout, stderr)
	default:
		fmt.Fprintf(stderr, "sluice: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
}

func newLogger(w io.Writer, level slog.Level) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}
