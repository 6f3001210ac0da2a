// Command bench compares sluice with HAProxy on this machine: both sit in
// front of the same two loopback backends with the same settings, and wrk
// drives them in turn (A B A B) so that their ratio is measured side by side.
//
//	go run ./bench [-duration 10s] [-rounds 2] [-conns 50] [-out FILE]
//
// For each run it records wrk's req/s and p50/p99 latency, and, from /proc,
// the balancer's CPU seconds per 100k requests and its peak RSS.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"
)

type options struct {
	duration, warmup, pause time.Duration
	rounds, conns, threads  int
	h2conns, h2streams      int
	out, sluiceBin, modes   string
	keep                    bool
	idle, busy              int
}

func main() {
	var o options
	nBackends := flag.Int(backendFlag, 0, "internal: serve this many backends and print their addresses")
	nUDPBackends := flag.Int(udpBackendFlag, 0, "internal: serve this many UDP echo backends and print their addresses")
	nH2CBackends := flag.Int(h2cBackendFlag, 0, "internal: serve this many HTTP/2 cleartext backends and print their addresses")
	nTLSBackends := flag.Int(tlsBackendFlag, 0, "internal: serve this many HTTP/1.1-over-TLS backends (-"+tlsBackendCertFlag+", -"+tlsBackendKeyFlag+") and print their addresses")
	tlsCert := flag.String(tlsBackendCertFlag, "", "internal: certificate of the TLS backends")
	tlsKey := flag.String(tlsBackendKeyFlag, "", "internal: key of the TLS backends")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "length of each measured wrk run (whole seconds)")
	flag.DurationVar(&o.warmup, "warmup", time.Second, "unmeasured run per target and scenario before the first round (0: none)")
	flag.DurationVar(&o.pause, "pause", 500*time.Millisecond, "idle time between runs")
	flag.IntVar(&o.rounds, "rounds", 2, "how many times each target is measured per scenario")
	flag.IntVar(&o.conns, "conns", 50, "wrk connections (-c)")
	flag.IntVar(&o.threads, "threads", 2, "wrk and h2load threads (-t)")
	flag.IntVar(&o.h2conns, "h2conns", 32, "h2load connections (-c), modes h2, h2tls and h2be")
	flag.IntVar(&o.h2streams, "h2streams", 10, "h2load streams in flight per connection (-m), modes h2, h2tls and h2be")
	flag.StringVar(&o.out, "out", "", "also write the markdown table to this file")
	flag.StringVar(&o.sluiceBin, "sluice", "", "sluice binary to use instead of building ./cmd/sluice")
	flag.StringVar(&o.modes, "modes", "tcp,http,tls,h2,h2tls,tlsbe", "comma-separated balancer modes to measure: tcp, http, policy (http keep-alive with three rules and a rate limit), h2 (h2c driven by h2load), h2tls (HTTP/2 over TLS, h2load), h2be (h2c from h2load to h2c servers), tls (HTTPS frontend: HTTP/1.1 over TLS from wrk, keep-alive and conn-per-req, to the http servers), tlsbe (http keep-alive and conn-per-req to HTTP/1.1 servers over TLS, verified), udp")
	flag.BoolVar(&o.keep, "keep", false, "keep the temp dir (configs, logs)")
	flag.IntVar(&o.idle, "idle", 4000, "open this many connections through each tcp and http balancer after the rounds and report the memory they cost (0: skip)")
	flag.IntVar(&o.busy, "busy", 8000, "drive each http balancer (sluice, HAProxy) with this many keep-alive wrk connections for -duration after the rounds and report its peak memory (0: skip; at most 9000, the balancers' maxconn)")
	flag.Parse()
	if *nBackends > 0 {
		os.Exit(serveBackends(*nBackends))
	}
	if *nUDPBackends > 0 {
		os.Exit(serveUDPBackends(*nUDPBackends))
	}
	if *nTLSBackends > 0 {
		os.Exit(serveTLSBackends(*nTLSBackends, *tlsCert, *tlsKey))
	}
	if *nH2CBackends > 0 {
		os.Exit(serveH2CBackends(*nH2CBackends))
	}
	os.Exit(run(o))
}

