// Package h2spec runs h2spec, the HTTP/2 conformance suite, against a
// built sluice with a TLS frontend (ALPN h2) and an h2c frontend, both in
// front of a real HTTP/1.1 server on 127.0.0.1, and fails naming every
// case that does not pass. h2spec is installed by .ci/run (pinned in
// .ci/h2spec/go.mod); without it on PATH the test skips.
package h2spec

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"encoding/xml"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"sluice/internal/testutil"
)

// body is what the server answers: more than one byte, so h2spec's flow
// control cases (a window of 1 must give a DATA frame of 1) have data.
var body = strings.Repeat("sluice h2spec\n", 256)

func TestH2spec(t *testing.T) {
	h2spec, err := exec.LookPath("h2spec")
	if err != nil {
		t.Skip("h2spec is not on PATH: install it with " +
			"`cd .ci/h2spec && go install tool` (as .ci/run does) to run the HTTP/2 conformance cases")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "sluice")
	if out, err := exec.Command("go", "build", "-o", bin, "sluice/cmd/sluice").CombinedOutput(); err != nil {
		t.Fatalf("build sluice: %v\n%s", err, out)
	}
	server := startServer(t)
	cert, key := selfSigned(t, dir)
	tlsFront, h2cFront := testutil.FreeAddr(t), testutil.FreeAddr(t)
	conf := fmt.Sprintf(`
[defaults]
timeout_connect = "2s"
timeout_client = "10s"
timeout_server = "10s"

[frontend.tls]
mode = "http"
bind = [%q]
default_backend = "web"
[[frontend.tls.tls]]
cert = %q
key = %q

[frontend.h2c]
mode = "http"
bind = [%q]
h2c = true
default_backend = "web"

[backend.web]
[[backend.web.server]]
name = "s1"
address = %q
`, tlsFront, cert, key, h2cFront, server)
	startSluice(t, bin, filepath.Join(dir, "sluice.toml"), conf, tlsFront, h2cFront)

	for _, tc := range []struct {
		name, front string
		flags       []string
	}{
		{"tls", tlsFront, []string{"-t", "-k"}},
		{"h2c", h2cFront, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			host, port, _ := net.SplitHostPort(tc.front)
			// -o is h2spec's wait for each expected frame: generous, since
			// CI runs the packages in parallel on two loaded cores; a
			// passing run never waits it out.
			base := append([]string{"-h", host, "-p", port, "-o", "20"}, tc.flags...)
			cases, out := runH2spec(t, h2spec, filepath.Join(dir, tc.name+".xml"), base)
			passed, failed := 0, []string{}
			for _, c := range cases {
				switch {
				case c.skipped:
				case c.failure == "":
					passed++
				case c.timeout():
					// A timeout may be the machine, not sluice: that case
					// once more, alone. A failure other than a timeout is
					// never retried.
					t.Logf("h2spec %s: %s (%s) timed out, retrying it once:\n%s", tc.name, c.id, c.desc, c.failure)
					again, aout := runH2spec(t, h2spec, filepath.Join(dir, tc.name+"-retry.xml"), slices.Concat(base, []string{c.id}))
					if len(again) == 1 && !again[0].skipped && again[0].failure == "" {
						t.Logf("h2spec %s: %s passes on retry", tc.name, c.id)
						passed++
						continue
					}
					failed = append(failed, fmt.Sprintf("%s (%s), twice", c.id, c.desc))
					out = append(out, aout...)
				default:
					failed = append(failed, fmt.Sprintf("%s (%s)", c.id, c.desc))
				}
			}
			t.Logf("h2spec %s: %d of %d cases pass", tc.name, passed, len(cases))
			if len(failed) > 0 {
				t.Errorf("h2spec %s: %d of %d cases fail: %s\n%s",
					tc.name, len(failed), len(cases), strings.Join(failed, ", "), failures(out))
			}
		})
	}
}

