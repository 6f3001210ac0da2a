package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Settings are what every balancer is configured with, so that each config
// generator renders the same numbers.
type Settings struct {
	Mode           string // "tcp", "http", "policy", "h2", "h2tls", "h2be", "tls", "tlsbe" or "udp"
	MaxConn        int
	Threads        int // HAProxy nbthread; sluice uses GOMAXPROCS, which defaults to the CPU count too
	TimeoutConnect time.Duration
	TimeoutClient  time.Duration
	TimeoutServer  time.Duration
	TimeoutHTTPReq time.Duration
	Retries        int
}

// Env is what a Target needs to start: a scratch dir, the backends, the settings.
type Env struct {
	Dir      string
	Backends []string
	TLS      tlsFiles // the certificate of modes h2tls and tls; of the servers' and their CA, mode tlsbe
	Settings
	reg *registry
}

// Running is a started balancer.
type Running struct {
	PID  int    // the process whose tree's CPU and RSS are measured
	Addr string // host:port that wrk drives
	Stop func()
}

// Target is one balancer in one mode: a row group of the table. Adding nginx
// or an HTTP-mode row is adding a Target.
type Target struct {
	Balancer string // "sluice", "haproxy", ...; ratios are taken against "haproxy"
	Mode     string // "tcp" | "http"
	// Need is the program that must be on PATH ("" when none), and Install
	// says how to get it.
	Need, Install string
	Start         func(ctx context.Context, env Env) (*Running, error)
}

func (t Target) Name() string { return t.Balancer + " " + t.Mode }

// targets lists every target for the requested modes, A B order.
func targets(modes []string, sluiceBin string) []Target {
	var out []Target
	for _, m := range modes {
		if m == "udp" {
			// HAProxy does not balance UDP; nginx's stream module does.
			out = append(out,
				Target{Balancer: "sluice", Mode: m, Start: func(ctx context.Context, env Env) (*Running, error) {
					return startSluice(ctx, env, sluiceBin)
				}},
				Target{Balancer: "nginx", Mode: m, Need: "nginx", Install: "apt-get install -y nginx libnginx-mod-stream", Start: startNginxUDP},
			)
			continue
		}
		if m == "h2be" || m == "policy" || m == "tlsbe" {
			// nginx proxies to HTTP/2 servers only with grpc_pass.
			out = append(out,
				Target{Balancer: "sluice", Mode: m, Start: func(ctx context.Context, env Env) (*Running, error) {
					return startSluice(ctx, env, sluiceBin)
				}},
				Target{Balancer: "haproxy", Mode: m, Need: "haproxy", Install: "apt-get install -y haproxy", Start: startHAProxy},
			)
			continue
		}
		out = append(out,
			Target{Balancer: "sluice", Mode: m, Start: func(ctx context.Context, env Env) (*Running, error) {
				return startSluice(ctx, env, sluiceBin)
			}},
			Target{Balancer: "haproxy", Mode: m, Need: "haproxy", Install: "apt-get install -y haproxy", Start: startHAProxy},
			Target{Balancer: "nginx", Mode: m, Need: "nginx", Install: "apt-get install -y nginx libnginx-mod-stream", Start: startNginx},
		)
	}
	return out
}

func startSluice(ctx context.Context, env Env, bin string) (*Running, error) {
	addr, err := freeAddr()
	if env.Mode == "udp" {
		addr, err = freeUDPAddr()
	}
	if err != nil {
		return nil, err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "[global]\nmaxconn = %d\nhard_stop_after = \"1s\"\n\n", env.MaxConn)
	fmt.Fprintf(&b, "[defaults]\ntimeout_connect = %q\ntimeout_client = %q\ntimeout_server = %q\ntimeout_http_request = %q\nretries = %d\n\n",
		env.TimeoutConnect, env.TimeoutClient, env.TimeoutServer, env.TimeoutHTTPReq, env.Retries)
	mode, h2c, tls, proto := env.Mode, "", "", ""
	switch mode {
	case "policy":
		mode, tls = "http", sluicePolicy
	case "h2":
		mode, h2c = "http", "h2c = true\n"
	case "h2be":
		mode, h2c, proto = "http", "h2c = true\n", "proto = \"h2c\"\n"
	case "h2tls", "tls":
		mode, tls = "http", fmt.Sprintf("[[frontend.bench.tls]]\ncert = %q\nkey = %q\n\n", env.TLS.Cert, env.TLS.Key)
	case "tlsbe":
		mode = "http"
	}
	fmt.Fprintf(&b, "[frontend.bench]\nmode = %q\n%sbind = [%q]\ndefault_backend = \"app\"\n\n%s", mode, h2c, addr, tls)
	fmt.Fprintf(&b, "[backend.app]\nbalance = \"roundrobin\"\n%s", proto)
	if env.Mode == "udp" {
		b.WriteString("responses = 1\n") // as nginx's proxy_responses 1
	}
	fmt.Fprintf(&b, "\n[backend.app.health]\ncheck = \"none\"\n")
	for i, s := range env.Backends {
		fmt.Fprintf(&b, "\n[[backend.app.server]]\nname = \"b%d\"\naddress = %q\n", i+1, s)
	}
	if env.Mode == "tlsbe" {
		fmt.Fprintf(&b, "\n[backend.app.tls]\nverify = \"required\"\nca_file = %q\n", env.TLS.Cert)
	}
	cfg := filepath.Join(env.Dir, "sluice-"+env.Mode+".toml")
	if err := os.WriteFile(cfg, []byte(b.String()), 0o644); err != nil {
		return nil, err
	}
	return launch(ctx, env, "sluice "+env.Mode, addr, exec.Command(bin, "run", "-f", cfg))
}

