package engine

import (
	"time"

	"sluice/stats"
)

// certExpiryHelp is the help of sluice_tls_cert_expiry_seconds, for file
// and ACME certificates alike (one metric, one help).
const certExpiryHelp = "Seconds until the certificate's NotAfter (negative: expired); cert is its first DNS name or subject CN, or the acme name (0 while none is issued yet)."

// certCounters are the figures of the frontends' certificates: expiry,
// and the OCSP staple and its fetches (issue 22).
func (e *Engine) certCounters() []stats.Counter {
	var out []stats.Counter
	for _, f := range e.Front.Frontends {
		for _, c := range f.TLSCerts() {
			l := [][2]string{{"frontend", f.Name}, {"cert", c.Name}}
			notAfter := c.Leaf.NotAfter
			out = append(out, stats.Counter{Name: "tls_cert_expiry_seconds", Gauge: true, Labels: l,
				Help:  certExpiryHelp,
				Value: func() float64 { return time.Until(notAfter).Seconds() }})
			if !c.Fetch && !c.Stapled() {
				continue
			}
			out = append(out, stats.Counter{Name: "tls_ocsp_staple_expiry_seconds", Gauge: true, Labels: l,
				Help: "Seconds until the next update of the OCSP response stapled (negative: expired, from an ocsp file not refreshed by a reload); 0 while none is stapled or it gives no next update.",
				Value: func() float64 {
					if exp := c.StapleExpiry(); !exp.IsZero() && c.Stapled() {
						return time.Until(exp).Seconds()
					}
					return 0
				}})
			if !c.Fetch {
				continue
			}
			for _, r := range []struct {
				result string
				v      func() uint64
			}{{"ok", c.FetchOK.Load}, {"error", c.FetchErrors.Load}, {"revoked", c.FetchRevoked.Load}} {
				out = append(out, stats.Counter{Name: "tls_ocsp_fetches_total",
					Labels: append(append([][2]string{}, l...), [2]string{"result", r.result}),
					Help:   "OCSP fetches (ocsp_fetch) by result: ok (stapled), error (responder unreachable or a bad answer: the old staple is kept until it expires), revoked (nothing stapled).",
					Value:  func() float64 { return float64(r.v()) }})
			}
		}
	}
	return out
}
