package conf_test

import (
	"strings"
	"testing"
	"time"

	"sluice/conf"
	"sluice/internal/testpki"
)

// clientAuthSrc is an http frontend with TLS (unless noTLS) and the
// client_auth table body given, starting at line 9.
func clientAuthSrc(cert, key string, noTLS bool, body string) string {
	tls := "[[frontend.f.tls]]\ncert = \"" + cert + "\"\nkey = \"" + key + "\"\n"
	if noTLS {
		tls = "# no tls\n\n\n"
	}
	return `[frontend.f]
mode = "http"
bind = ["127.0.0.1:0"]
default_backend = "b"
` + tls + `[frontend.f.client_auth]
` + body + `
[[backend.b.server]]
address = "127.0.0.1:1"
`
}

func TestClientAuth(t *testing.T) {
	dir := t.TempDir()
	cert, key := writeKeyPair(t, "www.example.com")
	ca := testpki.NewCA(t, "clients")
	other := testpki.NewCA(t, "other")
	revoked := ca.Issue(t, "revoked", testpki.Options{})
	caFile := testpki.Write(t, dir, "ca.pem", ca.PEM)
	crlDER := testpki.Write(t, dir, "ca.crl", ca.CRL(t, time.Time{}, revoked.Cert))
	crlPEM := testpki.Write(t, dir, "ca.crl.pem", testpki.CRLPEM(ca.CRL(t, time.Time{}, revoked.Cert)))
	stale := testpki.Write(t, dir, "stale.crl", ca.CRL(t, time.Now().Add(-time.Minute)))
	otherCRL := testpki.Write(t, dir, "other.crl", other.CRL(t, time.Time{}))
	noCert := testpki.Write(t, dir, "empty.pem", []byte("not a certificate\n"))
	keyOnly := testpki.Write(t, dir, "key.pem", revoked.KeyPEM)

	t.Run("defaults and files", func(t *testing.T) {
		for _, crl := range []string{crlDER, crlPEM} {
			cfg := mustParse(t, clientAuthSrc(cert, key, false, `ca_file = "`+caFile+`"
crl_file = "`+crl+`"`))
			a := cfg.Frontend("f").ClientAuth
			if a == nil || a.Verify != conf.VerifyRequired || a.CAFile != caFile || a.Pool == nil || len(a.CRLs) != 1 {
				t.Fatalf("client_auth = %+v", a)
			}
			if len(a.CRLs[0].RevokedCertificateEntries) != 1 || a.CRLs[0].RevokedCertificateEntries[0].SerialNumber.Cmp(revoked.Cert.SerialNumber) != 0 {
				t.Errorf("CRL entries = %+v", a.CRLs[0].RevokedCertificateEntries)
			}
			if len(cfg.Warnings) != 0 {
				t.Errorf("warnings: %v", cfg.Warnings)
			}
		}
		cfg := mustParse(t, clientAuthSrc(cert, key, false, `verify = "optional"
ca_file = "`+caFile+`"`))
		if a := cfg.Frontend("f").ClientAuth; a.Verify != conf.VerifyOptional || a.CRLs != nil {
			t.Errorf("client_auth = %+v", a)
		}
		if cfg := mustParse(t, "[frontend.f]\nmode = \"http\"\nbind = [\"127.0.0.1:0\"]\ndefault_backend = \"b\"\n[[backend.b.server]]\naddress = \"127.0.0.1:1\"\n"); cfg.Frontend("f").ClientAuth != nil {
			t.Error("a frontend without the table asks for client certificates")
		}
	})

	t.Run("stale CRL warns", func(t *testing.T) {
		cfg := mustParse(t, clientAuthSrc(cert, key, false, `ca_file = "`+caFile+`"
crl_file = "`+stale+`"`))
		if len(cfg.Warnings) != 1 || cfg.Warnings[0].Key != "frontend.f.client_auth.crl_file" || !strings.Contains(cfg.Warnings[0].Msg, "fetch a fresh CRL") {
			t.Errorf("warnings = %v", cfg.Warnings)
		}
	})

	t.Run("CA without a CRL warns", func(t *testing.T) {
		both := testpki.Write(t, dir, "both.pem", append(append([]byte{}, ca.PEM...), other.PEM...))
		cfg := mustParse(t, clientAuthSrc(cert, key, false, `ca_file = "`+both+`"
crl_file = "`+crlPEM+`"`))
		if len(cfg.Warnings) != 1 || cfg.Warnings[0].Key != "frontend.f.client_auth.crl_file" ||
			!strings.Contains(cfg.Warnings[0].Msg, "CN=other") || !strings.Contains(cfg.Warnings[0].Msg, "will be refused") {
			t.Errorf("warnings = %v, want one naming CN=other", cfg.Warnings)
		}
	})

	for _, tc := range []struct {
		desc  string
		noTLS bool
		body  string
		want  []want
	}{
		{"no tls", true, `ca_file = "` + caFile + `"`, []want{{8, "frontend.f.client_auth", "add a [[frontend.f.tls]] entry"}}},
		{"no ca_file", false, `verify = "required"`, []want{{8, "frontend.f.client_auth.ca_file", "is required"}}},
		{"verify none", false, `verify = "none"
ca_file = "` + caFile + `"`, []want{{9, "frontend.f.client_auth.verify", "remove [frontend.f.client_auth]"}}},
		{"verify unknown", false, `verify = "maybe"
ca_file = "` + caFile + `"`, []want{{9, "frontend.f.client_auth.verify", "write \"required\" or \"optional\""}}},
		{"ca file missing", false, `ca_file = "` + dir + `/nope.pem"`, []want{{9, "frontend.f.client_auth.ca_file", "cannot read the CA file"}}},
		{"ca file without certificate", false, `ca_file = "` + noCert + `"`, []want{{9, "frontend.f.client_auth.ca_file", "holds no PEM certificate"}}},
		{"ca file with a key only", false, `ca_file = "` + keyOnly + `"`, []want{{9, "frontend.f.client_auth.ca_file", "holds no PEM certificate"}}},
		{"crl not a crl", false, `ca_file = "` + caFile + `"
crl_file = "` + caFile + `"`, []want{{10, "frontend.f.client_auth.crl_file", "no PEM block \"X509 CRL\""}}},
		{"crl garbage", false, `ca_file = "` + caFile + `"
crl_file = "` + keyOnly + `x"`, []want{{10, "frontend.f.client_auth.crl_file", "cannot read the CRL"}}},
		{"crl of another CA", false, `ca_file = "` + caFile + `"
crl_file = "` + otherCRL + `"`, []want{{10, "frontend.f.client_auth.crl_file", "not signed by a CA of ca_file"}}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			checkProblems(t, parseErrors(t, clientAuthSrc(cert, key, tc.noTLS, tc.body)), tc.want)
		})
	}
}