func startHAProxy(ctx context.Context, env Env) (*Running, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	ms := func(d time.Duration) string { return fmt.Sprintf("%dms", d.Milliseconds()) }
	var b strings.Builder
	fmt.Fprintf(&b, "global\n    maxconn %d\n    nbthread %d\n\n", env.MaxConn, env.Threads)
	mode, proto, srvProto, rules := env.Mode, "", "", ""
	switch mode {
	case "policy":
		mode, rules = "http", haproxyPolicy
	case "h2":
		mode, proto = "http", " proto h2"
	case "h2be":
		mode, proto, srvProto = "http", " proto h2", " proto h2"
	case "h2tls":
		mode, proto = "http", fmt.Sprintf(" ssl crt %s alpn h2,http/1.1", env.TLS.Pem)
	case "tls":
		// No alpn: wrk offers none, and HTTP/1.1 is what the bind speaks.
		mode, proto = "http", fmt.Sprintf(" ssl crt %s", env.TLS.Pem)
	case "tlsbe":
		mode, srvProto = "http", fmt.Sprintf(" ssl verify required ca-file %s", env.TLS.Cert)
	}
	fmt.Fprintf(&b, "defaults\n    mode %s\n    timeout connect %s\n    timeout client %s\n    timeout server %s\n    retries %d\n",
		mode, ms(env.TimeoutConnect), ms(env.TimeoutClient), ms(env.TimeoutServer), env.Retries)
	if mode == "http" {
		// Keep-alive on both sides with idle server connections shared
		// between clients, as sluice's pools do.
		fmt.Fprintf(&b, "    timeout http-request %s\n    option http-keep-alive\n    http-reuse always\n", ms(env.TimeoutHTTPReq))
	}
	fmt.Fprintf(&b, "\nfrontend bench\n    bind %s%s\n%s    default_backend app\n\nbackend app\n    balance roundrobin\n", addr, proto, rules)
	for i, s := range env.Backends {
		fmt.Fprintf(&b, "    server b%d %s%s\n", i+1, s, srvProto)
	}
	cfg := filepath.Join(env.Dir, "haproxy-"+env.Mode+".cfg")
	if err := os.WriteFile(cfg, []byte(b.String()), 0o644); err != nil {
		return nil, err
	}
	// -db: stay in the foreground, one process, so its PID is the one measured.
	return launch(ctx, env, "haproxy "+env.Mode, addr, exec.Command("haproxy", "-db", "-f", cfg))
}

// launch starts a balancer with its output in a log file and waits until a
// request goes through it to a backend and back.
func launch(ctx context.Context, env Env, name, addr string, cmd *exec.Cmd) (*Running, error) {
	logPath := filepath.Join(env.Dir, strings.ReplaceAll(name, " ", "-")+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	p, err := env.reg.start(name, cmd)
	logf.Close()
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if p.exited() {
			return nil, fmt.Errorf("%s exited at start-up: %s\n%s", name, cmd.ProcessState, tail(logPath))
		}
		pr := func(addr string) error { return probe(env.Mode, addr) }
		if env.Mode == "udp" {
			pr = probeUDP
		}
		if err := pr(addr); err == nil {
			break
		} else if time.Now().After(deadline) {
			p.stop(time.Second)
			return nil, fmt.Errorf("%s not answering on %s after 10s: %v\n%s", name, addr, err, tail(logPath))
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return &Running{PID: p.pid(), Addr: addr, Stop: func() { p.stop(2 * time.Second) }}, nil
}

// probe sends one request through addr and expects the backends' 200.
func probe(mode, addr string) error {
	if isH2(mode) {
		out, err := exec.Command("h2load", "-n", "1", "-c", "1", h2URL(mode, addr)).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "1 succeeded") {
			return fmt.Errorf("h2load probe: %v: %s", err, out)
		}
		return nil
	}
	var c net.Conn
	var err error
	if mode == "tls" {
		// The bench's self-signed certificate: the probe checks that
		// requests go through, not who answers.
		c, err = tls.DialWithDialer(&net.Dialer{Timeout: time.Second}, "tcp", addr, &tls.Config{InsecureSkipVerify: true})
	} else {
		c, err = net.DialTimeout("tcp", addr, time.Second)
	}
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "HTTP/1.1 200 ") {
		return fmt.Errorf("probe got %q", strings.TrimSpace(line))
	}
	return nil
}

