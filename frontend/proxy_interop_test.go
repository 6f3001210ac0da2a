package frontend_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sluice/internal/logbuf"
	"sluice/internal/testutil"
)

// Interop with real PROXY protocol peers: Debian's haproxy and nginx (CI
// installs them; the tests skip when they are missing). The client binds
// 127.0.0.2 so that its address differs from every hop's 127.0.0.1.

// findPeer returns the path of a program in PATH or /usr/sbin, or skips.
func findPeer(t *testing.T, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	p := filepath.Join("/usr/sbin", name)
	if _, err := os.Stat(p); err == nil {
		return p
	}
	t.Skipf("%s is not installed (CI installs it with apt-get install %s); skipping the interop test", name, name)
	return ""
}

// runPeer starts a peer in the foreground, waits until every address in
// ready accepts connections, and kills it when the test ends.
func runPeer(t *testing.T, ready []string, path string, args ...string) {
	t.Helper()
	cmd := exec.Command(path, args...)
	var out logbuf.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", path, err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("%s output:\n%s", filepath.Base(path), out.String())
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for _, a := range ready {
		for {
			c, err := net.DialTimeout("tcp", a, time.Second)
			if err == nil {
				c.Close()
				break
			}
			select {
			case <-exited:
				t.Fatalf("%s exited early:\n%s", path, out.String())
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s does not listen on %s:\n%s", path, a, out.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// httpGetFrom sends one GET from 127.0.0.2 and returns the body.
func httpGetFrom(t *testing.T, addr string) string {
	t.Helper()
	c := dialFrom(t, "127.0.0.2", addr)
	defer c.Close()
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: interop\r\nConnection: close\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	return strings.TrimSpace(string(b))
}

// TestInteropHAProxySendsToSluice: HAProxy with send-proxy and
// send-proxy-v2 in front of sluice frontends with accept_proxy (tcp and
// http); the server behind sluice reports the client address sluice saw.
func TestInteropHAProxySendsToSluice(t *testing.T) {
	haproxy := findPeer(t, "haproxy")

	// Behind sluice: in tcp mode a server that reads sluice's own PROXY
	// header; in http mode one that echoes X-Forwarded-For.
	tcpServer := testutil.Serve(t, "tcp", proxyReporter)
	httpLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "xff=%s\n", r.Header.Get("X-Forwarded-For"))
	})}
	go hs.Serve(httpLn)
	t.Cleanup(func() { hs.Close() })

	sluiceTCP, sluiceHTTP := testutil.FreeAddr(t), testutil.FreeAddr(t)
	eng, _, _ := startLogged(t, fmt.Sprintf(`[global]
hard_stop_after = "5s"
[frontend.tcp_in]
mode = "tcp"
bind = [%q]
accept_proxy = true
proxy_trusted = ["127.0.0.1"]
default_backend = "tcp_app"
[frontend.http_in]
mode = "http"
bind = [%q]
accept_proxy = true
proxy_trusted = ["127.0.0.1"]
default_backend = "http_app"
[backend.tcp_app]
send_proxy = "v1"
[[backend.tcp_app.server]]
address = %q
[backend.http_app]
[[backend.http_app.server]]
address = %q
`, sluiceTCP, sluiceHTTP, tcpServer.Addr, httpLn.Addr().String()))

	// crc32c: sluice checks the checksum HAProxy computes.
	sends := []string{"send-proxy", "send-proxy-v2", "send-proxy-v2-crc32c"}
	haproxySend := map[string]string{
		"send-proxy":           "send-proxy",
		"send-proxy-v2":        "send-proxy-v2",
		"send-proxy-v2-crc32c": "send-proxy-v2 proxy-v2-options crc32c,unique-id",
	}
	dir := t.TempDir()
	fronts := map[string]string{}
	var cfg strings.Builder
	cfg.WriteString("global\n    maxconn 100\ndefaults\n    mode tcp\n    timeout connect 2s\n    timeout client 10s\n    timeout server 10s\n")
	for _, mode := range []string{"tcp", "http"} {
		target := map[string]string{"tcp": sluiceTCP, "http": sluiceHTTP}[mode]
		for _, send := range sends {
			name := mode + "_" + send
			fronts[name] = testutil.FreeAddr(t)
			fmt.Fprintf(&cfg, "listen %s\n    bind %s\n    server sluice %s %s\n", strings.ReplaceAll(name, "-", "_"), fronts[name], target, haproxySend[send])
		}
	}
	cfgFile := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(cfgFile, []byte(cfg.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	var ready []string
	for _, a := range fronts {
		ready = append(ready, a)
	}
	runPeer(t, ready, haproxy, "-db", "-f", cfgFile)

	for _, send := range sends {
		t.Run("tcp/"+send, func(t *testing.T) {
			c := dialFrom(t, "127.0.0.2", fronts["tcp_"+send])
			c.Write([]byte("ping\n"))
			r := bufio.NewReader(c)
			got := testutil.ReadLine(t, r)
			if !strings.HasPrefix(got, "v=1 src=127.0.0.2:") {
				t.Fatalf("server behind sluice saw %q, want the client 127.0.0.2", got)
			}
			if got := testutil.ReadLine(t, r); got != "ping" {
				t.Fatalf("echo %q", got)
			}
		})
		t.Run("http/"+send, func(t *testing.T) {
			if got := httpGetFrom(t, fronts["http_"+send]); got != "xff=127.0.0.2" {
				t.Fatalf("server behind sluice saw %q, want xff=127.0.0.2", got)
			}
		})
	}
	for _, f := range eng.Front.Frontends {
		if n := f.Counters.ProxyErrors.Load(); n != 0 {
			t.Errorf("frontend %s refused %d PROXY headers from HAProxy", f.Name, n)
		}
	}
}

// TestInteropSluiceSendsToNginx: sluice with send_proxy = "v1" and "v2",
// tcp and http mode, in front of nginx listening with proxy_protocol and
// answering $proxy_protocol_addr.
func TestInteropSluiceSendsToNginx(t *testing.T) {
	nginx := findPeer(t, "nginx")
	dir := t.TempDir()
	nginxAddr := testutil.FreeAddr(t)
	conf := fmt.Sprintf(`worker_processes 1;
master_process off;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log info;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path %[1]s/body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
    server {
        listen %[2]s proxy_protocol;
        location / { return 200 "$proxy_protocol_addr\n"; }
    }
}
`, dir, nginxAddr)
	cfgFile := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(cfgFile, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	runPeer(t, nil, nginx, "-e", filepath.Join(dir, "error.log"), "-p", dir, "-c", cfgFile, "-g", "daemon off;")
	// Our readiness probe would be a connection without a header, which
	// nginx logs as broken; wait for the socket with a real request.
	waitNginx(t, nginxAddr)

	fronts := map[string]string{}
	var cfg strings.Builder
	cfg.WriteString("[global]\nhard_stop_after = \"5s\"\n")
	for _, mode := range []string{"tcp", "http"} {
		for _, v := range []string{"v1", "v2"} {
			name := mode + "_" + v
			fronts[name] = testutil.FreeAddr(t)
			fmt.Fprintf(&cfg, "[frontend.%s]\nmode = %q\nbind = [%q]\ndefault_backend = %q\n", name, mode, fronts[name], name)
			fmt.Fprintf(&cfg, "[backend.%s]\nsend_proxy = %q\n[[backend.%s.server]]\naddress = %q\n", name, v, name, nginxAddr)
		}
	}
	startLogged(t, cfg.String())
	for _, mode := range []string{"tcp", "http"} {
		for _, v := range []string{"v1", "v2"} {
			t.Run(mode+"/"+v, func(t *testing.T) {
				for range 2 { // the second request reuses nothing of the first's
					if got := httpGetFrom(t, fronts[mode+"_"+v]); got != "127.0.0.2" {
						t.Fatalf("nginx saw $proxy_protocol_addr = %q, want 127.0.0.2", got)
					}
				}
			})
		}
	}
}

// waitNginx waits until nginx answers a request that carries a header.
func waitNginx(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.SetDeadline(time.Now().Add(5 * time.Second))
			fmt.Fprintf(c, "PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r\nGET / HTTP/1.0\r\n\r\n")
			b, _ := io.ReadAll(c)
			c.Close()
			if bytes.Contains(b, []byte("192.0.2.1")) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginx does not answer on %s", addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
