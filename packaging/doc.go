// Package packaging holds what ships around the sluice binary and its
// tests: the Debian package (mkdeb, deb/, sluice.toml), the man page
// generator (manpage/) and the check of examples/grafana against /metrics.
package packaging
