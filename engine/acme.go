package engine

import (
	"sync/atomic"
)

// acmeCounters lists the ACME orders and the expiry of each acme name's
// certificate, per frontend that serves it.
func (e *Engine) acmeCounters(add func(string, string, *atomic.Uint64, ...[2]string), gauge func(string, string, func() float64, ...[2]string)) {
	m := e.ACME
	if m == nil {
		return
	}
	const orders = "Orders to the ACME server ([acme]) that ended with a certificate (ok) or failed (failed, logged with the reason and retried later); renewals included."
	add("acme_orders_total", orders, &m.OrdersOK, [2]string{"result", "ok"})
	add("acme_orders_total", orders, &m.OrdersFailed, [2]string{"result", "failed"})
	for _, f := range e.Config.Frontends {
		for _, t := range f.TLS {
			for _, name := range t.ACME {
				gauge("tls_cert_expiry_seconds", certExpiryHelp,
					func() float64 { return m.ExpirySeconds(name) }, [2]string{"frontend", f.Name}, [2]string{"cert", name})
			}
		}
	}
}
