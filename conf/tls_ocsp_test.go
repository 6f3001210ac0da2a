package conf_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sluice/conf"
	"sluice/internal/ocsptest"
)

func ocspConf(leaf *ocsptest.Leaf, extra string) string {
	return strings.Replace(filesBase, "%s", fmt.Sprintf("[[frontend.web.tls]]\ncert = %q\nkey = %q\n%s\n", leaf.Chain, leaf.Key, extra), 1)
}

// problemAt finds the problem at key whose message holds want.
func problemAt(t *testing.T, ps []conf.Problem, key, want string) {
	t.Helper()
	for _, p := range ps {
		if p.Key == key && strings.Contains(p.Msg, want) && p.Line > 0 {
			return
		}
	}
	t.Fatalf("no problem at %s naming %q in %v", key, want, ps)
}

func parseErrs(t *testing.T, src string) []conf.Problem {
	t.Helper()
	_, err := conf.Parse("t.toml", []byte(src))
	errs, ok := err.(conf.Errors)
	if !ok {
		t.Fatalf("err = %v, want conf.Errors", err)
	}
	return errs
}

// TestOCSPFile: a good response from the certificate's CA is read at Parse
// and stapled; one for another certificate or saying "revoked" is refused
// with the file named; ocsp_fetch needs a responder URL and the issuer.
func TestOCSPFile(t *testing.T) {
	ocsptest.Openssl(t)
	pki := ocsptest.New(t)
	year := time.Now().Add(365 * 24 * time.Hour)
	good := pki.Issue(t, "good.test", year, "http://127.0.0.1:1/", false)
	other := pki.Issue(t, "other.test", year, "", false)
	revoked := pki.Issue(t, "revoked.test", year, "", true)
	goodResp := pki.Response(t, good, time.Hour)

	t.Run("good", func(t *testing.T) {
		cfg, err := conf.Parse("t.toml", []byte(ocspConf(good, fmt.Sprintf("ocsp = %q\nocsp_fetch = true", goodResp))))
		if err != nil {
			t.Fatal(err)
		}
		want, _ := os.ReadFile(goodResp)
		tl := cfg.Frontend("web").TLS[0]
		if !bytes.Equal(tl.OCSPStaple, want) || !bytes.Equal(tl.Pair.OCSPStaple, want) || !tl.OCSPFetch {
			t.Fatalf("staple not loaded: %d bytes, pair %d, fetch %v", len(tl.OCSPStaple), len(tl.Pair.OCSPStaple), tl.OCSPFetch)
		}
		if len(cfg.Warnings) > 0 {
			t.Errorf("warnings: %v", cfg.Warnings)
		}
	})
	t.Run("another certificate", func(t *testing.T) {
		problemAt(t, parseErrs(t, ocspConf(other, fmt.Sprintf("ocsp = %q", goodResp))), "frontend.web.tls.0.ocsp", "not a valid OCSP response for the certificate other.test")
	})
	t.Run("revoked", func(t *testing.T) {
		resp := pki.Response(t, revoked, time.Hour)
		problemAt(t, parseErrs(t, ocspConf(revoked, fmt.Sprintf("ocsp = %q", resp))), "frontend.web.tls.0.ocsp", "was revoked at")
	})
	t.Run("not a response", func(t *testing.T) {
		bad := filepath.Join(t.TempDir(), "bad.der")
		os.WriteFile(bad, []byte("not der"), 0o600)
		problemAt(t, parseErrs(t, ocspConf(good, fmt.Sprintf("ocsp = %q", bad))), "frontend.web.tls.0.ocsp", bad)
	})
	t.Run("fetch without a responder", func(t *testing.T) {
		problemAt(t, parseErrs(t, ocspConf(other, "ocsp_fetch = true")), "frontend.web.tls.0.ocsp_fetch", "names no OCSP responder")
	})
	t.Run("fetch without the issuer", func(t *testing.T) {
		// The chain without the CA: the request names the issuer's key.
		leafOnly := filepath.Join(t.TempDir(), "leaf.pem")
		chain, _ := os.ReadFile(good.Chain)
		end := bytes.Index(chain, []byte("-----END CERTIFICATE-----\n")) + len("-----END CERTIFICATE-----\n")
		os.WriteFile(leafOnly, chain[:end], 0o600)
		l := *good
		l.Chain = leafOnly
		problemAt(t, parseErrs(t, ocspConf(&l, "ocsp_fetch = true")), "frontend.web.tls.0.ocsp_fetch", "append the certificate of the CA")
	})
}

