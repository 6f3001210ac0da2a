package packaging_test

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// run runs a command and returns its output, failing the test on error.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String() + errb.String()
}

// A git-describe version becomes a Debian version that dpkg accepts and
// that sorts before every release: a hash that starts with digits must not
// outrank 1.2.0 (768f2ec did: it was taken as version 768).
func TestDebVersion(t *testing.T) {
	for in, want := range map[string]string{
		"v1.2.3":            "1.2.3",
		"v1.2.3-4-gabcdef0": "1.2.3+4+gabcdef0",
		"1.2.3-dirty":       "1.2.3+dirty",
		"b633bb4":           "0~gitb633bb4",
		"768f2ec":           "0~git768f2ec",
		"768f2ec-dirty":     "0~git768f2ec+dirty",
		"dev":               "0~gitdev",
		"v2.0.0-rc1_x/y":    "2.0.0+rc1.x.y",
	} {
		if got := strings.TrimSpace(run(t, "./mkdeb", "-n", "-v", in)); got != want {
			t.Errorf("mkdeb -n -v %s = %q, want %q", in, got, want)
		}
	}
	if _, err := exec.LookPath("dpkg"); err != nil {
		return
	}
	// dpkg's own ordering: any untagged build is older than a release.
	if err := exec.Command("dpkg", "--compare-versions", "0~git768f2ec", "lt", "0.1.0").Run(); err != nil {
		t.Errorf("dpkg does not order 0~git768f2ec before 0.1.0: %v", err)
	}
}

