package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// The UDP row: request/response datagrams (DNS-like) through each
// balancer to two UDP echo backends, driven by udpLoad below. Both
// balancers end a session after one reply (sluice `responses = 1`, nginx
// `proxy_responses 1`), so every datagram is a new flow, as DNS is.

// udpBackendFlag re-executes this binary as the UDP echo backends.
const udpBackendFlag = "serve-udp-backends"

// udpPayload is the size of each request; the backends echo it.
const udpPayload = 64

// serveUDPBackends runs in the child: n echo sockets on loopback, each read
// by two goroutines, until stdin closes.
func serveUDPBackends(n int) int {
	var addrs []string
	for i := 0; i < n; i++ {
		pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			fmt.Fprintln(os.Stderr, "udp backend:", err)
			return 1
		}
		pc.SetReadBuffer(4 << 20)
		addrs = append(addrs, pc.LocalAddr().String())
		for range 2 {
			go func() {
				buf := make([]byte, 64<<10)
				for {
					n, from, err := pc.ReadFromUDPAddrPort(buf)
					if err != nil {
						if errors.Is(err, net.ErrClosed) {
							return
						}
						continue
					}
					pc.WriteToUDPAddrPort(buf[:n], from)
				}
			}()
		}
	}
	fmt.Println("LISTEN", strings.Join(addrs, " "))
	io.Copy(io.Discard, os.Stdin)
	return 0
}

// freeUDPAddr picks a loopback UDP port that is free now.
func freeUDPAddr() (string, error) {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer pc.Close()
	return pc.LocalAddr().String(), nil
}

// probeUDP sends one datagram through addr and expects it back.
func probeUDP(addr string) error {
	c, err := net.Dial("udp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := c.Write([]byte("probe")); err != nil {
		return err
	}
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err != nil {
		return err
	}
	if string(buf[:n]) != "probe" {
		return fmt.Errorf("probe got %q", buf[:n])
	}
	return nil
}

// startNginxUDP runs nginx's stream module with a udp listener.
func startNginxUDP(ctx context.Context, env Env) (*Running, error) {
	addr, err := freeUDPAddr()
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(env.Dir, "nginx-"+env.Mode)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var b strings.Builder
	if mod := "/usr/lib/nginx/modules/ngx_stream_module.so"; fileExists(mod) {
		fmt.Fprintf(&b, "load_module %s;\n", mod) // Debian builds stream as a module
	}
	fmt.Fprintf(&b, "daemon off;\nworker_processes %d;\npid %s/nginx.pid;\nerror_log %s/error.log warn;\n", env.Threads, dir, dir)
	fmt.Fprintf(&b, "events { worker_connections %d; }\n", env.MaxConn)
	b.WriteString("stream {\n    upstream app {\n")
	for _, s := range env.Backends {
		fmt.Fprintf(&b, "        server %s;\n", s)
	}
	fmt.Fprintf(&b, "    }\n    server {\n        listen %s udp;\n        proxy_pass app;\n        proxy_responses 1;\n        proxy_timeout %ds;\n    }\n}\n",
		addr, int(env.TimeoutServer/time.Second))
	cfg := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(cfg, []byte(b.String()), 0o644); err != nil {
		return nil, err
	}
	// -e: the error log before the config is read; -p: a prefix of our own.
	return launch(ctx, env, "nginx "+env.Mode, addr,
		exec.Command("nginx", "-p", dir+"/", "-e", filepath.Join(dir, "error.log"), "-c", cfg))
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// udpLoad drives addr with conns clients for d: each has its own socket
// (so its own flow), sends a datagram and waits for the echo before the
// next. A reply that does not come within a timeout counts as an error and
// the client goes on.
func udpLoad(ctx context.Context, addr string, conns int, d time.Duration) (wrkResult, error) {
	const replyTimeout = 500 * time.Millisecond
	type clientResult struct {
		lat    []time.Duration
		errors int64
		err    error
	}
	res := make([]clientResult, conns)
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var wg sync.WaitGroup
	start := time.Now()
	for i := range conns {
		wg.Add(1)
		go func(r *clientResult) {
			defer wg.Done()
			c, err := net.Dial("udp", addr)
			if err != nil {
				r.err = err
				return
			}
			defer c.Close()
			msg := bytes.Repeat([]byte{'x'}, udpPayload)
			buf := make([]byte, 2048)
			r.lat = make([]time.Duration, 0, 1<<14)
			for ctx.Err() == nil {
				t0 := time.Now()
				if _, err := c.Write(msg); err != nil {
					r.errors++
					continue
				}
				c.SetReadDeadline(t0.Add(replyTimeout))
				for {
					n, err := c.Read(buf)
					if err != nil {
						r.errors++ // lost: timed out (or refused)
						break
					}
					if n == len(msg) {
						r.lat = append(r.lat, time.Since(t0))
						break
					}
				}
			}
		}(&res[i])
	}
	wg.Wait()
	elapsed := time.Since(start)
	var all []time.Duration
	var out wrkResult
	for _, r := range res {
		if r.err != nil {
			return out, r.err
		}
		all = append(all, r.lat...)
		out.Errors += r.errors
	}
	out.Requests = int64(len(all))
	out.ReqPerSec = float64(len(all)) / elapsed.Seconds()
	if len(all) > 0 {
		slices.Sort(all)
		out.P50 = all[len(all)/2]
		out.P99 = all[len(all)*99/100]
	}
	return out, nil
}
