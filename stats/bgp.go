package stats

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// BGP is the state of the master's BGP speaker ([bgp]), shown on the page,
// in /api/stats and /metrics. The master sends it to its worker whenever
// it changes; nil while [bgp] is not configured.
type BGP struct {
	ASN       uint32        `json:"asn"`
	RouterID  string        `json:"router_id"`
	Neighbors []BGPNeighbor `json:"neighbors"`
	Prefixes  []BGPPrefix   `json:"prefixes"`
	// Changes counts announcements and withdrawals since the master started.
	Changes    uint64    `json:"changes"`
	LastChange time.Time `json:"last_change,omitzero"`
	LastWhy    string    `json:"last_why,omitempty"` // what the last change did and why
}

// BGPNeighbor is one session.
type BGPNeighbor struct {
	Address string    `json:"address"`
	ASN     uint32    `json:"asn"`
	State   string    `json:"state"` // idle, connect, active, opensent, openconfirm, established
	Up      bool      `json:"up"`    // established
	Since   time.Time `json:"since,omitzero"`
}

// BGPPrefix is one [[bgp.announce]].
type BGPPrefix struct {
	Prefix    string    `json:"prefix"`
	Announced bool      `json:"announced"`
	Why       string    `json:"why,omitempty"` // why it is withdrawn ("" while announced)
	Since     time.Time `json:"since,omitzero"`
}

// WriteText writes the state as `sluice ctl show bgp` prints it.
func (b *BGP) WriteText(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "bgp: asn %d, router id %s, %d changes", b.ASN, b.RouterID, b.Changes)
	if !b.LastChange.IsZero() {
		fmt.Fprintf(tw, ", last %s ago: %s", time.Since(b.LastChange).Round(time.Second), b.LastWhy)
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "NEIGHBOR\tASN\tSTATE\tSINCE")
	for _, n := range b.Neighbors {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", n.Address, n.ASN, n.State, ago(n.Since))
	}
	fmt.Fprintln(tw, "PREFIX\tANNOUNCED\tSINCE\tWHY NOT")
	for _, p := range b.Prefixes {
		fmt.Fprintf(tw, "%s\t%v\t%s\t%s\n", p.Prefix, p.Announced, ago(p.Since), p.Why)
	}
	tw.Flush()
}

func ago(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return time.Since(t).Round(time.Second).String()
}

var (
	bgpSessionUp = prometheus.NewDesc("sluice_bgp_session_up", "1 while the BGP session with the neighbour is established.", []string{"neighbor"}, nil)
	bgpAnnounced = prometheus.NewDesc("sluice_bgp_prefix_announced", "1 while this node announces the prefix ([[bgp.announce]]).", []string{"prefix"}, nil)
	bgpChanges   = prometheus.NewDesc("sluice_bgp_changes_total", "Announcements and withdrawals since the master started.", nil, nil)
)

// collectBGP writes the BGP metrics; nothing without [bgp].
func (s *Server) collectBGP(ch chan<- prometheus.Metric) {
	b := s.bgp()
	if b == nil {
		return
	}
	for _, n := range b.Neighbors {
		ch <- prometheus.MustNewConstMetric(bgpSessionUp, prometheus.GaugeValue, b2f(n.Up), n.Address)
	}
	for _, p := range b.Prefixes {
		ch <- prometheus.MustNewConstMetric(bgpAnnounced, prometheus.GaugeValue, b2f(p.Announced), p.Prefix)
	}
	ch <- prometheus.MustNewConstMetric(bgpChanges, prometheus.CounterValue, float64(b.Changes))
}

func (s *Server) bgp() *BGP {
	if s.opt.BGP == nil {
		return nil
	}
	return s.opt.BGP()
}