// TestOCSPFileExpired: a response past its next update is not stapled,
// with a warning that says what to do.
func TestOCSPFileExpired(t *testing.T) {
	ocsptest.Openssl(t)
	pki := ocsptest.New(t)
	good := pki.Issue(t, "good.test", time.Now().Add(365*24*time.Hour), "", false)
	resp := pki.Response(t, good, time.Minute)
	restore := conf.SetNow(func() time.Time { return time.Now().Add(2 * time.Hour) })
	defer restore()
	cfg, err := conf.Parse("t.toml", []byte(ocspConf(good, fmt.Sprintf("ocsp = %q", resp))))
	if err != nil {
		t.Fatal(err)
	}
	if tl := cfg.Frontend("web").TLS[0]; tl.OCSPStaple != nil || tl.Pair.OCSPStaple != nil {
		t.Fatal("an expired response was stapled")
	}
	problemAt(t, cfg.Warnings, "frontend.web.tls.0.ocsp", "it is not stapled")
}

// TestCertExpiryWarning: `check` warns about a certificate expiring within
// 14 days, and about an expired one (a warning too: see certExpiry).
func TestCertExpiryWarning(t *testing.T) {
	pki := ocsptest.New(t)
	soon := pki.Issue(t, "soon.test", time.Now().Add(5*24*time.Hour), "", false)
	cfg, err := conf.Parse("t.toml", []byte(ocspConf(soon, "")))
	if err != nil {
		t.Fatal(err)
	}
	problemAt(t, cfg.Warnings, "frontend.web.tls.0.cert", "(soon.test) expires in 5 days")

	restore := conf.SetNow(func() time.Time { return time.Now().Add(6 * 24 * time.Hour) })
	defer restore()
	cfg, err = conf.Parse("t.toml", []byte(ocspConf(soon, "")))
	if err != nil {
		t.Fatal(err)
	}
	problemAt(t, cfg.Warnings, "frontend.web.tls.0.cert", "(soon.test) expired at")

	// A client certificate sluice presents to its servers too.
	be := strings.Replace(filesBase, "%s", fmt.Sprintf("[backend.app.tls]\ncert = %q\nkey = %q\n", soon.Chain, soon.Key), 1)
	cfg, err = conf.Parse("t.toml", []byte(be))
	if err != nil {
		t.Fatal(err)
	}
	problemAt(t, cfg.Warnings, "backend.app.tls.cert", "(soon.test) expired at")

	later := pki.Issue(t, "later.test", time.Now().Add(60*24*time.Hour), "", false)
	cfg, err = conf.Parse("t.toml", []byte(ocspConf(later, "")))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Warnings) > 0 {
		t.Errorf("warnings for a certificate valid 60 days: %v", cfg.Warnings)
	}
}

// TestOCSPDiff: a renewed response at the same path is a change a reload
// applies (reload --diff shows it).
func TestOCSPDiff(t *testing.T) {
	ocsptest.Openssl(t)
	pki := ocsptest.New(t)
	leaf := pki.Issue(t, "www.test", time.Now().Add(365*24*time.Hour), "", false)
	path := filepath.Join(t.TempDir(), "www.ocsp.der")
	parse := func(validity time.Duration) *conf.Config {
		t.Helper()
		der, err := os.ReadFile(pki.Response(t, leaf, validity))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(path, der, 0o600)
		cfg, err := conf.Parse("t.toml", []byte(ocspConf(leaf, fmt.Sprintf("ocsp = %q", path))))
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	old, cur := parse(time.Hour), parse(2*time.Hour)
	var got []string
	for _, c := range conf.Diff(old, cur) {
		got = append(got, c.String())
	}
	if len(got) != 1 || !strings.Contains(got[0], "tls ocsp "+path+" content") {
		t.Fatalf("Diff = %q, want one change of the OCSP file's content", got)
	}
}
