package conf

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"reflect"
	"strings"
)

// ACME challenge types ([acme] challenge).
const (
	ChallengeTLSALPN = "tls-alpn-01" // answered on the TLS frontends themselves (ALPN acme-tls/1)
	ChallengeHTTP    = "http-01"     // answered on the plain http frontends
)

// DefaultACMEStorage is where the account and certificates are kept when
// [acme] storage is not set: a directory beside the configuration file.
const DefaultACMEStorage = "acme"

type rawACME struct {
	Directory string `toml:"directory"`
	Email     string `toml:"email"`
	Storage   string `toml:"storage"`
	CAFile    string `toml:"ca_file"`
	Challenge string `toml:"challenge"`
}

// ACMENames lists every name of the [[frontend.NAME.tls]] acme entries of
// cfg, each once, in file order.
func (cfg *Config) ACMENames() []string {
	var out []string
	seen := map[string]bool{}
	for _, f := range cfg.Frontends {
		for _, t := range f.TLS {
			for _, n := range t.ACME {
				if !seen[n] {
					seen[n] = true
					out = append(out, n)
				}
			}
		}
	}
	return out
}

// acme checks the [acme] section (nil: absent).
func (v *validator) acme(r *rawACME) *ACME {
	if r == nil {
		return nil
	}
	a := &ACME{Directory: r.Directory, Email: r.Email, CAFile: r.CAFile, Challenge: r.Challenge}
	switch u, err := url.Parse(r.Directory); {
	case r.Directory == "":
		v.errf("acme", "acme.directory is required: the ACME server's directory URL, like \"https://acme-v02.api.letsencrypt.org/directory\"")
	case err != nil || u.Scheme != "https" || u.Host == "":
		v.errf("acme.directory", "%q is not an https URL; ACME servers are reached over https, like \"https://acme-v02.api.letsencrypt.org/directory\"", r.Directory)
	}
	if r.Email != "" && (!strings.Contains(r.Email, "@") || strings.ContainsAny(r.Email, " \t<>")) {
		v.errf("acme.email", "%q is not an e-mail address like \"ops@example.com\"", r.Email)
	}
	switch a.Challenge {
	case "":
		a.Challenge = ChallengeTLSALPN
	case ChallengeTLSALPN, ChallengeHTTP:
	default:
		v.errf("acme.challenge", "%q is not a challenge sluice answers; use \"tls-alpn-01\" (on the TLS frontend) or \"http-01\" (on a plain http frontend on port 80)", a.Challenge)
	}
	storage := r.Storage
	if storage == "" {
		storage = DefaultACMEStorage
	}
	a.Storage = v.besideConfig(storage)
	if err := writableDir(a.Storage); err != nil {
		key := "acme.storage"
		if r.Storage == "" {
			key = "acme"
		}
		v.errf(key, "storage %s: %v; set acme.storage to a directory the worker may write", a.Storage, err)
	}
	if r.CAFile != "" {
		a.CAFile = v.besideConfig(r.CAFile)
		pool, err := loadRoots(a.CAFile, "the ACME server's certificate")
		if err != nil {
			v.errf("acme.ca_file", "%v", err)
		}
		a.Roots = pool
	}
	return a
}

// writableDir creates dir (0700) when it is missing and checks that a file
// can be created in it: the account key and certificates are written there.
func writableDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ".sluice-check-*")
	if err != nil {
		return err
	}
	name := f.Name()
	f.Close()
	return os.Remove(name)
}

// acmeEntry checks the names of one [[frontend.NAME.tls]] acme entry (key
// is "frontend.NAME.tls.I").
func (v *validator) acmeEntry(key string, t rawTLS, a *ACME) []string {
	if t.Cert != "" || t.Key != "" {
		v.errf(key+".acme", "a tls entry has either acme names or cert and key files, not both; split it into two [[tls]] entries")
		return nil
	}
	if len(t.ACME) == 0 {
		v.errf(key+".acme", "acme lists no names; list the DNS names to obtain a certificate for, like [\"www.example.com\"]")
		return nil
	}
	if a == nil {
		v.errf(key+".acme", "acme names need an [acme] section (directory, email, storage)")
	}
	var out []string
	for _, n := range t.ACME {
		name := strings.ToLower(strings.TrimSuffix(n, "."))
		if err := acmeName(name); err != nil {
			v.errf(key+".acme", "%q: %v", n, err)
			continue
		}
		out = append(out, name)
	}
	return out
}

// acmeName checks a name to obtain a certificate for: a DNS name with a dot;
// no wildcard (those need dns-01, which sluice does not answer), no IP.
func acmeName(n string) error {
	switch {
	case strings.HasPrefix(n, "*."):
		return errors.New("wildcard names need the dns-01 challenge, which sluice does not answer; list each name, or use cert and key files")
	case net.ParseIP(n) != nil:
		return errors.New("is an IP address; list DNS names")
	case len(n) > 253 || !strings.Contains(n, "."):
		return errors.New("is not a fully qualified DNS name like \"www.example.com\"")
	}
	for _, label := range strings.Split(n, ".") {
		if len(label) == 0 || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return errors.New("is not a valid DNS name (a label is empty, longer than 63 or starts or ends with '-')")
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("is not a valid DNS name (%q: letters, digits and '-' only)", c)
			}
		}
	}
	return nil
}

// acmeFrontends checks what the challenge needs of the frontends once
// they are all built: http-01 is answered by a plain http frontend, which
// the ACME server reaches on port 80.
func (v *validator) acmeFrontends(cfg *Config) {
	a := cfg.ACME
	if a == nil {
		return
	}
	if len(cfg.ACMENames()) == 0 {
		v.warnf("acme", "[acme] is set but no [[frontend.NAME.tls]] entry lists acme names; nothing will be obtained")
		return
	}
	if a.Challenge != ChallengeHTTP {
		return
	}
	plain, on80 := false, false
	for _, f := range cfg.Frontends {
		if f.Mode != ModeHTTP || len(f.TLS) > 0 {
			continue
		}
		plain = true
		for _, b := range f.Bind {
			if _, port, err := net.SplitHostPort(b); err == nil && port == "80" {
				on80 = true
			}
		}
	}
	switch {
	case !plain:
		v.errf("acme.challenge", "http-01 is answered by a plain (non-TLS) http frontend, and this file has none; add one bound to port 80, or use challenge = \"tls-alpn-01\"")
	case !on80:
		v.warnf("acme.challenge", "http-01: no plain http frontend binds port 80, where the ACME server asks; fine behind a port redirection, otherwise bind one to port 80")
	}
}

// acme compares the [acme] sections of two files.
func (d *differ) acme(o, n *ACME) {
	switch {
	case o == nil && n == nil:
	case o == nil:
		d.add("+", "acme", "", "", "directory "+n.Directory)
	case n == nil:
		d.add("-", "acme", "", "", "")
	default:
		d.fields("acme", "", reflect.ValueOf(*o), reflect.ValueOf(*n), reflect.TypeFor[rawACME]())
	}
}
