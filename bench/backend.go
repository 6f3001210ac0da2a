package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"

	"golang.org/x/net/http2"
)

// The backends answer every request head with the same tiny 200 response.
// They parse nothing beyond finding the end of each head, so they stay far
// cheaper than the balancers in front of them. Request bodies are not
// supported: wrk sends bare GETs.
var (
	respKeep  = []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok")
	respClose = []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
	headEnd   = []byte("\r\n\r\n")
)

// backendFlag re-executes this binary as the backend process, so that the
// backends' CPU time is neither the driver's nor the balancer's.
const backendFlag = "serve-backends"

// serveBackends runs in the child: it listens on n loopback ports, prints
// "LISTEN addr..." on stdout, and serves until stdin closes (the parent died
// or is done with it).
func serveBackends(n int) int {
	var addrs []string
	for i := 0; i < n; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			fmt.Fprintln(os.Stderr, "backend:", err)
			return 1
		}
		addrs = append(addrs, ln.Addr().String())
		go acceptLoop(ln)
	}
	fmt.Println("LISTEN", strings.Join(addrs, " "))
	io.Copy(io.Discard, os.Stdin)
	return 0
}

func acceptLoop(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go serveConn(c)
	}
}

// serveConn answers every complete head in what has arrived with one write,
// so pipelined requests cost one syscall per batch.
func serveConn(c net.Conn) {
	defer c.Close()
	buf := make([]byte, 8<<10)
	out := make([]byte, 0, 4<<10)
	n := 0
	for {
		m, err := c.Read(buf[n:])
		n += m
		start, closing := 0, false
		out = out[:0]
		for !closing {
			i := bytes.Index(buf[start:n], headEnd)
			if i < 0 {
				break
			}
			if wantsClose(buf[start : start+i]) {
				out = append(out, respClose...)
				closing = true
			} else {
				out = append(out, respKeep...)
			}
			start += i + len(headEnd)
		}
		if len(out) > 0 {
			if _, werr := c.Write(out); werr != nil {
				return
			}
		}
		if closing || err != nil {
			return
		}
		n = copy(buf, buf[start:n])
		if n == len(buf) {
			return // a head larger than the buffer: not something wrk sends
		}
	}
}

// wantsClose reports whether a request head carries "Connection: close".
func wantsClose(head []byte) bool {
	const name = "connection:"
	for len(head) > 0 {
		var line []byte
		line, head, _ = bytes.Cut(head, []byte("\r\n"))
		if len(line) > len(name) && bytes.EqualFold(line[:len(name)], []byte(name)) {
			return bytes.EqualFold(bytes.TrimSpace(line[len(name):]), []byte("close"))
		}
	}
	return false
}

// startBackends starts the backend subprocess (flag: backendFlag or
// udpBackendFlag) with n listeners and returns their addresses.
func startBackends(reg *registry, flag string, n int, logPath string, args ...string) ([]string, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, append([]string{fmt.Sprintf("-%s=%d", flag, n)}, args...)...)
	stdin, err := cmd.StdinPipe() // held open for the child's whole life
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd.Stderr = logf
	p, err := reg.start("backends", cmd)
	logf.Close()
	if err != nil {
		return nil, err
	}
	p.closers = append(p.closers, stdin)
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		return nil, fmt.Errorf("backend process did not start: %v (log: %s)", err, logPath)
	}
	addrs := strings.Fields(strings.TrimPrefix(strings.TrimSpace(line), "LISTEN"))
	if len(addrs) != n {
		return nil, fmt.Errorf("backend process said %q", line)
	}
	return addrs, nil
}

// h2cBackendFlag re-executes this binary as HTTP/2 cleartext backends, for
// mode h2be (proto = "h2c" servers behind the balancers).
const h2cBackendFlag = "serve-h2c-backends"

// serveH2CBackends runs in the child: n loopback listeners speaking HTTP/2
// with prior knowledge (x/net/http2's server, one ServeConn per
// connection), each request answered with the same tiny 200 "ok" as the
// HTTP/1 backends, until stdin closes.
func serveH2CBackends(n int) int {
	srv := &http2.Server{MaxConcurrentStreams: 1000}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		hd := w.Header()
		hd["Content-Type"] = textPlain
		hd["Content-Length"] = contentLen2
		w.Write(ok)
	})
	var addrs []string
	for i := 0; i < n; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			fmt.Fprintln(os.Stderr, "h2c backend:", err)
			return 1
		}
		addrs = append(addrs, ln.Addr().String())
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go srv.ServeConn(c, &http2.ServeConnOpts{Handler: h})
			}
		}()
	}
	fmt.Println("LISTEN", strings.Join(addrs, " "))
	io.Copy(io.Discard, os.Stdin)
	return 0
}

var (
	textPlain   = []string{"text/plain"}
	contentLen2 = []string{"2"}
	ok          = []byte("ok")
)

// tlsBackendFlag re-executes this binary as HTTP/1.1 backends over TLS,
// for mode tlsbe: the same tiny responses as backendFlag's, behind Go's
// crypto/tls with the bench certificate (tlsBackendCertFlag and
// tlsBackendKeyFlag), which the balancers verify against itself.
const (
	tlsBackendFlag     = "serve-tls-backends"
	tlsBackendCertFlag = "tls-backend-cert"
	tlsBackendKeyFlag  = "tls-backend-key"
)

func serveTLSBackends(n int, certFile, keyFile string) int {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, "tls backend:", err)
		return 1
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}}
	var addrs []string
	for i := 0; i < n; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			fmt.Fprintln(os.Stderr, "tls backend:", err)
			return 1
		}
		addrs = append(addrs, ln.Addr().String())
		go acceptLoop(tls.NewListener(ln, cfg))
	}
	fmt.Println("LISTEN", strings.Join(addrs, " "))
	io.Copy(io.Discard, os.Stdin)
	return 0
}
