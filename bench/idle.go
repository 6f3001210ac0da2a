package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strings"
	"time"
)

// idleRow is one balancer's memory cost of open connections.
type idleRow struct {
	Mode       string
	Balancer   string
	Conns      int
	BeforeMiB  float64
	AfterMiB   float64
	KiBPerConn float64
}

// idleMemory opens n connections through addr, sends one keep-alive request
// on each and reads its response, so that the balancer holds every one of
// them with a server connection behind it (tcp: a relayed pair; http: a
// client connection and a pooled or attached server one), then reports how
// much the resident memory of the balancer's process tree grew per
// connection, once they have been quiet for two seconds. The connections
// are closed before it returns.
func idleMemory(ctx context.Context, addr string, pid, n int) (idleRow, error) {
	row := idleRow{Conns: n}
	before := rssKiB(pid)
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	deadline := time.Now().Add(60 * time.Second)
	req := []byte("GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
	for i := 0; i < n; i++ {
		if err := ctx.Err(); err != nil {
			return row, err
		}
		d := net.Dialer{Deadline: deadline}
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return row, fmt.Errorf("connection %d of %d: %v", i+1, n, err)
		}
		conns = append(conns, c)
		c.SetDeadline(deadline)
		if _, err := c.Write(req); err != nil {
			return row, fmt.Errorf("connection %d of %d: %v", i+1, n, err)
		}
	}
	for i, c := range conns {
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil || !strings.Contains(line, " 200 ") {
			return row, fmt.Errorf("connection %d of %d: response %q, %v", i+1, n, line, err)
		}
	}
	// Idle means quiet for a while: sluice moves a keep-alive client's wait
	// to a small goroutine once it is quiet (l7 idleHandOff, 10 ms).
	if err := sleep(ctx, 2*time.Second); err != nil {
		return row, err
	}
	after := rssKiB(pid)
	row.BeforeMiB, row.AfterMiB = float64(before)/1024, float64(after)/1024
	row.KiBPerConn = float64(after-before) / float64(n)
	return row, nil
}

// rssKiB is the resident memory of pid and its descendants.
func rssKiB(root int) int64 {
	var kib int64
	for _, pid := range treePIDs(root) {
		kib += statusKiB(pid, "VmRSS:")
	}
	return kib
}

// idleTable renders the rows of idleMemory.
func idleTable(rows []idleRow) string {
	var b strings.Builder
	b.WriteString("| mode | balancer | open connections | RSS before MiB | RSS with them MiB | KiB per connection |\n")
	b.WriteString("| --- | --- | ---: | ---: | ---: | ---: |\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %s | %s | %d | %.1f | %.1f | %.1f |\n", r.Mode, r.Balancer, r.Conns, r.BeforeMiB, r.AfterMiB, r.KiBPerConn)
	}
	return b.String()
}

// busyRow is one balancer's cost of many busy keep-alive clients.
type busyRow struct {
	Balancer string
	Conns    int
	sample
}

// busyTable renders the rows of the -busy run, with each peak against
// HAProxy's.
func busyTable(rows []busyRow) string {
	var ref float64
	for _, r := range rows {
		if r.Balancer == "haproxy" {
			ref = r.PeakRSSMiB
		}
	}
	var b strings.Builder
	b.WriteString("| balancer | keep-alive connections | req/s | p99 | errors | peak RSS MiB | vs HAProxy |\n")
	b.WriteString("| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, r := range rows {
		vs := "—"
		if ref > 0 {
			vs = fmt.Sprintf("%.2f×", r.PeakRSSMiB/ref)
		}
		fmt.Fprintf(&b, "| %s | %d | %.0f | %s | %d | %.1f | %s |\n", r.Balancer, r.Conns, r.ReqPerSec, ms(r.P99), r.Errors, r.PeakRSSMiB, vs)
	}
	return b.String()
}
