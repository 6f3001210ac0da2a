package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"sluice/conf"
	"sluice/engine"
)

// cmdDemo starts three small HTTP servers in this process and a TCP frontend
// in front of them, so a newcomer sees balancing work in seconds.
func cmdDemo(args []string, stdout, stderr io.Writer) int {
	fs := flagSet("demo", stderr)
	listen := fs.String("listen", "127.0.0.1:8080", "address of the demo frontend")
	statsAt := fs.String("stats", "127.0.0.1:8404", "address of the stats page")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	log := newLogger(stderr, slog.LevelInfo)

	var servers strings.Builder
	names := []string{"demo-1", "demo-2", "demo-3"}
	for i, name := range names {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			fmt.Fprintln(stderr, "demo: cannot start a backend:", err)
			return 1
		}
		defer ln.Close()
		go http.Serve(ln, demoHandler(name))
		w := 1
		if i == 0 {
			w = 2
		}
		fmt.Fprintf(&servers, "\n[[backend.demo.server]]\nname = %q\naddress = %q\nweight = %d\n", name, ln.Addr().String(), w)
	}
	src := fmt.Sprintf(`[global]
hard_stop_after = "5s"
maxconn = 1000

[stats]
bind = %q

[frontend.web]
mode = "tcp"
bind = [%q]
default_backend = "demo"

[backend.demo]
balance = "roundrobin"
%s`, *statsAt, *listen, servers.String())
	cfg, err := conf.Parse("demo.toml", []byte(src))
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	eng, err := engine.Start(cfg, nil, log)
	if err != nil {
		fmt.Fprintf(stderr, "demo: %v\n(is something else using %s or %s? try: sluice demo -listen 127.0.0.1:9080 -stats 127.0.0.1:9404)\n", err, *listen, *statsAt)
		return 1
	}
	fmt.Fprintf(stdout, `
sluice demo is running. Its configuration:
----------------------------------------------------------------
%s----------------------------------------------------------------
Try it (each curl is a new TCP connection, balanced by weight 2:1:1):

    for i in 1 2 3 4 5 6 7 8; do curl -s http://%s/; done

You will see demo-1 twice as often as demo-2 and demo-3, interleaved
(smooth weighted round-robin): demo-1, demo-2, demo-3, demo-1, and again.

The stats page (sessions, bytes, server states) is at http://%s/
and Prometheus metrics at http://%s/metrics. Press Ctrl-C to stop.
`, src, *listen, *statsAt, *statsAt)

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	<-sigs
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	eng.Shutdown(ctx)
	return 0
}

func demoHandler(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from %s (you are %s)\n", name, r.RemoteAddr)
	})
}
