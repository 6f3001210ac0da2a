package conf

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

// Everything a configuration names outside itself (certificates and keys,
// error pages, the admin token, the peers secret, access-log files, the
// system resolvers) is read or checked here, by Parse, so that `sluice
// check`, the master's start and reload, and the worker that serves refuse
// the same files with the same located messages: there is no second place
// where run reads them.

// ResolvConf is where the resolvers of a [dns] section without resolvers
// are read from.
var ResolvConf = "/etc/resolv.conf"

// Resolve takes a relative path from the directory of the configuration
// file (as an absolute path), so that a file is found whatever directory
// sluice was started in (under systemd that is /). Every path key goes
// through it, once, at Parse; supervisor uses it for the control socket
// of a file it does not parse.
func Resolve(configFile, path string) string {
	if path == "" || filepath.IsAbs(path) {
		return path
	}
	dir := filepath.Dir(configFile)
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	return filepath.Join(dir, path)
}

// besideConfig is Resolve for the file being validated.
func (v *validator) besideConfig(path string) string { return Resolve(v.file, path) }

// LoadKeyPair reads and parses a PEM certificate chain and its private key,
// as TLS termination serves them.
func LoadKeyPair(cert, key string) (*tls.Certificate, error) {
	certPEM, err := os.ReadFile(cert)
	if err != nil {
		return nil, fmt.Errorf("cannot read the certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(key)
	if err != nil {
		return nil, fmt.Errorf("cannot read the key: %w", err)
	}
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("certificate %s with key %s: %w", cert, key, err)
	}
	if c.Leaf == nil {
		return nil, fmt.Errorf("certificate %s: no parsed leaf certificate", cert)
	}
	return &c, nil
}

// checkAppendable reports why path cannot be opened for appending, without
// creating it: an existing file is opened (write, append) and closed; a
// missing one needs a directory that exists and that this process may
// write in, since the worker creates it.
func checkAppendable(path string) error {
	st, err := os.Stat(path)
	switch {
	case err == nil && st.IsDir():
		return fmt.Errorf("%s is a directory; name a file in it", path)
	case err == nil:
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			return fmt.Errorf("cannot open %s for appending: %w", path, err)
		}
		return f.Close()
	case !errors.Is(err, os.ErrNotExist):
		return err
	}
	dir := filepath.Dir(path)
	if st, err := os.Stat(dir); err != nil {
		return fmt.Errorf("cannot create %s: its directory %s: %w", path, dir, err)
	} else if !st.IsDir() {
		return fmt.Errorf("cannot create %s: %s is not a directory", path, dir)
	}
	if err := unix.Access(dir, unix.W_OK|unix.X_OK); err != nil {
		return fmt.Errorf("cannot create %s: directory %s is not writable by this user: %w", path, dir, err)
	}
	return nil
}

// SystemResolvers reads the nameservers of a resolv.conf file as host:port.
func SystemResolvers(path string) ([]string, error) {
	rc, err := dns.ClientConfigFromFile(path)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, s := range rc.Servers {
		out = append(out, net.JoinHostPort(s, rc.Port))
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no nameserver in %s", path)
	}
	return out, nil
}

// tlsFiles loads the certificates of frontend f (prefix p) into f.TLS.
func (v *validator) tlsFiles(p string, f *Frontend) {
	for i := range f.TLS {
		t := &f.TLS[i]
		if t.Cert == "" || t.Key == "" {
			continue // reported already
		}
		key := fmt.Sprintf("%s.tls.%d", p, i)
		t.Cert, t.Key = v.besideConfig(t.Cert), v.besideConfig(t.Key)
		pair, err := LoadKeyPair(t.Cert, t.Key)
		if err != nil {
			v.errf(key+".cert", "%v", err)
			continue
		}
		t.Pair = pair
	}
}

// errorPage reads the body of error page code of frontend p from path.
func (v *validator) errorPage(p string, f *Frontend, code int, path string) {
	key := fmt.Sprintf("%s.error_page_%d", p, code)
	path = v.besideConfig(path)
	body, err := os.ReadFile(path)
	if err != nil {
		v.errf(key, "cannot read the page: %v", err)
		return
	}
	if f.ErrorPages == nil {
		f.ErrorPages = map[int]string{}
		f.ErrorBodies = map[int][]byte{}
	}
	f.ErrorPages[code] = path
	f.ErrorBodies[code] = body
}

// accessLogFile resolves and checks the access-log file of frontend p.
func (v *validator) accessLogFile(p string, f *Frontend) {
	if f.AccessLogFile == "" {
		return
	}
	f.AccessLogFile = v.besideConfig(f.AccessLogFile)
	if !f.AccessLog {
		return // never opened
	}
	if err := checkAppendable(f.AccessLogFile); err != nil {
		v.errf(p+".access_log_file", "%v", err)
	}
}

// systemResolvers fills the resolvers of a [dns] section without any.
func (v *validator) systemResolvers(key string, d *DNS) {
	if d == nil || len(d.Resolvers) > 0 {
		return
	}
	rs, err := SystemResolvers(ResolvConf)
	if err != nil {
		v.errf(key+".resolvers", "not set, and the system resolvers cannot be read: %v; list resolvers like [\"127.0.0.1:53\"]", err)
		return
	}
	d.Resolvers = rs
}

// trackFile resolves global.track_file beside the configuration and checks
// that its directory exists: the master writes it with a rename in that
// directory, and a typo must not be found only when a failover is missed.
func (v *validator) trackFile(path string) string {
	const key = "global.track_file"
	if path == "" {
		if v.defined(key) {
			v.errf(key, "is empty; write a path like \"/run/sluice/keepalived.track\", or remove the key")
		}
		return ""
	}
	p := v.besideConfig(path)
	if strings.HasSuffix(path, "/") {
		v.errf(key, "%q names a directory; name the file, like \"/run/sluice/keepalived.track\"", path)
		return p
	}
	dir := filepath.Dir(p)
	st, err := os.Stat(dir)
	switch {
	case err != nil:
		v.errf(key, "directory %s of %s does not exist: create it (mkdir -p %s; systemd: RuntimeDirectory=sluice)", dir, p, dir)
	case !st.IsDir():
		v.errf(key, "%s is not a directory, so %s cannot be written", dir, p)
	}
	if st, err := os.Stat(p); err == nil && st.IsDir() {
		v.errf(key, "%s is a directory; name a file in it", p)
	}
	return p
}

// trackFileClash refuses a track_file that is also the pid file or the
// control socket (as set, or its default beside the pid file): the master
// renames "0" over it, which would leave a pid file saying 0 (kill 0 is the
// caller's whole process group) or put a file where the socket was.
func (v *validator) trackFileClash(g *Global) {
	const key = "global.track_file"
	if g.TrackFile == "" {
		return
	}
	ctl := g.ControlSocket
	if ctl == "" && g.PIDFile != "" {
		ctl = filepath.Join(filepath.Dir(g.PIDFile), "sluice.sock") // supervisor.ControlPath's default
	}
	switch filepath.Clean(g.TrackFile) {
	case filepath.Clean(g.PIDFile):
		v.errf(key, "%s is also global.pid_file; give the track file its own name, like \"/run/sluice/keepalived.track\"", g.TrackFile)
	case filepath.Clean(ctl):
		v.errf(key, "%s is also global.control_socket; give the track file its own name, like \"/run/sluice/keepalived.track\"", g.TrackFile)
	}
}
