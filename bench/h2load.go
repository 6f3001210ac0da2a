package main

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"time"
)

// h2URL is what h2load asks for: http:// is h2c with prior knowledge,
// https:// HTTP/2 over TLS chosen by ALPN (h2load does not check the
// bench's self-signed certificate).
func h2URL(mode, addr string) string {
	if mode == "h2tls" {
		return "https://" + addr + "/"
	}
	return "http://" + addr + "/"
}

// runH2load drives url with HTTP/2, H2Streams streams in flight on each of
// H2Conns connections, for the same duration as wrk runs.
func runH2load(ctx context.Context, reg *registry, o wrkOpts, url string) (wrkResult, string, error) {
	secs := max(1, int(o.Duration.Round(time.Second)/time.Second))
	args := []string{"-t", strconv.Itoa(min(o.Threads, o.H2Conns)), "-c", strconv.Itoa(o.H2Conns), "-m", strconv.Itoa(o.H2Streams),
		"-D", strconv.Itoa(secs), url}
	out, err := runTool(ctx, reg, "h2load", args)
	if err != nil {
		return wrkResult{}, out, err
	}
	r, err := parseH2load(out)
	return r, out, err
}

var (
	reH2Done = regexp.MustCompile(`finished in ([\d.]+)(us|ms|s), ([\d.]+) req/s`)
	reH2Reqs = regexp.MustCompile(`requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored`)
	reH2Time = regexp.MustCompile(`time for request:\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)`)
)

// parseH2load reads h2load's summary. It gives no percentiles: the p50
// column gets the mean time per request, and p99 the maximum.
func parseH2load(s string) (wrkResult, error) {
	var r wrkResult
	d := reH2Done.FindStringSubmatch(s)
	q := reH2Reqs.FindStringSubmatch(s)
	if d == nil || q == nil {
		return r, fmt.Errorf("cannot read h2load's output:\n%s", s)
	}
	r.ReqPerSec, _ = strconv.ParseFloat(d[3], 64)
	r.Requests, _ = strconv.ParseInt(q[1], 10, 64)
	failed, _ := strconv.ParseInt(q[2], 10, 64)
	errored, _ := strconv.ParseInt(q[3], 10, 64)
	r.Errors = failed + errored
	unit := map[string]float64{"us": 1e3, "ms": 1e6, "s": 1e9}
	if t := reH2Time.FindStringSubmatch(s); t != nil {
		maxv, _ := strconv.ParseFloat(t[3], 64)
		meanv, _ := strconv.ParseFloat(t[5], 64)
		r.P99 = time.Duration(maxv * unit[t[4]])
		r.P50 = time.Duration(meanv * unit[t[6]])
	}
	return r, nil
}