// h2case is one case of an h2spec report.
type h2case struct {
	id, desc string // id as h2spec takes it on its command line: "http2/6.5.3/1"
	skipped  bool
	failure  string // expected frames, then what came: empty when it passed
}

// timeout reports whether the case failed waiting: what came was nothing.
func (c h2case) timeout() bool {
	last := c.failure[strings.LastIndexByte(c.failure, '\n')+1:]
	return strings.TrimSpace(last) == "Timeout"
}

// runH2spec runs h2spec with args, its report in report, and returns its
// cases and output; it fails the test when h2spec ran none.
func runH2spec(t *testing.T, h2spec, report string, args []string) ([]h2case, []byte) {
	t.Helper()
	args = append([]string{"-j", report}, args...)
	// h2spec exits non-zero when a case fails: the report says which.
	out, runErr := exec.Command(h2spec, args...).CombinedOutput()
	suites, err := readReport(report)
	if err != nil {
		t.Fatalf("h2spec %s: %v (exit: %v)\n%s", strings.Join(args, " "), err, runErr, out)
	}
	var cases []h2case
	for _, s := range suites.Suites {
		for i, c := range s.Cases {
			hc := h2case{id: fmt.Sprintf("%s/%d", s.Package, i+1), desc: c.Desc, skipped: c.Skipped != nil}
			if c.Failure != nil || c.Error != nil {
				hc.failure = "failed"
				if c.Failure != nil && strings.TrimSpace(c.Failure.Content) != "" {
					hc.failure = strings.TrimSpace(c.Failure.Content)
				}
				if c.Error != nil && strings.TrimSpace(c.Error.Content) != "" {
					hc.failure = strings.TrimSpace(c.Error.Content)
				}
			}
			cases = append(cases, hc)
		}
	}
	if len(cases) == 0 {
		t.Fatalf("h2spec %s ran no case (exit: %v)\n%s", strings.Join(args, " "), runErr, out)
	}
	return cases, out
}

// junit is h2spec's -j report: one suite per section, its cases in order,
// so the n-th case of package "http2/6.5.3" is h2spec's "http2/6.5.3/n".
type junit struct {
	Suites []struct {
		Package string `xml:"package,attr"`
		Cases   []struct {
			Desc    string `xml:"classname,attr"`
			Failure *struct {
				Content string `xml:",chardata"`
			} `xml:"failure"`
			Error *struct {
				Content string `xml:",chardata"`
			} `xml:"error"`
			Skipped *struct{} `xml:"skipped"`
		} `xml:"testcase"`
	} `xml:"testsuite"`
}

func readReport(path string) (*junit, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("no report: %w", err)
	}
	var r junit
	if err := xml.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("report %s: %w", path, err)
	}
	return &r, nil
}

// failures keeps h2spec's "Failures:" summary (expected and actual frames).
func failures(out []byte) string {
	s := string(out)
	if i := strings.Index(s, "Failures:"); i >= 0 {
		return s[i:]
	}
	return ""
}

func startServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Write([]byte(body))
	}), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func startSluice(t *testing.T, bin, confPath, conf string, fronts ...string) {
	t.Helper()
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	logPath := confPath + ".log"
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "run", "-f", confPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		// SIGQUIT stops master and worker at once; SIGKILL would leave
		// the worker draining alone.
		cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		logf.Close()
		if t.Failed() {
			logs, _ := os.ReadFile(logPath)
			t.Logf("sluice logs:\n%s", logs)
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for _, front := range fronts {
		for {
			c, err := net.DialTimeout("tcp", front, time.Second)
			if err == nil {
				c.Close()
				break
			}
			select {
			case <-exited:
				t.Fatalf("sluice exited before listening on %s", front)
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("sluice did not listen on %s: %v", front, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// selfSigned writes an ECDSA P-256 certificate for 127.0.0.1 and its key.
func selfSigned(t *testing.T, dir string) (certPath, keyPath string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certPath, keyPath
}
