package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"sluice/conf"
	"sluice/internal/engine"
)

func cmdRun(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("f", "/etc/sluice/sluice.toml", "configuration file")
	debug := fs.Bool("debug", false, "log at debug level")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	level := slog.LevelInfo
	if *debug {
		level = slog.LevelDebug
	}
	log := newLogger(stderr, level)
	cfg, err := conf.Load(*file)
	if err != nil {
		fmt.Fprintf(stderr, "sluice: configuration refused:\n%v\n", err)
		return 1
	}
	// Signals are caught before binding so that a stop that arrives during
	// start-up is not lost.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT)
	eng, err := engine.Start(cfg, nil, log)
	if err != nil {
		log.Error("start failed", "err", err)
		return 1
	}
	if cfg.Global.PIDFile != "" {
		if err := os.WriteFile(cfg.Global.PIDFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
			log.Warn("cannot write pid file", "path", cfg.Global.PIDFile, "err", err)
		}
		defer os.Remove(cfg.Global.PIDFile)
	}
	for k := range eng.Sockets {
		log.Info("listening", "socket", k.String())
	}
	log.Info("sluice started", "version", Version, "config", *file, "pid", os.Getpid())

	sig := <-sigs
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Global.HardStopAfter)
	if sig == syscall.SIGQUIT {
		cancel() // stop at once
	}
	defer cancel()
	log.Info("stopping: no new connections, draining open ones", "signal", sig.String(), "hard_stop_after", cfg.Global.HardStopAfter)
	go func() {
		// A second signal cuts the drain short.
		<-sigs
		cancel()
	}()
	if cut := eng.Shutdown(ctx); cut > 0 {
		log.Warn("hard stop: connections cut", "count", cut)
	}
	log.Info("sluice stopped")
	return 0
}