// TestClientAuthDiff: a reload shows client_auth added, its verify mode
// changed, and a CRL file rewritten in place.
func TestClientAuthDiff(t *testing.T) {
	dir := t.TempDir()
	cert, key := writeKeyPair(t, "www.example.com")
	ca := testpki.NewCA(t, "clients")
	caFile := testpki.Write(t, dir, "ca.pem", ca.PEM)
	crl := testpki.Write(t, dir, "ca.crl", ca.CRL(t, time.Time{}))
	body := `ca_file = "` + caFile + `"
crl_file = "` + crl + `"`
	none := mustParse(t, strings.Replace(clientAuthSrc(cert, key, false, ""), "[frontend.f.client_auth]\n", "", 1))
	req := mustParse(t, clientAuthSrc(cert, key, false, body))
	opt := mustParse(t, clientAuthSrc(cert, key, false, "verify = \"optional\"\n"+body))
	testpki.Write(t, dir, "ca.crl", ca.CRL(t, time.Time{}, ca.Issue(t, "x", testpki.Options{}).Cert))
	renewed := mustParse(t, clientAuthSrc(cert, key, false, body))
	for _, tc := range []struct {
		desc     string
		old, cur *conf.Config
		want     string
	}{
		{"added", none, req, "+ frontend f: client_auth"},
		{"verify", req, opt, `~ frontend f: client_auth.verify "required" -> "optional"`},
		{"crl rewritten", req, renewed, "~ frontend f: client_auth content"},
	} {
		var got []string
		for _, c := range conf.Diff(tc.old, tc.cur) {
			got = append(got, c.String())
		}
		if len(got) != 1 || !strings.HasPrefix(got[0], tc.want) {
			t.Errorf("%s: diff = %q, want one change starting %q", tc.desc, got, tc.want)
		}
	}
}
