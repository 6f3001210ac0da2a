package engine

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sluice/conf"
	"sluice/internal/ocsptest"
)

// TestOCSPFetchInWorker: a TLS frontend with ocsp_fetch gets its staple
// from the responder (a real `openssl ocsp`) once the engine serves; a
// client of the frontend sees it, and /metrics and the stats page show
// the certificate's expiry, the staple's and the fetch. Shutdown stops
// the fetcher.
func TestOCSPFetchInWorker(t *testing.T) {
	ocsptest.Openssl(t)
	pki := ocsptest.New(t)
	notAfter := time.Now().Add(30 * 24 * time.Hour)
	pki.Plan(t, "www.test", notAfter, false)
	url := pki.Responder(t, 2*time.Hour)
	leaf := pki.Issue(t, "www.test", notAfter, url, false)
	l, err := net.Listen("tcp", "127.0.0.1:0") // a free port for the stats listener
	if err != nil {
		t.Fatal(err)
	}
	statsAddr := l.Addr().String()
	l.Close()
	cfg, err := conf.Parse(filepath.Join(pki.Dir, "sluice.toml"), []byte(fmt.Sprintf(`[stats]
bind = %q
[frontend.web]
mode = "http"
bind = ["127.0.0.1:0"]
default_backend = "b"
[[frontend.web.tls]]
cert = %q
key = %q
ocsp_fetch = true
[[backend.b.server]]
address = "127.0.0.1:1"
`, statsAddr, leaf.Chain, leaf.Key)))
	if err != nil {
		t.Fatal(err)
	}
	e, err := Start(cfg, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			e.Shutdown(context.Background())
		}
	})
	sc := e.Front.Frontends[0].TLSCerts()[0]
	select {
	case <-sc.Fetched():
	case <-time.After(30 * time.Second):
		t.Fatal("no OCSP fetch in 30s")
	}
	if sc.FetchOK.Load() != 1 {
		t.Fatalf("fetches: ok %d, error %d", sc.FetchOK.Load(), sc.FetchErrors.Load())
	}

	roots := x509.NewCertPool()
	roots.AddCert(pki.CA)
	addr := e.Front.Frontends[0].Config().Bind[0]
	for k, s := range e.Sockets {
		if k.Network == "tcp" && k.Addr == addr {
			addr = s.Listener.Addr().String()
		}
	}
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, &tls.Config{RootCAs: roots, ServerName: "www.test"})
	if err != nil {
		t.Fatal(err)
	}
	staple := c.ConnectionState().OCSPResponse
	c.Close()
	if len(staple) == 0 || !bytes.Equal(staple, sc.Current().OCSPStaple) {
		t.Fatalf("client saw a staple of %d bytes", len(staple))
	}

	get := func(path string) string {
		resp, err := http.Get("http://" + statsAddr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	metrics := get("/metrics")
	for _, want := range []string{
		`sluice_tls_cert_expiry_seconds{cert="www.test",frontend="web"} 2.59`, // 30 days: 2.592e+06
		`sluice_tls_ocsp_fetches_total{cert="www.test",frontend="web",result="ok"} 1`,
		`sluice_tls_ocsp_fetches_total{cert="www.test",frontend="web",result="error"} 0`,
		`sluice_tls_ocsp_staple_expiry_seconds{cert="www.test",frontend="web"} `,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if page := get("/"); !strings.Contains(page, "tls_cert_expiry_seconds") || !strings.Contains(page, "cert=www.test") {
		t.Error("the stats page does not show the certificate's expiry")
	}

	e.Shutdown(context.Background()) // returns once the fetcher is gone
	stopped = true
}