func run(o options) int {
	if _, err := exec.LookPath("wrk"); err != nil && o.modes != "udp" {
		fmt.Println("wrk not installed: nothing to drive the load with, no benchmark run; apt-get install -y wrk")
		return 0
	}
	if o.busy > 9000 {
		fmt.Fprintln(os.Stderr, "bench: -busy is at most 9000: the balancers' maxconn (HAProxy's must stay below the descriptor limit)")
		return 2
	}
	if o.rounds < 1 || o.conns < 1 || o.threads < 1 || o.threads > o.conns || o.duration < time.Second || o.h2conns < 1 || o.h2streams < 1 {
		fmt.Fprintln(os.Stderr, "bench: need -rounds >= 1, -duration >= 1s, 1 <= -threads <= -conns, -h2conns and -h2streams >= 1")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	reg := &registry{}

	dir, err := os.MkdirTemp("", "sluice-bench-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	if o.keep {
		fmt.Fprintln(os.Stderr, "bench: configs and logs in", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	// Deferred after RemoveAll, so it runs first: children stop before their
	// configs and logs go.
	defer reg.stopAll()

	report, err := bench(ctx, o, reg, dir)
	if err != nil {
		if ctx.Err() != nil {
			fmt.Fprintln(os.Stderr, "bench: interrupted; stopping what was started")
			return 130
		}
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	fmt.Print(report)
	if o.out != "" {
		if err := os.WriteFile(o.out, []byte(report), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			return 1
		}
	}
	return 0
}

func bench(ctx context.Context, o options, reg *registry, dir string) (string, error) {
	bin := o.sluiceBin
	if bin == "" {
		var err error
		if bin, err = buildSluice(ctx, dir); err != nil {
			return "", err
		}
	}
	var modes []string
	for _, m := range strings.Split(o.modes, ",") {
		if m = strings.TrimSpace(m); m != "tcp" && m != "http" && m != "policy" && !isH2(m) && m != "udp" && m != "tls" && m != "tlsbe" {
			return "", fmt.Errorf("-modes: %q is not tcp, http, policy, h2, h2tls, h2be, tls, tlsbe or udp", m)
		}
		modes = append(modes, m)
	}
	var backends, udpBackends, h2cBackends []string
	var err error
	if slices.ContainsFunc(modes, func(m string) bool { return m != "udp" && m != "h2be" && m != "tlsbe" }) {
		if backends, err = startBackends(reg, backendFlag, 2, filepath.Join(dir, "backends.log")); err != nil {
			return "", err
		}
		logf("backends on %s", strings.Join(backends, ", "))
	}
	if slices.Contains(modes, "udp") {
		if udpBackends, err = startBackends(reg, udpBackendFlag, 2, filepath.Join(dir, "udp-backends.log")); err != nil {
			return "", err
		}
		logf("udp backends on %s", strings.Join(udpBackends, ", "))
	}
	if slices.Contains(modes, "h2be") {
		if h2cBackends, err = startBackends(reg, h2cBackendFlag, 2, filepath.Join(dir, "h2c-backends.log")); err != nil {
			return "", err
		}
		logf("h2c backends on %s", strings.Join(h2cBackends, ", "))
	}
	var cert tlsFiles
	if slices.Contains(modes, "h2tls") || slices.Contains(modes, "tls") || slices.Contains(modes, "tlsbe") {
		if cert, err = writeCert(dir); err != nil {
			return "", err
		}
	}
	var tlsBackends []string
	if slices.Contains(modes, "tlsbe") {
		if tlsBackends, err = startBackends(reg, tlsBackendFlag, 2, filepath.Join(dir, "tls-backends.log"),
			"-"+tlsBackendCertFlag+"="+cert.Cert, "-"+tlsBackendKeyFlag+"="+cert.Key); err != nil {
			return "", err
		}
		logf("TLS backends on %s", strings.Join(tlsBackends, ", "))
	}
	var notes []string
	type live struct {
		Target
		*Running
		env Env
	}
	var lives []live
	skipped := map[string]bool{}
	for _, t := range targets(modes, bin) {
		if t.Need != "" {
			if _, err := exec.LookPath(t.Need); err != nil {
				if !skipped[t.Balancer] {
					msg := fmt.Sprintf("%s not installed: skipping its rows; %s", t.Need, t.Install)
					fmt.Fprintln(os.Stderr, msg)
					notes = append(notes, msg)
					skipped[t.Balancer] = true
				}
				continue
			}
		}
		bs := backends
		switch t.Mode {
		case "udp":
			bs = udpBackends
		case "h2be":
			bs = h2cBackends
		case "tlsbe":
			bs = tlsBackends
		}
		env := Env{Dir: dir, Backends: bs, TLS: cert, reg: reg, Settings: Settings{
			Mode: t.Mode, MaxConn: 9000, Threads: runtime.NumCPU(),
			TimeoutConnect: 5 * time.Second, TimeoutClient: 50 * time.Second, TimeoutServer: 50 * time.Second,
			TimeoutHTTPReq: 10 * time.Second, Retries: 2,
		}}
		r, err := t.Start(ctx, env)
		if err != nil {
			return "", err
		}
		defer r.Stop()
		logf("%s on %s (pid %d)", t.Name(), r.Addr, r.PID)
		lives = append(lives, live{t, r, env})
	}

	wo := wrkOpts{Threads: o.threads, Conns: o.conns, Duration: o.duration, H2Conns: o.h2conns, H2Streams: o.h2streams}
	if o.warmup > 0 {
		ww := wo
		ww.Duration = o.warmup
		for _, l := range lives {
			for _, sc := range scenariosFor(l.Mode) {
				if _, out, err := drive(ctx, reg, ww, sc, l.Mode, l.Addr); err != nil {
					return "", fmt.Errorf("warm-up of %s: %v\n%s", l.Name(), err, out)
				}
			}
		}
	}

	var res results
	for round := 1; round <= o.rounds; round++ {
		for _, sc := range allScenarios {
			for _, l := range lives {
				if !sc.fits(l.Mode) {
					continue
				}
				if err := sleep(ctx, o.pause); err != nil {
					return "", err
				}
				s, err := measure(ctx, reg, wo, sc, l.Mode, l.Running)
				if err != nil {
					return "", fmt.Errorf("%s, %s: %v", sc.Name, l.Name(), err)
				}
				logf("round %d/%d %-12s %-12s %8.0f req/s  p50 %s  p99 %s  %.2f CPU s/100k  %.1f MiB  %d errors",
					round, o.rounds, sc.Name, l.Name(), s.ReqPerSec, ms(s.P50), ms(s.P99), s.CPUPer100k, s.PeakRSSMiB, s.Errors)
				res.add(rowKey{sc.Name, l.Mode, l.Balancer}, s)
			}
		}
	}
	out := res.table(header(o, notes))
	if o.idle > 0 {
		var rows []idleRow
		for _, l := range lives {
			if l.Mode != "tcp" && l.Mode != "http" {
				continue
			}
			if err := sleep(ctx, o.pause); err != nil {
				return "", err
			}
			// A fresh instance: after the rounds, a Go heap has room that
			// new connections reuse without growing. The measured one
			// stops first (nginx's files are per mode, not per instance).
			l.Stop()
			fresh, err := l.Start(ctx, l.env)
			if err != nil {
				return "", err
			}
			r, err := idleMemory(ctx, fresh.Addr, fresh.PID, o.idle)
			fresh.Stop()
			if err != nil {
				return "", fmt.Errorf("open connections, %s: %v", l.Name(), err)
			}
			r.Mode, r.Balancer = l.Mode, l.Balancer
			logf("open connections %-12s %d: RSS %.1f -> %.1f MiB, %.1f KiB each", l.Name(), r.Conns, r.BeforeMiB, r.AfterMiB, r.KiBPerConn)
			rows = append(rows, r)
		}
		if len(rows) > 0 {
			out += "\nMemory of open connections: each balancer's resident memory (all its processes) before and while holding the connections, each with one keep-alive request answered (so a server connection is behind it, or pooled for http).\n\n" + idleTable(rows)
		}
	}
	if o.busy > 0 {
		var rows []busyRow
		bo := wo
		bo.Conns = o.busy
		for _, l := range lives {
			// nginx's worker_connections (maxconn per worker) is too few
			// for both sides of as many clients: the row compares with
			// HAProxy.
			if l.Mode != "http" || l.Balancer == "nginx" {
				continue
			}
			if err := sleep(ctx, o.pause); err != nil {
				return "", err
			}
			// A fresh instance: its peak is what these clients cost.
			l.Stop()
			fresh, err := l.Start(ctx, l.env)
			if err != nil {
				return "", err
			}
			s, err := measure(ctx, reg, bo, allScenarios[0], l.Mode, fresh)
			fresh.Stop()
			if err != nil {
				return "", fmt.Errorf("busy clients, %s: %v", l.Name(), err)
			}
			logf("busy clients %-12s %d: %.0f req/s, peak %.1f MiB, %d errors", l.Name(), o.busy, s.ReqPerSec, s.PeakRSSMiB, s.Errors)
			rows = append(rows, busyRow{Balancer: l.Balancer, Conns: o.busy, sample: s})
		}
		if len(rows) > 0 {
			out += "\nMemory of busy keep-alive clients: a fresh balancer driven by wrk with that many keep-alive connections for the run's duration; peak resident memory of its processes.\n\n" + busyTable(rows)
		}
	}
	return out, nil
}

// measure drives one balancer with one scenario and reads its CPU time and
// peak RSS around the run.
func measure(ctx context.Context, reg *registry, wo wrkOpts, sc Scenario, mode string, r *Running) (sample, error) {
	resetPeakRSS(r.PID)
	before := readUsage(r.PID)
	w, out, err := drive(ctx, reg, wo, sc, mode, r.Addr)
	after := readUsage(r.PID)
	if err != nil {
		return sample{}, fmt.Errorf("%v\n%s", err, out)
	}
	if w.Requests == 0 {
		return sample{}, fmt.Errorf("no request completed:\n%s", out)
	}
	cpu := float64(after.cpuTicks-before.cpuTicks) / clkTck
	return sample{
		wrkResult:  w,
		CPUPer100k: cpu / float64(w.Requests) * 1e5,
		PeakRSSMiB: float64(after.hwmKiB) / 1024,
	}, nil
}

func buildSluice(ctx context.Context, dir string) (string, error) {
	gomod, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	root := filepath.Dir(strings.TrimSpace(string(gomod)))
	if err != nil || root == "." || root == "" {
		return "", fmt.Errorf("cannot find the module root (run from inside the repository): %v", err)
	}
	bin := filepath.Join(dir, "sluice")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/sluice")
	cmd.Dir = root
	t0 := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building sluice: %v\n%s", err, out)
	}
	logf("built sluice in %s", time.Since(t0).Round(100*time.Millisecond))
	return bin, nil
}

// header describes the machine and the load, so a saved table can be read
// on its own.
func header(o options, notes []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "## sluice vs HAProxy (and nginx for udp), %s\n\n", time.Now().Format("2006-01-02 15:04"))
	fmt.Fprintf(&b, "- machine: %d CPUs (%s), shared by wrk, the balancer and the backends\n", runtime.NumCPU(), cpuModel())
	fmt.Fprintf(&b, "- load: `wrk -t%d -c%d -d%s --latency`; rounds: %d, interleaved A B A B; warm-up: %s per target and scenario\n",
		o.threads, o.conns, o.duration, o.rounds, o.warmup)
	if slices.ContainsFunc(strings.Split(o.modes, ","), func(m string) bool { return isH2(strings.TrimSpace(m)) }) {
		fmt.Fprintf(&b, "- h2 (h2c, prior knowledge) and h2tls (HTTP/2 over TLS 1.3, ALPN h2, ECDSA P-256 certificate): `h2load -t%d -c%d -m%d -D%s`\n",
			min(o.threads, o.h2conns), o.h2conns, o.h2streams, o.duration)
	}
	if strings.Contains(o.modes, "h2be") {
		b.WriteString("- h2be: h2c from h2load as h2, to HTTP/2 cleartext servers (x/net/http2's server, prior knowledge): sluice `proto = \"h2c\"`, HAProxy `server ... proto h2`; nginx has no HTTP/2 to servers but grpc_pass, so no row\n")
	}
	if slices.Contains(strings.Split(strings.ReplaceAll(o.modes, " ", ""), ","), "tls") {
		b.WriteString("- tls: `wrk` over https:// (HTTP/1.1 over TLS 1.3, no ALPN, the ECDSA P-256 certificate of h2tls) to the balancer, plain HTTP/1.1 to the http servers: sluice `[[frontend.bench.tls]]`, HAProxy `bind ... ssl crt`, nginx `listen ... ssl` with `ssl_protocols TLSv1.2 TLSv1.3`; otherwise each one's default TLS settings, session tickets on; wrk reuses its SSL object per connection across reconnects and offers the last ticket, so conn-per-req is a resumed TLS 1.3 handshake (PSK with an X25519 exchange, no certificate or signature) per request\n")
	}
	if strings.Contains(o.modes, "tlsbe") {
		b.WriteString("- tlsbe: wrk over plain HTTP/1.1 to the balancer, HTTP/1.1 over TLS (Go's crypto/tls servers, ECDSA P-256 certificate) to the servers, verified: sluice `[backend.app.tls] ca_file`, HAProxy `server ... ssl verify required ca-file`; both reuse TLS sessions; no nginx row\n")
	}
	fmt.Fprintf(&b, "- peers: %s; %s; %s\n", firstLine("haproxy", "-v"), firstLine("nginx", "-v"), firstLine("wrk", "-v"))
	if strings.Contains(o.modes, "udp") {
		fmt.Fprintf(&b, "- udp: bench's own driver, %d clients each sending a %d-byte datagram and waiting for its echo (lost after 500 ms, counted as an error); one flow per datagram on both balancers (sluice `responses = 1`, nginx `proxy_responses 1`); \"req/s\" is replies/s\n", o.conns, udpPayload)
	}
	b.WriteString("- req/s, latencies and CPU are means over rounds; CPU is the balancer's user+system time; peak RSS is the largest per-run VmHWM\n")
	for _, n := range notes {
		fmt.Fprintf(&b, "- %s\n", n)
	}
	b.WriteString("\n")
	return b.String()
}

func firstLine(name string, args ...string) string {
	out, _ := exec.Command(name, args...).CombinedOutput() // wrk -v exits 1
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	if line == "" {
		return name + " (not installed)"
	}
	if i := strings.Index(line, " - "); i > 0 {
		line = line[:i]
	}
	if i := strings.Index(line, " Copyright"); i > 0 {
		line = line[:i]
	}
	return line
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown model"
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}
