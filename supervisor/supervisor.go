// Package supervisor is sluice's process model: the master that owns the
// listening sockets and the control socket and runs one worker process
// (plus old ones draining after a reload), the worker side of that pair,
// binary upgrades in place, and the clients that talk to a running master
// (the control socket, `check --live`). cmd/sluice parses flags and calls
// the exported functions here; the worker's serving engine is
// engine.
package supervisor

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"sluice/conf"
)

// MasterOptions is what `sluice run` passes to RunMaster.
type MasterOptions struct {
	File     string // the configuration file
	Debug    bool   // log at debug level (the workers too)
	Takeover string // control socket of a master whose sockets to take over (-x), or ""
}

// RunMaster starts a master (or, when this process is the re-executed
// image of an upgrade, resumes one) and runs it until it stops. It logs to
// stderr and returns the process exit code.
func RunMaster(opt MasterOptions, stderr io.Writer) int {
	level := slog.LevelInfo
	if opt.Debug {
		level = slog.LevelDebug
	}
	// Signals are caught before anything else so that a stop or reload that
	// arrives during start-up is not lost.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGHUP, syscall.SIGUSR2)
	m := &master{
		logs:   newLogSwitch(newLogger(stderr, level).Handler()),
		stderr: stderr,
		level:  level,
		file:   absPath(opt.File),
		debug:  opt.Debug,
		old:    map[*worker]bool{},
		events: make(chan any, 64),
	}
	m.log = slog.New(m.logs.handler()).With("process", "master")
	slog.SetDefault(m.log)
	if exe, err := os.Executable(); err == nil {
		m.exe = exe
	} else {
		m.exe = os.Args[0]
	}
	if fd := os.Getenv(envUpgradeFD); fd != "" {
		return resumeMaster(m, fd, sigs)
	}
	src, err := os.ReadFile(opt.File)
	var cfg *conf.Config
	if err == nil {
		cfg, err = conf.Parse(opt.File, src)
	}
	if err != nil {
		fmt.Fprintf(stderr, "sluice: configuration refused:\n%v\n", err)
		return 1
	}
	if err := m.applyLogging(cfg); err != nil {
		fmt.Fprintf(stderr, "sluice: %v\n", err)
		return 1
	}
	return runMaster(m, cfg, src, opt.Takeover, sigs)
}

func newLogger(w io.Writer, level slog.Level) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

// Dialable turns a listening address into one to connect to: a wildcard
// host becomes loopback.
func Dialable(bind string) string {
	host, port, err := net.SplitHostPort(bind)
	if err != nil {
		return bind
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return net.JoinHostPort(host, port)
}

// absPath is p made absolute: the master reports its file (status, diff,
// logs) to clients that run in other directories.
func absPath(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}
