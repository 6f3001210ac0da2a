package stats_test

import (
	"fmt"
	"io"
	"net/http/httptest"
	"testing"
	"time"

	"sluice/backend"
	"sluice/conf"
	"sluice/stats"
)

// bigStats is a stats server over n backends of m http servers each, every
// server with traffic and a check result on record.
func bigStats(b testing.TB, n, m int) *stats.Server {
	var bes []*backend.Backend
	for i := range n {
		bc := &conf.Backend{Name: fmt.Sprintf("be%03d", i), Mode: conf.ModeHTTP, Balance: "roundrobin"}
		for j := range m {
			bc.Servers = append(bc.Servers, conf.Server{Name: fmt.Sprintf("s%02d", j), Address: fmt.Sprintf("10.0.%d.%d:80", i, j), Weight: 1})
		}
		be, err := backend.New(bc)
		if err != nil {
			b.Fatal(err)
		}
		for _, s := range be.Servers() {
			s.Counters.Sessions.Add(12345)
			s.Counters.BytesIn.Add(1 << 20)
			s.Counters.Resp[2].Add(12000)
			s.SetLastCheck(backend.CheckResult{At: time.Now(), OK: true, Desc: "L7OK", Code: 200, Duration: time.Millisecond})
		}
		bes = append(bes, be)
	}
	return stats.New(stats.Options{Backends: bes, MaxConn: 1000})
}

// BenchmarkMetricsScrape100x10 scrapes /metrics (collect and encode, the
// Go and process collectors included) over 100 backends × 10 servers. The
// target is well under 50 ms per scrape.
func BenchmarkMetricsScrape100x10(b *testing.B) {
	s := bigStats(b, 100, 10)
	h := s.Handler()
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		if rec.Code != 200 {
			b.Fatal(rec.Code)
		}
		b.SetBytes(int64(rec.Body.Len()))
		io.Copy(io.Discard, rec.Body)
	}
}

// BenchmarkPage100x10 renders the HTML page over the same backends.
func BenchmarkPage100x10(b *testing.B) {
	s := bigStats(b, 100, 10)
	h := s.Handler()
	for b.Loop() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
		if rec.Code != 200 {
			b.Fatal(rec.Code)
		}
	}
}
