package main

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"sluice/conf"
)

// cmdRun starts the master (see master.go), or resumes one after a binary
// upgrade.
func cmdRun(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("f", "/etc/sluice/sluice.toml", "configuration file")
	debug := fs.Bool("debug", false, "log at debug level")
	takeover := fs.String("x", "", "take the listening sockets over from the master on this control socket")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	level := slog.LevelInfo
	if *debug {
		level = slog.LevelDebug
	}
	// Signals are caught before anything else so that a stop or reload that
	// arrives during start-up is not lost.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGHUP, syscall.SIGUSR2)
	m := &master{
		log:    newLogger(stderr, level).With("process", "master"),
		file:   *file,
		debug:  *debug,
		old:    map[*worker]bool{},
		events: make(chan any, 64),
	}
	if exe, err := os.Executable(); err == nil {
		m.exe = exe
	} else {
		m.exe = os.Args[0]
	}
	if fd := os.Getenv(envUpgradeFD); fd != "" {
		return resumeMaster(m, fd, sigs)
	}
	src, err := os.ReadFile(*file)
	var cfg *conf.Config
	if err == nil {
		cfg, err = conf.Parse(*file, src)
	}
	if err != nil {
		fmt.Fprintf(stderr, "sluice: configuration refused:\n%v\n", err)
		return 1
	}
	return runMaster(m, cfg, src, *takeover, sigs)
}