// freeAddr picks a loopback port that is free now. Another process could
// take it before the balancer binds it; on a bench box that does not happen.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// tail returns the last lines of a log file, for error messages.
func tail(path string) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 15 {
		lines = lines[len(lines)-15:]
	}
	return "  " + strings.Join(lines, "\n  ")
}

// startNginx runs nginx in the foreground with its own prefix: `stream`
// proxy_pass for tcp, `proxy_pass` to an upstream with keepalive for http
// (the configuration nginx's docs give for keep-alive to servers), and an
// http2 listener for h2 (with ssl for h2tls), an ssl one for tls.
func startNginx(ctx context.Context, env Env) (*Running, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	prefix := filepath.Join(env.Dir, "nginx-"+env.Mode)
	if err := os.MkdirAll(filepath.Join(prefix, "logs"), 0o755); err != nil {
		return nil, err
	}
	var up strings.Builder
	for _, s := range env.Backends {
		fmt.Fprintf(&up, "        server %s;\n", s)
	}
	sec := func(d time.Duration) string { return fmt.Sprintf("%dms", d.Milliseconds()) }
	var b strings.Builder
	if env.Mode == "tcp" {
		// Debian ships stream as a dynamic module (libnginx-mod-stream).
		b.WriteString("load_module /usr/lib/nginx/modules/ngx_stream_module.so;\n")
	}
	fmt.Fprintf(&b, "worker_processes %d;\npid %s/nginx.pid;\nerror_log %s/logs/error.log warn;\n", env.Threads, prefix, prefix)
	fmt.Fprintf(&b, "events { worker_connections %d; }\n", env.MaxConn)
	if env.Mode == "tcp" {
		fmt.Fprintf(&b, "stream {\n    upstream app {\n%s    }\n    server {\n        listen %s;\n        proxy_pass app;\n        proxy_connect_timeout %s;\n        proxy_timeout %s;\n    }\n}\n",
			up.String(), addr, sec(env.TimeoutConnect), sec(env.TimeoutServer))
	} else {
		listen, tls := addr, ""
		switch env.Mode {
		case "h2":
			listen += " http2"
		case "h2tls", "tls":
			listen += " ssl"
			if env.Mode == "h2tls" {
				listen += " http2"
			}
			// nginx 1.22's default ssl_protocols stop at TLSv1.2 (1.23.4
			// added TLSv1.3): without this line it alone would do TLS 1.2,
			// whose resumption skips the key exchange.
			tls = fmt.Sprintf("        ssl_protocols TLSv1.2 TLSv1.3;\n        ssl_certificate %s;\n        ssl_certificate_key %s;\n", env.TLS.Cert, env.TLS.Key)
		}
		fmt.Fprintf(&b, "http {\n    access_log off;\n    keepalive_requests 1000000;\n    keepalive_timeout %s;\n    client_header_timeout %s;\n", sec(env.TimeoutClient), sec(env.TimeoutHTTPReq))
		fmt.Fprintf(&b, "    upstream app {\n%s        keepalive 64;\n    }\n", up.String())
		fmt.Fprintf(&b, "    server {\n        listen %s;\n%s        location / {\n            proxy_pass http://app;\n            proxy_http_version 1.1;\n            proxy_set_header Connection \"\";\n            proxy_connect_timeout %s;\n            proxy_read_timeout %s;\n        }\n    }\n}\n",
			listen, tls, sec(env.TimeoutConnect), sec(env.TimeoutServer))
	}
	cfg := filepath.Join(prefix, "nginx.conf")
	if err := os.WriteFile(cfg, []byte(b.String()), 0o644); err != nil {
		return nil, err
	}
	// The master stays in the foreground; its workers are its children, so
	// the tree's CPU and RSS are measured.
	return launch(ctx, env, "nginx "+env.Mode, addr, exec.Command("nginx", "-p", prefix, "-c", cfg, "-g", "daemon off;"))
}

// The policy row: three rules (a redirect, a deny by path and network, a
// header set) and a per-client request rate that the load never reaches,
// the same on both balancers, so the row shows what evaluating them costs.
const sluicePolicy = `[[frontend.bench.rule]]
host = "old.example.com"
tls = false
action = "redirect"
scheme = "https"
code = 301

[[frontend.bench.rule]]
path_prefix = "/admin"
not_src = ["10.0.0.0/8"]
action = "deny"

[[frontend.bench.rule]]
action = "set_header"
name = "X-Env"
value = "prod"

[frontend.bench.rate_limit]
requests = 10000000
period = "10s"

`

const haproxyPolicy = `    stick-table type ip size 100k expire 30s store http_req_rate(10s)
    http-request track-sc0 src
    http-request deny deny_status 429 if { sc_http_req_rate(0) gt 10000000 }
    http-request redirect scheme https code 301 if { hdr(host) -i old.example.com } !{ ssl_fc }
    http-request deny if { path_beg /admin } !{ src 10.0.0.0/8 }
    http-request set-header X-Env prod
`
