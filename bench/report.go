package main

import (
	"fmt"
	"strings"
	"time"
)

// sample is one measured run.
type sample struct {
	wrkResult
	CPUPer100k float64 // balancer CPU seconds per 100k requests
	PeakRSSMiB float64
}

// rowKey names a table row.
type rowKey struct {
	Scenario, Mode, Balancer string
}

// results keeps samples in the order rows were first measured.
type results struct {
	order   []rowKey
	samples map[rowKey][]sample
}

func (r *results) add(k rowKey, s sample) {
	if r.samples == nil {
		r.samples = map[rowKey][]sample{}
	}
	if _, ok := r.samples[k]; !ok {
		r.order = append(r.order, k)
	}
	r.samples[k] = append(r.samples[k], s)
}

// mean averages a row's samples; peak RSS is the largest seen, errors the sum.
func mean(ss []sample) sample {
	var m sample
	var p50, p99 float64
	for _, s := range ss {
		m.ReqPerSec += s.ReqPerSec / float64(len(ss))
		m.CPUPer100k += s.CPUPer100k / float64(len(ss))
		p50 += float64(s.P50) / float64(len(ss))
		p99 += float64(s.P99) / float64(len(ss))
		m.PeakRSSMiB = max(m.PeakRSSMiB, s.PeakRSSMiB)
		m.Errors += s.Errors
		m.Requests += s.Requests
	}
	m.P50, m.P99 = time.Duration(p50), time.Duration(p99)
	return m
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/1e6) }

// table renders the markdown report: one row per (scenario, mode, balancer),
// then per (scenario, mode) each balancer's req/s relative to HAProxy, with
// the per-round ratios showing how steady the side-by-side pairs were.
func (r *results) table(header string) string {
	var b strings.Builder
	b.WriteString(header)
	b.WriteString("| scenario | mode | balancer | req/s | p50 | p99 | CPU s/100k req | peak RSS MiB | errors |\n")
	b.WriteString("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, k := range r.order {
		m := mean(r.samples[k])
		fmt.Fprintf(&b, "| %s | %s | %s | %.0f | %s | %s | %.2f | %.1f | %d |\n",
			k.Scenario, k.Mode, k.Balancer, m.ReqPerSec, ms(m.P50), ms(m.P99), m.CPUPer100k, m.PeakRSSMiB, m.Errors)
	}
	b.WriteString("\n")
	for _, k := range r.order {
		// The reference is HAProxy, or nginx where HAProxy has no row (udp).
		refName := "haproxy"
		if len(r.samples[rowKey{k.Scenario, k.Mode, refName}]) == 0 {
			refName = "nginx"
		}
		if k.Balancer == refName {
			continue
		}
		ref := r.samples[rowKey{k.Scenario, k.Mode, refName}]
		if len(ref) == 0 {
			continue
		}
		own := r.samples[k]
		var per []string
		for i := 0; i < min(len(own), len(ref)); i++ {
			per = append(per, fmt.Sprintf("%.2f", own[i].ReqPerSec/ref[i].ReqPerSec))
		}
		a, h := mean(own), mean(ref)
		shown := map[string]string{"haproxy": "HAProxy", "nginx": "nginx"}[refName]
		fmt.Fprintf(&b, "- %s, %s: %s/%s req/s = **%.2f** (per round: %s); CPU per request = %.2f× %s's\n",
			k.Scenario, k.Mode, k.Balancer, shown, a.ReqPerSec/h.ReqPerSec, strings.Join(per, ", "), a.CPUPer100k/h.CPUPer100k, shown)
	}
	// What the policy costs each balancer: its policy row against its own
	// plain http row of the same rounds.
	for _, k := range r.order {
		if k.Mode != "policy" {
			continue
		}
		with, without := r.samples[k], r.samples[rowKey{k.Scenario, "http", k.Balancer}]
		if len(without) == 0 {
			continue
		}
		var per []string
		for i := 0; i < min(len(with), len(without)); i++ {
			per = append(per, fmt.Sprintf("%.2f", with[i].ReqPerSec/without[i].ReqPerSec))
		}
		a, h := mean(with), mean(without)
		fmt.Fprintf(&b, "- policy cost, %s, %s: with three rules and a rate limit / without, req/s = **%.2f** (per round: %s); CPU per request = %.2f×\n",
			k.Scenario, k.Balancer, a.ReqPerSec/h.ReqPerSec, strings.Join(per, ", "), a.CPUPer100k/h.CPUPer100k)
	}
	return b.String()
}
