package main

import (
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Scenario is one load shape; every target of a fitting mode is driven with
// each.
type Scenario struct {
	Name    string
	WrkArgs []string // added to the common -t -c -d --latency
	H2      bool     // driven by h2load, for modes h2, h2tls and h2be only
	UDP     bool     // driven by udpLoad instead of wrk, for udp targets only
}

// fits reports whether the scenario applies to targets of mode.
func (sc Scenario) fits(mode string) bool {
	if mode == "policy" && sc.Name != "keep-alive" {
		return false // the policy row measures what rules add to keep-alive http
	}
	return sc.UDP == (mode == "udp") && sc.H2 == isH2(mode)
}

var allScenarios = []Scenario{
	{Name: "keep-alive"},
	// wrk reconnects after a response that says Connection: close, and the
	// backends say it when asked, so every request pays a new connection
	// from wrk to the balancer and from the balancer to a backend.
	{Name: "conn-per-req", WrkArgs: []string{"-H", "Connection: close"}},
	// HTTP/2 (h2c with prior knowledge, or over TLS with ALPN), several
	// streams in flight on each connection.
	{Name: "h2 keep-alive", H2: true},
	{Name: "udp-echo", UDP: true},
}

func scenariosFor(mode string) []Scenario {
	var out []Scenario
	for _, sc := range allScenarios {
		if sc.fits(mode) {
			out = append(out, sc)
		}
	}
	return out
}

// wrkResult is what one wrk run reports.
type wrkResult struct {
	Requests  int64
	ReqPerSec float64
	P50, P99  time.Duration
	Errors    int64 // socket errors plus non-2xx/3xx responses
}

type wrkOpts struct {
	Threads, Conns int
	Duration       time.Duration
	// H2Conns and H2Streams are h2load's -c and -m.
	H2Conns, H2Streams int
}

// isH2 reports whether mode is one of the HTTP/2 modes: h2 (h2c), h2tls,
// or h2be (h2c on both sides).
func isH2(mode string) bool { return mode == "h2" || mode == "h2tls" || mode == "h2be" }

// drive runs one scenario against a balancer of mode on addr with wrk, or
// with h2load or udpLoad.
func drive(ctx context.Context, reg *registry, o wrkOpts, sc Scenario, mode, addr string) (wrkResult, string, error) {
	if sc.UDP {
		r, err := udpLoad(ctx, addr, o.Conns, o.Duration)
		return r, "", err
	}
	if sc.H2 {
		return runH2load(ctx, reg, o, h2URL(mode, addr))
	}
	scheme := "http://"
	if mode == "tls" {
		scheme = "https://"
	}
	return runWrk(ctx, reg, o, sc, scheme+addr+"/")
}

func runWrk(ctx context.Context, reg *registry, o wrkOpts, sc Scenario, url string) (wrkResult, string, error) {
	args := []string{"-t", strconv.Itoa(o.Threads), "-c", strconv.Itoa(o.Conns),
		"-d", fmt.Sprintf("%ds", max(1, int(o.Duration.Round(time.Second)/time.Second))), "--latency"}
	args = append(args, sc.WrkArgs...)
	args = append(args, url)
	out, err := runTool(ctx, reg, "wrk", args)
	if err != nil {
		return wrkResult{}, out, err
	}
	r, err := parseWrk(out)
	return r, out, err
}

// runTool runs a load generator to its end (or ctx's) and returns what it
// printed; a non-zero exit is an error.
func runTool(ctx context.Context, reg *registry, name string, args []string) (string, error) {
	var out strings.Builder
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	p, err := reg.start(name, cmd)
	if err != nil {
		return "", err
	}
	select {
	case <-p.done:
	case <-ctx.Done():
		p.stop(time.Second)
		return "", ctx.Err()
	}
	if !p.cmd.ProcessState.Success() {
		return out.String(), fmt.Errorf("%s %s: %s", name, strings.Join(args, " "), p.cmd.ProcessState)
	}
	return out.String(), nil
}

var (
	reRequests = regexp.MustCompile(`(\d+) requests in `)
	reRPS      = regexp.MustCompile(`Requests/sec:\s+([\d.]+)`)
	rePct      = regexp.MustCompile(`(?m)^\s+(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$`)
	reSockErr  = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
	reNon2xx   = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
)

// parseWrk reads the summary of `wrk --latency`.
func parseWrk(s string) (wrkResult, error) {
	var r wrkResult
	m := reRequests.FindStringSubmatch(s)
	m2 := reRPS.FindStringSubmatch(s)
	if m == nil || m2 == nil {
		return r, fmt.Errorf("cannot read wrk's output:\n%s", s)
	}
	r.Requests, _ = strconv.ParseInt(m[1], 10, 64)
	r.ReqPerSec, _ = strconv.ParseFloat(m2[1], 64)
	unit := map[string]float64{"us": 1e3, "ms": 1e6, "s": 1e9, "m": 60e9, "h": 3600e9}
	for _, p := range rePct.FindAllStringSubmatch(s, -1) {
		v, _ := strconv.ParseFloat(p[2], 64)
		d := time.Duration(v * unit[p[3]])
		if p[1] == "50" {
			r.P50 = d
		} else {
			r.P99 = d
		}
	}
	if m := reSockErr.FindStringSubmatch(s); m != nil {
		for _, x := range m[1:] {
			n, _ := strconv.ParseInt(x, 10, 64)
			r.Errors += n
		}
	}
	if m := reNon2xx.FindStringSubmatch(s); m != nil {
		n, _ := strconv.ParseInt(m[1], 10, 64)
		r.Errors += n
	}
	return r, nil
}
