package l4_test

import (
	"net"
	"sync/atomic"
	"testing"
	"time"

	"sluice/l4"
)

// BenchmarkUDPFlowPerDatagram is the bench's udp row in-process: each
// request/response is its own flow (responses = 1).
func BenchmarkUDPFlowPerDatagram(b *testing.B) { benchUDP(b, 1) }

// BenchmarkUDPLongFlows reuses one flow per client.
func BenchmarkUDPLongFlows(b *testing.B) { benchUDP(b, 0) }

func benchUDP(b *testing.B, responses int) {
	be := echoBackend(b)
	ln, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	var sessions, in, out, errs, denied atomic.Uint64
	var current atomic.Int64
	p, _ := l4.NewUDPProxy([]net.PacketConn{ln}, l4.UDPOptions{Backend: be, Idle: time.Minute, Responses: responses,
		Totals: l4.UDPTotals{Sessions: &sessions, Current: &current, BytesIn: &in, BytesOut: &out, Errors: &errs, Denied: &denied}})
	p.Serve()
	defer p.Close()
	b.SetParallelism(8)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		c, err := net.DialUDP("udp4", nil, ln.LocalAddr().(*net.UDPAddr))
		if err != nil {
			b.Error(err)
			return
		}
		defer c.Close()
		msg := make([]byte, 64)
		buf := make([]byte, 2048)
		for pb.Next() {
			c.Write(msg)
			c.SetReadDeadline(time.Now().Add(time.Second))
			if _, err := c.Read(buf); err != nil {
				continue // lost; the next one goes on
			}
		}
	})
}
