package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"

	"sluice/conf"
	"sluice/engine"
	"sluice/internal/fdlimit"
	"sluice/supervisor"
)

func cmdCheck(args []string, stdout, stderr io.Writer) int {
	flags := flagSet("check", stderr)
	file := flags.String("f", defaultConfig, "configuration file")
	live := flags.Bool("live", false, "also check that the running sluice serves (for keepalived's vrrp_script): exit 1 with the reason when not")
	if code, ok := parseFlags(flags, args); !ok {
		return code
	}
	cfg, err := conf.Load(*file)
	if err != nil {
		var errs conf.Errors
		var pe *fs.PathError
		if !flagGiven(flags, "f") && errors.As(err, &pe) {
			fmt.Fprintf(stderr, "sluice check: no -f FILE given and the default %s cannot be read (%v); name the file with -f FILE\n", *file, pe.Err)
			return 1
		}
		if *live {
			// A file being edited must not move the VIP away from a node
			// that serves: the running master answers for the
			// configuration it runs.
			if path, perr := supervisor.ControlPathOf(*file); perr == nil && path != "" && supervisor.CheckLiveSocket(path) == nil {
				fmt.Fprintf(stderr, "%s: warning: the file does not load (%v); the master on %s runs its last good configuration and serves\n", *file, err, path)
				fmt.Fprintf(stdout, "%s: live\n", *file)
				return 0
			}
		}
		if errors.As(err, &errs) {
			fmt.Fprintf(stderr, "%s: %d problem(s):\n", *file, len(errs))
			for _, p := range errs {
				fmt.Fprintln(stderr, "  "+p.Error())
			}
		} else {
			fmt.Fprintln(stderr, err)
		}
		return 1
	}
	if *live {
		if err := supervisor.CheckLive(cfg); err != nil {
			fmt.Fprintf(stderr, "%s: not live: %v\n", *file, err)
			return 1
		}
		fmt.Fprintf(stdout, "%s: live\n", *file)
		return 0
	}
	// Reached as run reaches it (not for --live: the running sluice did).
	if err := supervisor.CheckLogging(cfg.Global.Logging); err != nil {
		fmt.Fprintf(stderr, "%s: 1 problem(s):\n  %s: %v\n", *file, *file, err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: valid (%d frontends, %d backends)\n", *file, len(cfg.Frontends), len(cfg.Backends))
	for _, w := range cfg.Warnings {
		fmt.Fprintf(stdout, "warning: %s\n", w.Error())
	}
	// Not an error (the limit may differ where it runs), but worth knowing.
	_, budget := engine.FitLimits(cfg, fdlimit.Limit())
	for _, msg := range budget.Warn {
		fmt.Fprintf(stdout, "%s: warning: %s (here)\n", *file, msg)
	}
	return 0
}

// flagGiven reports whether the command line set flag name.
func flagGiven(fs *flag.FlagSet, name string) bool {
	given := false
	fs.Visit(func(f *flag.Flag) { given = given || f.Name == name })
	return given
}
