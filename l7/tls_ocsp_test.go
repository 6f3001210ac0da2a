package l7_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"sluice/conf"
	"sluice/internal/ocsptest"
	"sluice/l7"
)

// serveTLS accepts TLS connections on 127.0.0.1 with cfg, finishes each
// handshake and closes it.
func serveTLS(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.SetDeadline(time.Now().Add(10 * time.Second))
			c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	return ln.Addr().String()
}

// goStaple is the OCSP response a Go client sees in the handshake.
func goStaple(t *testing.T, addr string, pki *ocsptest.PKI, name string) []byte {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AddCert(pki.CA)
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, &tls.Config{RootCAs: roots, ServerName: name})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.ConnectionState().OCSPResponse
}

// sClientStatus is what `openssl s_client -status` prints about the
// staple.
func sClientStatus(t *testing.T, addr string, pki *ocsptest.PKI, name string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "openssl", "s_client", "-connect", addr, "-servername", name, "-status",
		"-CAfile", pki.Dir+"/ca.pem")
	cmd.Stdin = strings.NewReader("")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("openssl s_client: %v\n%s", err, out)
	}
	return string(out)
}

func loadPair(t *testing.T, leaf *ocsptest.Leaf) *tls.Certificate {
	t.Helper()
	p, err := conf.LoadKeyPair(leaf.Chain, leaf.Key)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// runFetcher runs c.Run until the test ends and waits for its first fetch.
func runFetcher(t *testing.T, c *l7.ServedCert) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx, slog.New(slog.NewTextHandler(testLog{t}, nil)), "web"); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-c.Fetched():
	case <-time.After(30 * time.Second):
		t.Fatal("no fetch in 30s")
	}
}

type testLog struct{ t *testing.T }

