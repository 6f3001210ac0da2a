// Package acme obtains certificates for sluice from pebble, Let's
// Encrypt's ACME test server, with real validation (no
// PEBBLE_VA_ALWAYS_VALID): pebble-challtestsrv resolves the test names to
// 127.0.0.1, and pebble validates tls-alpn-01 and http-01 against the ports
// sluice's frontends listen on. pebble and pebble-challtestsrv are
// installed by .ci/run (pinned in .ci/pebble/go.mod); without them on PATH
// the test skips.
package acme

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sluice/acme"
	"sluice/conf"
	"sluice/engine"
	"sluice/internal/sockets"
	"sluice/internal/testutil"
)

func TestACMEPebble(t *testing.T) {
	pebbleBin, err1 := exec.LookPath("pebble")
	challBin, err2 := exec.LookPath("pebble-challtestsrv")
	if err1 != nil || err2 != nil {
		t.Skip("pebble and pebble-challtestsrv are not on PATH: install them with " +
			"`cd .ci/pebble && go install tool` (as .ci/run does) to run the ACME end-to-end test")
	}
	dir := t.TempDir()
	p := startPebble(t, dir, pebbleBin, challBin)
	app := startApp(t)

	t.Run("tls-alpn-01", func(t *testing.T) {
		const name = "alpn.sluice.test"
		storage := t.TempDir()
		src := p.config(storage, "tls-alpn-01", name, app)

		// 1. Issued by pebble and served.
		a := startEngine(t, src, acme.Options{})
		first := waitServed(t, p, name, nil)
		get(t, p, name)
		if ok, failed := a.ACME.OrdersOK.Load(), a.ACME.OrdersFailed.Load(); ok != 1 || failed != 0 {
			t.Errorf("orders ok %d failed %d, want 1 and 0", ok, failed)
		}
		if s := a.ACME.ExpirySeconds(name); s < 3600 {
			t.Errorf("expiry seconds = %v, want the certificate's", s)
		}
		stop(a)

		// 2. A reload: a new engine on the same storage serves the same
		// certificate from its first handshake, without an order.
		b := startEngine(t, src, acme.Options{})
		if got := served(t, p, name); got == nil || got.SerialNumber.Cmp(first.SerialNumber) != 0 {
			t.Fatalf("after the reload: served %v, want the stored certificate %v", serial(got), first.SerialNumber)
		}
		get(t, p, name)
		if ok, failed := b.ACME.OrdersOK.Load(), b.ACME.OrdersFailed.Load(); ok != 0 || failed != 0 {
			t.Errorf("after the reload: orders ok %d failed %d, want none", ok, failed)
		}
		stop(b)

		// 3. Renewal without a reload: an engine whose renewal window
		// opens a few seconds after its start serves the stored
		// certificate first, then, with no reload, a new one.
		life := first.NotAfter.Sub(first.NotBefore)
		ratio := float64(time.Until(first.NotAfter)-3*time.Second) / float64(life)
		c := startEngine(t, src, acme.Options{RenewalWindowRatio: ratio, RenewCheckInterval: 500 * time.Millisecond, DisableARI: true})
		if got := served(t, p, name); got == nil || got.SerialNumber.Cmp(first.SerialNumber) != 0 {
			t.Fatalf("before the renewal: served %v, want %v", serial(got), first.SerialNumber)
		}
		renewed := waitServed(t, p, name, first)
		if !renewed.NotAfter.After(first.NotAfter) || c.ACME.OrdersOK.Load() < 1 {
			t.Errorf("renewed certificate %v (not after %v), orders %d", renewed.SerialNumber, renewed.NotAfter, c.ACME.OrdersOK.Load())
		}
		get(t, p, name)
		stop(c)

		// 4. A worker that starts with a stored certificate already due
		// renews it at its start, not at the maintenance's first check
		// (left at its default here: 10 minutes).
		d := startEngine(t, src, acme.Options{RenewalWindowRatio: 1, DisableARI: true})
		waitServed(t, p, name, renewed)
		if ok := d.ACME.OrdersOK.Load(); ok < 1 {
			t.Errorf("renewal at the start: orders ok %d", ok)
		}
		stop(d)
	})

	// Two workers at once on one storage and the same listeners (a reload
	// while the name is being ordered): one order between them, and both
	// serve its certificate.
	t.Run("two workers", func(t *testing.T) {
		const name = "two.sluice.test"
		src := p.config(t.TempDir(), "tls-alpn-01", name, app)
		a := startEngine(t, src, acme.Options{})
		b := startWorker(t, src, acme.Options{}, a.Sockets)
		waitServed(t, p, name, nil)
		testutil.WaitFor(t, "both workers to hold the certificate", 60*time.Second, func() bool {
			return a.ACME.ExpirySeconds(name) > 0 && b.ACME.ExpirySeconds(name) > 0
		})
		if ok := a.ACME.OrdersOK.Load() + b.ACME.OrdersOK.Load(); ok != 1 {
			t.Errorf("orders of the two workers: %d, want 1", ok)
		}
		if failed := a.ACME.OrdersFailed.Load() + b.ACME.OrdersFailed.Load(); failed != 0 {
			t.Errorf("failed orders: %d", failed)
		}
		stop(b)
		stop(a)
	})

	t.Run("http-01", func(t *testing.T) {
		const name = "http.sluice.test"
		storage := t.TempDir()
		e := startEngine(t, p.config(storage, "http-01", name, app), acme.Options{})
		waitServed(t, p, name, nil)
		get(t, p, name)
		if ok, failed := e.ACME.OrdersOK.Load(), e.ACME.OrdersFailed.Load(); ok != 1 || failed != 0 {
			t.Errorf("orders ok %d failed %d, want 1 and 0", ok, failed)
		}
		// A path under the challenge prefix that is no token of an order
		// is routed as usual.
		resp, err := http.Get("http://" + p.plain + "/.well-known/acme-challenge/nothing-here")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != "app\n" {
			t.Errorf("unknown token: got %d %q, want the app's answer", resp.StatusCode, body)
		}
		stop(e)
	})
}