// TestDebPackage builds the package with `make deb`'s script, reads it
// back with dpkg-deb, installs it with dpkg into a scratch root (the
// maintainer scripts run there, creating the sluice user in that root's
// /etc/passwd, not the machine's), runs the installed binary's `check` on
// the installed configuration, then removes and purges it.
func TestDebPackage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a package: not in -short")
	}
	for _, tool := range []string{"dpkg-deb", "dpkg", "useradd", "git"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not found: not a Debian machine", tool)
		}
	}
	out := t.TempDir()
	// A git-describe version as `make deb` passes it: the package version
	// must be a valid Debian one, the binary keeps the original.
	deb := strings.TrimSpace(run(t, "./mkdeb", "-o", out, "-v", "v1.2.3-4-gabcdef0"))
	arch := strings.TrimSpace(run(t, "dpkg", "--print-architecture"))
	if filepath.Base(deb) != "sluice_1.2.3+4+gabcdef0_"+arch+".deb" {
		t.Fatalf("package file %q", deb)
	}

	info := run(t, "dpkg-deb", "-I", deb)
	for _, want := range []string{"Package: sluice", "Version: 1.2.3+4+gabcdef0", "postinst", "prerm", "postrm", "conffiles"} {
		if !strings.Contains(info, want) {
			t.Errorf("dpkg-deb -I lacks %q:\n%s", want, info)
		}
	}
	if c := run(t, "dpkg-deb", "-I", deb, "conffiles"); strings.TrimSpace(c) != "/etc/sluice/sluice.toml" {
		t.Errorf("conffiles: %q", c)
	}
	contents := run(t, "dpkg-deb", "-c", deb)
	for _, want := range []string{
		"-rwxr-xr-x root/root .* ./usr/bin/sluice",
		"-rw-r--r-- root/root .* ./etc/sluice/sluice.toml",
		"./usr/lib/systemd/system/sluice.service",
		"./usr/share/man/man1/sluice.1.gz",
		"./usr/share/doc/sluice/copyright",
		"./usr/share/doc/sluice/changelog.gz",
		"./usr/share/doc/sluice/reference.md",
		"./usr/share/doc/sluice/examples/grafana/sluice-dashboard.json",
	} {
		if !matchLine(contents, want) {
			t.Errorf("dpkg-deb -c lacks %q:\n%s", want, contents)
		}
	}

	root := t.TempDir()
	for _, d := range []string{"var/lib/dpkg/updates", "var/lib/dpkg/info", "etc"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, body := range map[string]string{
		"var/lib/dpkg/status": "",
		"etc/passwd":          "root:x:0:0:root:/root:/bin/sh\n",
		"etc/group":           "root:x:0:\n",
	} {
		if err := os.WriteFile(filepath.Join(root, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	_, hostUserErr := user.Lookup("sluice")
	dpkg := func(args ...string) string {
		t.Helper()
		// --force-script-chrootless: the scripts run here with DPKG_ROOT
		// set, since the scratch root has no shell to chroot into.
		return run(t, "dpkg", append([]string{"--root", root, "--log", filepath.Join(root, "dpkg.log"),
			"--force-script-chrootless", "--force-not-root"}, args...)...)
	}
	dpkg("-i", deb)
	if st := dpkg("-s", "sluice"); !strings.Contains(st, "Status: install ok installed") {
		t.Fatalf("dpkg -s:\n%s", st)
	}
	passwd, err := os.ReadFile(filepath.Join(root, "etc/passwd"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(passwd), "\nsluice:") {
		t.Errorf("postinst made no sluice user in the root's /etc/passwd:\n%s", passwd)
	}
	if _, err := user.Lookup("sluice"); (err == nil) != (hostUserErr == nil) {
		t.Errorf("installing into %s changed this machine's users", root)
	}

	bin := filepath.Join(root, "usr/bin/sluice")
	cfg := filepath.Join(root, "etc/sluice/sluice.toml")
	if got := run(t, bin, "check", "-f", cfg); !strings.Contains(got, "valid") {
		t.Errorf("sluice check -f %s: %s", cfg, got)
	}
	if got := run(t, bin, "version"); strings.TrimSpace(got) != "sluice v1.2.3-4-gabcdef0" {
		t.Errorf("sluice version: %q", got)
	}

	unit, err := os.ReadFile(filepath.Join(root, "usr/lib/systemd/system/sluice.service"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"\nExecStartPre=/usr/bin/sluice check -f /etc/sluice/sluice.toml\n",
		"\nExecStart=/usr/bin/sluice run -f /etc/sluice/sluice.toml\n",
		"\nExecReload=/usr/bin/sluice reload -f /etc/sluice/sluice.toml\n",
		"\n[Service]\nUser=sluice\nGroup=sluice\n",
	} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("unit lacks %q:\n%s", want, unit)
		}
	}
	if strings.Contains(string(unit), "/usr/local") {
		t.Errorf("unit still points at /usr/local:\n%s", unit)
	}

	man := gunzip(t, filepath.Join(root, "usr/share/man/man1/sluice.1.gz"))
	for _, want := range []string{".TH SLUICE 1", ".SH COMMANDS", ".SS sluice run", ".SS sluice check", `\fB\-f\fR`} {
		if !strings.Contains(man, want) {
			t.Errorf("man page lacks %q", want)
		}
	}
	if _, err := exec.LookPath("groff"); err == nil {
		cmd := exec.Command("groff", "-man", "-Tutf8", "-ww", "-z")
		cmd.Stdin = strings.NewReader(man)
		if w, err := cmd.CombinedOutput(); err != nil || len(w) > 0 {
			t.Errorf("groff on the man page: %v\n%s", err, w)
		}
	}

	// Remove keeps the edited conffile, purge takes it.
	dpkg("-r", "sluice")
	if _, err := os.Stat(bin); !os.IsNotExist(err) {
		t.Errorf("after dpkg -r the binary is still there: %v", err)
	}
	if _, err := os.Stat(cfg); err != nil {
		t.Errorf("dpkg -r removed the conffile: %v", err)
	}
	dpkg("-P", "sluice")
	if _, err := os.Stat(cfg); !os.IsNotExist(err) {
		t.Errorf("after dpkg -P the conffile is still there: %v", err)
	}
}

func matchLine(text, pattern string) bool {
	re := regexp.MustCompile(pattern)
	for _, l := range strings.Split(text, "\n") {
		if re.MatchString(l) {
			return true
		}
	}
	return false
}

func gunzip(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(z)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