func (l testLog) Write(b []byte) (int, error) {
	l.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

func checkGood(t *testing.T, der []byte, pki *ocsptest.PKI, leaf *ocsptest.Leaf) {
	t.Helper()
	if len(der) == 0 {
		t.Fatal("no OCSP response stapled")
	}
	r, err := ocsp.ParseResponseForCert(der, leaf.Cert, pki.CA)
	if err != nil || r.Status != ocsp.Good {
		t.Fatalf("staple: %v, status %v", err, r)
	}
}

// TestOCSPFetchStaples: with ocsp_fetch, the worker asks the certificate's
// responder (a real `openssl ocsp`) and staples the answer: a Go client
// and `openssl s_client -status` see a good status.
func TestOCSPFetchStaples(t *testing.T) {
	ocsptest.Openssl(t)
	pki := ocsptest.New(t)
	pki.Plan(t, "www.test", time.Now().Add(90*24*time.Hour), false)
	url := pki.Responder(t, 2*time.Hour)
	leaf := pki.Issue(t, "www.test", time.Now().Add(90*24*time.Hour), url, false)
	pair := loadPair(t, leaf)
	sc, err := l7.NewServedCert(pair, true)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := l7.NewTLS([]*tls.Certificate{pair})
	if err != nil {
		t.Fatal(err)
	}
	l7.StapleTLS(cfg, []*l7.ServedCert{sc})
	addr := serveTLS(t, cfg)
	if got := goStaple(t, addr, pki, "www.test"); len(got) != 0 {
		t.Fatal("stapled before any fetch")
	}
	runFetcher(t, sc)
	if sc.FetchOK.Load() != 1 || sc.FetchErrors.Load() != 0 {
		t.Fatalf("fetches ok %d, errors %d", sc.FetchOK.Load(), sc.FetchErrors.Load())
	}
	checkGood(t, goStaple(t, addr, pki, "www.test"), pki, leaf)
	if exp := time.Until(sc.StapleExpiry()); exp < time.Hour || exp > 2*time.Hour+time.Minute {
		t.Errorf("staple expires in %v, want about 2h", exp)
	}
	out := sClientStatus(t, addr, pki, "www.test")
	for _, want := range []string{"OCSP Response Status: successful", "Cert Status: good"} {
		if !strings.Contains(out, want) {
			t.Errorf("s_client -status lacks %q:\n%s", want, out)
		}
	}
	if pair.OCSPStaple != nil {
		t.Error("the certificate conf loaded was changed in place (copy on write)")
	}
}

// TestOCSPFileStaple: a response from the ocsp file is stapled as it is.
func TestOCSPFileStaple(t *testing.T) {
	ocsptest.Openssl(t)
	pki := ocsptest.New(t)
	leaf := pki.Issue(t, "www.test", time.Now().Add(90*24*time.Hour), "", false)
	resp, err := os.ReadFile(pki.Response(t, leaf, time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	pair := loadPair(t, leaf)
	pair.OCSPStaple = resp // what conf.Parse does with ocsp = "…"
	sc, err := l7.NewServedCert(pair, false)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := l7.NewTLS([]*tls.Certificate{pair})
	if err != nil {
		t.Fatal(err)
	}
	l7.StapleTLS(cfg, []*l7.ServedCert{sc})
	addr := serveTLS(t, cfg)
	if got := goStaple(t, addr, pki, "www.test"); !bytes.Equal(got, resp) {
		t.Fatalf("client saw %d bytes, want the file's %d", len(got), len(resp))
	}
	if !sc.Stapled() || time.Until(sc.StapleExpiry()) <= 0 {
		t.Errorf("stapled %v, expiry %v", sc.Stapled(), sc.StapleExpiry())
	}
	if out := sClientStatus(t, addr, pki, "www.test"); !strings.Contains(out, "Cert Status: good") {
		t.Errorf("s_client -status:\n%s", out)
	}
}

// TestOCSPFetchFailureKeepsStaple: when the responder cannot be reached,
// the failure is counted and the staple from the file is still served.
func TestOCSPFetchFailureKeepsStaple(t *testing.T) {
	ocsptest.Openssl(t)
	pki := ocsptest.New(t)
	// A port nothing listens on any more: the fetch is refused.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String() + "/"
	ln.Close()
	leaf := pki.Issue(t, "www.test", time.Now().Add(90*24*time.Hour), dead, false)
	resp, err := os.ReadFile(pki.Response(t, leaf, time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	pair := loadPair(t, leaf)
	pair.OCSPStaple = resp
	sc, err := l7.NewServedCert(pair, true)
	if err != nil {
		t.Fatal(err)
	}
	sc.FetchNow()
	cfg, _ := l7.NewTLS([]*tls.Certificate{pair})
	l7.StapleTLS(cfg, []*l7.ServedCert{sc})
	addr := serveTLS(t, cfg)
	runFetcher(t, sc)
	if sc.FetchErrors.Load() != 1 || sc.FetchOK.Load() != 0 {
		t.Fatalf("fetches ok %d, errors %d", sc.FetchOK.Load(), sc.FetchErrors.Load())
	}
	if got := goStaple(t, addr, pki, "www.test"); !bytes.Equal(got, resp) {
		t.Fatalf("the old staple is gone after a failed fetch (%d bytes served)", len(got))
	}
}

// TestOCSPFetchRevoked: a responder that says "revoked" is counted, and
// nothing is stapled.
func TestOCSPFetchRevoked(t *testing.T) {
	ocsptest.Openssl(t)
	pki := ocsptest.New(t)
	pki.Plan(t, "www.test", time.Now().Add(90*24*time.Hour), true)
	url := pki.Responder(t, time.Hour)
	leaf := pki.Issue(t, "www.test", time.Now().Add(90*24*time.Hour), url, true)
	pair := loadPair(t, leaf)
	sc, err := l7.NewServedCert(pair, true)
	if err != nil {
		t.Fatal(err)
	}
	cfg, _ := l7.NewTLS([]*tls.Certificate{pair})
	l7.StapleTLS(cfg, []*l7.ServedCert{sc})
	addr := serveTLS(t, cfg)
	runFetcher(t, sc)
	if sc.FetchRevoked.Load() != 1 {
		t.Fatalf("revoked fetches %d (ok %d, errors %d)", sc.FetchRevoked.Load(), sc.FetchOK.Load(), sc.FetchErrors.Load())
	}
	if got := goStaple(t, addr, pki, "www.test"); len(got) != 0 {
		t.Fatal("a revoked status was stapled")
	}
}

// TestOCSPRefreshIn: the staple is renewed at half its validity or an hour
// before its next update, whichever comes first.
func TestOCSPRefreshIn(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		this, next time.Time
		want       time.Duration
	}{
		{now.Add(-time.Hour), now.Add(23 * time.Hour), 11 * time.Hour},     // half first
		{now, now.Add(90 * time.Minute), 30 * time.Minute},                 // an hour before next first
		{now, time.Time{}, time.Hour},                                      // no next update
		{now.Add(-2 * time.Hour), now.Add(-time.Minute), 10 * time.Second}, // past: soon, never a loop
	} {
		if got := l7.RefreshIn(tc.this, tc.next, now); got != tc.want {
			t.Errorf("refreshIn(%v, %v) = %v, want %v", tc.this, tc.next, got, tc.want)
		}
	}
}
