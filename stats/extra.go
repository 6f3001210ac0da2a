package stats

import (
	"sort"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Counter is a figure from a part of sluice that has no column in the
// HAProxy-shaped tables: UDP flows, PROXY-protocol refusals, HTTP refusals
// by reason, DNS discovery, stick-table sync. The engine lists them; the
// page shows them under "other counters", /api/stats as "counters", and
// /metrics as sluice_NAME with the labels.
type Counter struct {
	Name   string      // metric name without the sluice_ prefix, e.g. "frontend_proxy_errors_total"
	Help   string      // one line for # HELP
	Labels [][2]string // name, value; the same names in the same order for every Counter of a Name
	Gauge  bool        // a level, not a running total
	Value  func() float64
}

// CounterValue is a Counter read at one moment.
type CounterValue struct {
	Name   string            `json:"name"`
	Labels map[string]string `json:"labels,omitempty"`
	Value  float64           `json:"value"`
	Text   string            `json:"-"` // labels as k="v",… for the page
}

func (s *Server) counterValues() []CounterValue {
	out := make([]CounterValue, 0, len(s.opt.Counters))
	for _, c := range s.opt.Counters {
		v := CounterValue{Name: c.Name, Value: c.Value()}
		var parts []string
		if len(c.Labels) > 0 {
			v.Labels = make(map[string]string, len(c.Labels))
			for _, l := range c.Labels {
				v.Labels[l[0]] = l[1]
				parts = append(parts, l[0]+"="+l[1])
			}
		}
		v.Text = strings.Join(parts, " ")
		out = append(out, v)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// extraDescs builds one Desc per counter name, once.
type extraDescs struct {
	once  sync.Once
	descs map[string]*prometheus.Desc
}

func (e *extraDescs) collect(cs []Counter, ch chan<- prometheus.Metric) {
	e.once.Do(func() {
		e.descs = map[string]*prometheus.Desc{}
		for _, c := range cs {
			if e.descs[c.Name] != nil {
				continue
			}
			var names []string
			for _, l := range c.Labels {
				names = append(names, l[0])
			}
			e.descs[c.Name] = prometheus.NewDesc("sluice_"+c.Name, c.Help, names, nil)
		}
	})
	for _, c := range cs {
		vt := prometheus.CounterValue
		if c.Gauge {
			vt = prometheus.GaugeValue
		}
		values := make([]string, len(c.Labels))
		for i, l := range c.Labels {
			values[i] = l[1]
		}
		ch <- prometheus.MustNewConstMetric(e.descs[c.Name], vt, c.Value(), values...)
	}
}
