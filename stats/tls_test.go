package stats_test

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"sluice/conf"
	"sluice/internal/testpki"
	"sluice/internal/testutil"
)

// TestTLSHandshakeCounters: a TLS frontend's handshakes, completed and
// failed by reason, are in /api/stats, /metrics and on the page; a plain
// frontend has none.
func TestTLSHandshakeCounters(t *testing.T) {
	dir := t.TempDir()
	sca := testpki.NewCA(t, "server CA")
	srv := sca.Issue(t, "a.test", testpki.Options{DNS: []string{"a.test"}, Server: true})
	ca := testpki.NewCA(t, "client CA")
	good := ca.Issue(t, "alice", testpki.Options{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	src := fmt.Sprintf(`[stats]
bind = "{{STATS}}"
admin_token_file = "{{TOKEN_FILE}}"
[frontend.f]
mode = "http"
bind = ["{{FRONT}}"]
default_backend = "b"
[[frontend.f.tls]]
cert = %q
key = %q
[frontend.f.client_auth]
ca_file = %q
[frontend.g]
mode = "http"
bind = ["{{FRONT2}}"]
default_backend = "b"
[backend.b]
[[backend.b.server]]
name = "s"
address = %q
`, testpki.Write(t, dir, "srv.pem", srv.CertPEM), testpki.Write(t, dir, "srv.key", srv.KeyPEM), testpki.Write(t, dir, "ca.pem", ca.PEM), ln.Addr().String())
	e := startEdited(t, src, func(*conf.Config) {})
	roots := x509.NewCertPool()
	roots.AddCert(sca.Cert)
	handshake := func(leaf *testpki.Leaf) error {
		cfg := &tls.Config{RootCAs: roots, ServerName: "a.test"}
		if leaf != nil {
			cfg.Certificates = []tls.Certificate{leaf.Pair}
		}
		c, err := tls.Dial("tcp", e.front, cfg)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
		_, err = c.Read(make([]byte, 1)) // TLS 1.3: a refusal arrives here
		return err
	}
	if err := handshake(good); err != nil {
		t.Fatal(err)
	}
	if err := handshake(nil); err == nil {
		t.Fatal("served without a client certificate")
	}
	fe := e.eng.Front.Frontends[0].HTTP()
	testutil.WaitFor(t, "the no_cert failure counted", 5*time.Second, func() bool { return fe.Counters.Handshakes.Failed[0].Load() == 1 })

	snap := e.snapshot(t)
	h := snap.Frontends[0].TLS
	if h == nil {
		t.Fatal("/api/stats: frontend f has no tls counters")
	}
	if h.Handshakes != 1 || h.Failed != 1 || h.Failures["no_cert"] != 1 || len(h.Failures) != 9 {
		t.Errorf("/api/stats tls = %+v", *h)
	}
	if snap.Frontends[1].TLS != nil {
		t.Errorf("plain frontend g has tls counters %+v", *snap.Frontends[1].TLS)
	}
	mf := e.metrics(t)
	if got := metric(t, mf, "sluice_frontend_tls_handshakes_total", "frontend", "f"); got != 1 {
		t.Errorf("handshakes_total = %v", got)
	}
	for _, reason := range []string{"no_cert", "bad_cert", "unknown_ca", "revoked", "expired", "protocol", "timeout", "other"} {
		want := 0.0
		if reason == "no_cert" {
			want = 1
		}
		if got := metric(t, mf, "sluice_frontend_tls_handshake_failures_total", "frontend", "f", "reason", reason); got != want {
			t.Errorf("handshake_failures_total{reason=%s} = %v, want %v", reason, got, want)
		}
	}
	for _, m := range mf["sluice_frontend_tls_handshakes_total"].Metric {
		for _, l := range m.Label {
			if l.GetValue() == "g" {
				t.Error("handshakes_total has a series for plain frontend g")
			}
		}
	}
	body := e.get(t, "/", 200)
	m := regexp.MustCompile(`(?s)<small class="tls" id="tls:f"[^>]*>(.*?)</small>`).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("page has no tls line for frontend f")
	}
	cells := map[string]string{}
	for _, c := range regexp.MustCompile(`data-k="([a-z_]+)">([^<]*)<`).FindAllStringSubmatch(m[1], -1) {
		cells[c[1]] = c[2]
	}
	want := map[string]string{"tls_handshakes": "1", "tls_failed": "1", "tls_no_cert": "1"}
	if fmt.Sprint(cells) != fmt.Sprint(want) {
		t.Errorf("page tls line = %v, want %v (%s)", cells, want, m[1])
	}
	if strings.Contains(body, `id="tls:g"`) {
		t.Error("page shows a tls line for plain frontend g")
	}
}
