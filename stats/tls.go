package stats

import (
	"sluice/frontend"
	"sluice/l7"
)

// TLSCounters are a TLS frontend's handshakes with clients: those
// completed, and the failures by reason (l7.HandshakeReasons; every
// reason is present).
type TLSCounters struct {
	Handshakes uint64            `json:"handshakes"`
	Failures   map[string]uint64 `json:"failures"`
	Failed     uint64            `json:"failed"` // the sum of Failures
}

func tlsCounters(f *frontend.Frontend) *TLSCounters {
	p := f.HTTP()
	if p == nil || p.TLS == nil {
		return nil
	}
	h := &p.Counters.Handshakes
	tc := &TLSCounters{Handshakes: h.Completed.Load(), Failures: make(map[string]uint64, len(l7.HandshakeReasons))}
	for i, reason := range l7.HandshakeReasons {
		n := h.Failed[i].Load()
		tc.Failures[reason] = n
		tc.Failed += n
	}
	return tc
}