// pebble is a running pebble and its DNS.
type pebble struct {
	dir        string // pebble's directory URL
	mgmt       string // management host:port
	caFile     string // roots of pebble's own https (ACME and management)
	tlsFront   string // where pebble validates tls-alpn-01: the TLS frontend
	plain      string // where pebble validates http-01: the plain frontend
	issuerRoot *x509.CertPool
	apiRoots   *x509.CertPool
}

func startPebble(t *testing.T, dir, pebbleBin, challBin string) *pebble {
	caFile, keyFile, apiRoots := selfSigned(t, dir)
	p := &pebble{caFile: caFile, apiRoots: apiRoots,
		tlsFront: testutil.FreeAddr(t), plain: testutil.FreeAddr(t)}
	dns, chMgmt := testutil.FreeAddr(t), testutil.FreeAddr(t)
	listen, mgmt := testutil.FreeAddr(t), testutil.FreeAddr(t)
	p.dir, p.mgmt = "https://"+listen+"/dir", mgmt
	_, tlsPort, _ := net.SplitHostPort(p.tlsFront)
	_, httpPort, _ := net.SplitHostPort(p.plain)
	run(t, exec.Command(challBin, "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
		"-dnsserver", dns, "-management", chMgmt,
		"-http01", "", "-https01", "", "-tlsalpn01", "", "-doh", ""))
	testutil.WaitFor(t, "pebble-challtestsrv", 10*time.Second, func() bool { return dials(chMgmt) })

	cfg := map[string]any{"pebble": map[string]any{
		"listenAddress": listen, "managementListenAddress": mgmt,
		"certificate": caFile, "privateKey": keyFile,
		"httpPort": atoi(httpPort), "tlsPort": atoi(tlsPort),
		"externalAccountBindingRequired": false,
		"retryAfter":                     map[string]int{"authz": 1, "order": 1},
		"keyAlgorithm":                   "ecdsa",
		"profiles":                       map[string]any{"default": map[string]any{"description": "test", "validityPeriod": 7776000}},
	}}
	b, _ := json.Marshal(cfg)
	cfgFile := filepath.Join(dir, "pebble.json")
	if err := os.WriteFile(cfgFile, b, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(pebbleBin, "-config", cfgFile, "-dnsserver", dns)
	// No random waits before validations nor rejected nonces (the client
	// copes, but slowly); authorizations are not reused, so that every
	// order is validated for real. PEBBLE_VA_ALWAYS_VALID stays unset.
	cmd.Env = append(os.Environ(), "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0", "PEBBLE_AUTHZREUSE=0", "PEBBLE_VA_ALWAYS_VALID=")
	run(t, cmd)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: apiRoots}}}
	testutil.WaitFor(t, "pebble's directory", 20*time.Second, func() bool {
		resp, err := client.Get(p.dir)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	// The root pebble issues under, made at its start.
	resp, err := client.Get("https://" + mgmt + "/roots/0")
	if err != nil {
		t.Fatal(err)
	}
	root, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	p.issuerRoot = x509.NewCertPool()
	if !p.issuerRoot.AppendCertsFromPEM(root) {
		t.Fatalf("pebble's /roots/0: %q", root)
	}
	return p
}

// config is a sluice configuration with a TLS frontend for name (ACME
// from p) and a plain one, both in front of app.
func (p *pebble) config(storage, challenge, name, app string) string {
	return fmt.Sprintf(`
[acme]
directory = %q
email = "ops@sluice.test"
storage = %q
ca_file = %q
challenge = %q

[defaults]
timeout_connect = "2s"
timeout_client = "10s"
timeout_server = "10s"

[frontend.https]
mode = "http"
bind = [%q]
default_backend = "app"
[[frontend.https.tls]]
acme = [%q]

[frontend.plain]
mode = "http"
bind = [%q]
default_backend = "app"

[backend.app]
[[backend.app.server]]
name = "a1"
address = %q
`, p.dir, storage, p.caFile, challenge, p.tlsFront, name, p.plain, app)
}

func startEngine(t *testing.T, src string, opts acme.Options) *engine.Engine {
	t.Helper()
	return startWorker(t, src, opts, nil)
}

// startWorker starts an engine on the sockets of have (nil: its own), as
// a master hands them to the new worker of a reload.
func startWorker(t *testing.T, src string, opts acme.Options, have sockets.Set) *engine.Engine {
	t.Helper()
	cfg, err := conf.Parse(filepath.Join(t.TempDir(), "sluice.toml"), []byte(src))
	if err != nil {
		t.Fatalf("config: %v\n%s", err, src)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	e, err := engine.StartWith(cfg, have, log, engine.Options{ACME: opts})
	if err != nil {
		t.Fatal(err)
	}
	if e.ACME == nil {
		t.Fatal("engine has no ACME manager")
	}
	t.Cleanup(func() { stop(e) })
	return e
}

func stop(e *engine.Engine) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	e.Shutdown(ctx)
}

// served is the certificate the TLS frontend serves for name, verified
// against pebble's issuance root; nil when the handshake fails or the
// certificate does not verify.
func served(t *testing.T, p *pebble, name string) *x509.Certificate {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", p.tlsFront, &tls.Config{ServerName: name, RootCAs: p.issuerRoot})
	if err != nil {
		return nil
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0]
}

// waitServed waits until a certificate other than not (nil: any) is
// served for name and verifies, and returns it.
func waitServed(t *testing.T, p *pebble, name string, not *x509.Certificate) *x509.Certificate {
	t.Helper()
	var got *x509.Certificate
	testutil.WaitFor(t, "a certificate from pebble for "+name, 90*time.Second, func() bool {
		got = served(t, p, name)
		return got != nil && (not == nil || got.SerialNumber.Cmp(not.SerialNumber) != 0)
	})
	return got
}

// get fetches / through the TLS frontend, verifying its certificate.
func get(t *testing.T, p *pebble, name string) {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.issuerRoot, ServerName: name},
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", p.tlsFront)
		}}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get("https://" + name + "/")
	if err != nil {
		t.Fatalf("GET over the ACME certificate: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "app\n" {
		t.Fatalf("GET: %d %q", resp.StatusCode, body)
	}
}

func startApp(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "app\n") })}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// run starts cmd, its output in the test log, and kills it when the test
// ends.
func run(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	out := &testLog{t: t, name: filepath.Base(cmd.Path)}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
}

type testLog struct {
	t    *testing.T
	name string
}

func (l *testLog) Write(b []byte) (int, error) {
	if testing.Verbose() {
		for _, line := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
			fmt.Fprintf(os.Stderr, "%s: %s\n", l.name, line)
		}
	}
	return len(b), nil
}

func dials(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err == nil {
		c.Close()
	}
	return err == nil
}

func atoi(s string) int {
	var n int
	fmt.Sscan(s, &n)
	return n
}

func serial(c *x509.Certificate) any {
	if c == nil {
		return "nothing"
	}
	return c.SerialNumber
}

// selfSigned writes a certificate for pebble's own https (localhost,
// 127.0.0.1), which is also its root, and its key.
func selfSigned(t *testing.T, dir string) (certPath, keyPath string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "pebble test"},
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath = filepath.Join(dir, "pebble.pem"), filepath.Join(dir, "pebble.key")
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(leaf)
	return certPath, keyPath, pool
}
