package main

import (
	"errors"
	"flag"
	"fmt"
	"io"

	"sluice/conf"
)

func cmdCheck(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("f", "/etc/sluice/sluice.toml", "configuration file")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := conf.Load(*file)
	if err != nil {
		var errs conf.Errors
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
	fmt.Fprintf(stdout, "%s: valid (%d frontends, %d backends)\n", *file, len(cfg.Frontends), len(cfg.Backends))
	return 0
}
