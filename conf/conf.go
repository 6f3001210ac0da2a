// Package conf decodes, defaults and validates sluice's TOML configuration.
//
// Loading happens in three steps, as in Caddy's Provision/Validate: decode
// the file into raw structs (strings for durations so that one bad value does
// not hide the others), fill defaults, then validate everything and report
// every problem at once with its file, line and key. The result is a *Config
// that nobody mutates after Load returns.
package conf

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// Config is a validated configuration. Treat it as read-only.
type Config struct {
	File      string
	Global    Global
	Stats     Stats
	Frontends []*Frontend // sorted by name
	Backends  []*Backend  // sorted by name
	Peers     Peers       // stick-table sync, see peers.go
	ACME      *ACME       // [acme]; nil: none (acme.go)
	BGP       BGP         // announcements to routers, see bgp.go
	// Warnings are worth telling the operator but do not refuse the file;
	// the engine logs them at every start and reload.
	Warnings []Problem
}

// Global holds process-wide settings.
type Global struct {
	MaxConn        int
	MaxConnSet     bool // the file sets global.maxconn (else MaxConn is the default, fitted to the descriptor limit at start)
	HardStopAfter  time.Duration
	ControlSocket  string
	PIDFile        string
	VitalFrontends []string
	// TrackFile is where the master writes 0 while this node can serve
	// and 1 while it cannot (keepalived's track_file); "" for none.
	TrackFile string
	// StopGrace is how long an orderly stop keeps serving after the
	// track file says fault, before the listeners close: the address
	// moves to the other node first, then connections drain.
	StopGrace time.Duration
	// GCHeapFloor is how many bytes the worker's heap may grow past what
	// the last garbage collection left live before the next one (Go's
	// doubling when that is more); 0 leaves Go's pacing alone.
	GCHeapFloor int
	Logging     // process logs: log_format, log_target, log_syslog_* (logging.go)
}

// Stats is the stats listener.
type Stats struct {
	Bind           string // "" when the file has no [stats] table: no stats listener
	AdminTokenFile string
	AdminToken     string // read from AdminTokenFile at load; "" disables the admin API
	// MaxConn caps the connections the stats listener serves at once;
	// more wait in the kernel's queue (counted in the descriptor budget).
	MaxConn int
}

// Frontend is a named set of listeners.
type Frontend struct {
	Name        string
	Mode        Mode
	Bind        []string // expanded host:port addresses
	AcceptProxy bool
	// DeferAccept: connections are accepted only once they carry bytes
	// (TCP_DEFER_ACCEPT); default on for http frontends.
	DeferAccept        bool
	ProxyTrusted       []netip.Prefix
	Freebind           bool
	MaxConn            int
	DefaultBackend     string
	TimeoutClient      time.Duration
	TimeoutHTTPRequest time.Duration
	TimeoutProxyHeader time.Duration
	TimeoutTunnel      time.Duration
	TLS                []TLS
	ClientAuth         *ClientAuth // [frontend.NAME.client_auth]; nil: clients are not asked for certificates
	Routes             []Route
	Rules              []Rule     // [[frontend.NAME.rule]], in file order (policy.go)
	RateLimit          *RateLimit // [frontend.NAME.rate_limit]; nil: none

	// HTTP mode.
	H2C             bool           // accept HTTP/2 with prior knowledge on a plain listener
	MaxHeaderBytes  int            // largest request head; larger gets 431
	MaxHeaderCount  int            // most header lines in a head; more gets 431
	AccessLog       bool           // one line per request
	AccessLogFormat string         // "text" or "json"
	AccessLogFile   string         // "" = stdout; checked, not created, at Parse
	ErrorPages      map[int]string // status -> file with the body to send
	ErrorBodies     map[int][]byte // status -> the body, read at Parse

	// UDP mode.
	TimeoutUDP time.Duration // a flow idle this long ends (timeout_udp)
	// MaxFlows is the most flows at once; 0 (not set): a share of the file
	// descriptor limit, fitted at start (internal/fdlimit.Plan).
	MaxFlows int
	// MaxFlowsPerSource is the most flows one client address (an IPv6
	// /64) holds at once; 0: no cap of its own.
	MaxFlowsPerSource int
}

// TLS is one certificate of a frontend.
type TLS struct {
	Cert, Key string // paths, resolved from the configuration file's directory
	// Pair is the certificate and key, read and parsed at Parse: a file
	// that `sluice check` accepts is the one the worker serves.
	Pair *tls.Certificate
	// OCSP is a DER OCSP response file to staple (tls_ocsp.go): read and
	// checked against the certificate at Parse into OCSPStaple (and
	// Pair.OCSPStaple). OCSPFetch fetches fresh ones from the
	// certificate's responder in the worker; with both, the file is the
	// first staple.
	OCSP       string
	OCSPFetch  bool
	OCSPStaple []byte
	// ACME lists the names whose certificates are obtained and renewed
	// through [acme] instead (Cert and Key are then empty).
	ACME []string
}

// Route sends matching HTTP requests to Backend.
type Route struct {
	Host       string
	PathPrefix string
	Header     map[string]string
	Backend    string
}

// Backend is a pool of servers.
type Backend struct {
	Name            string
	Mode            Mode
	Balance         Balance
	Sticky          Sticky
	StickyCookie    string
	StickyTTL       time.Duration
	StickySize      int // most entries of the sticky = "source" table
	QueueTimeout    time.Duration
	SendProxy       ProxyVersion
	TimeoutConnect  time.Duration
	TimeoutServer   time.Duration
	Retries         int
	Proto           Proto
	PoolMaxIdle     int
	PoolIdleTimeout time.Duration
	Health          Health
	Servers         []Server
	DNS             *DNS
	TLS             *BackendTLS // [backend.NAME.tls]; nil: plain TCP to the servers

	// UDP mode.
	TimeoutUDP time.Duration // overrides the frontend's timeout_udp when set
	Responses  int           // replies that end a flow (nginx proxy_responses); 0: no limit

	used bool // a frontend names it (validation only)
}

// Server is one backend server.
type Server struct {
	Name    string
	Address string
	Weight  int
	Backup  bool
	MaxConn int
}

// DNS discovers a backend's servers.
type DNS struct {
	Name      string
	Resolvers []string
	Interval  time.Duration // longest time between two resolutions (shorter when the TTL asks)
	Port      int           // A/AAAA: the servers' port; 0: the name is an SRV record
	// Timeout bounds one query to one resolver.
	Timeout    time.Duration
	MaxServers int // most discovered servers kept
}

// Frontend returns the frontend called name, or nil.
func (c *Config) Frontend(name string) *Frontend {
	for _, f := range c.Frontends {
		if f.Name == name {
			return f
		}
	}
	return nil
}

// Backend returns the backend called name, or nil.
func (c *Config) Backend(name string) *Backend {
	for _, b := range c.Backends {
		if b.Name == name {
			return b
		}
	}
	return nil
}

// Problem is one configuration error, located in the file.
type Problem struct {
	File string
	Line int
	Key  string
	Msg  string
}

func (p Problem) Error() string {
	loc := p.File
	if p.Line > 0 {
		loc = fmt.Sprintf("%s:%d", p.File, p.Line)
	}
	if p.Key != "" {
		return fmt.Sprintf("%s: %s: %s", loc, p.Key, p.Msg)
	}
	return fmt.Sprintf("%s: %s", loc, p.Msg)
}

// Errors is every problem found in one file.
type Errors []Problem

func (e Errors) Error() string {
	var b strings.Builder
	for i, p := range e {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(p.Error())
	}
	return b.String()
}

// Load reads, defaults and validates the file at path. A returned error is
// an Errors listing every problem, or an I/O error.
func Load(path string) (*Config, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(path, src)
}

// Parse is Load on bytes already read; name is used in error messages.
func Parse(name string, src []byte) (*Config, error) {
	var doc map[string]any
	md0, err := toml.NewDecoder(strings.NewReader(string(src))).Decode(&doc)
	if err != nil {
		return nil, Errors{decodeProblem(name, src, err)}
	}
	v := &validator{file: name, loc: newLocator(src), statsTable: md0.IsDefined("stats")}
	var raw rawFile
	md, err := v.decodeChecked(doc, &raw)
	if err != nil {
		// Not expected after the type check; the plain decode locates it.
		raw = rawFile{}
		if md, err = toml.NewDecoder(strings.NewReader(string(src))).Decode(&raw); err != nil {
			return nil, Errors{decodeProblem(name, src, err)}
		}
	}
	v.unknownKeys(md.Undecoded())
	cfg := v.build(&raw)
	if len(v.problems) > 0 {
		sort.SliceStable(v.problems, func(i, j int) bool { return v.problems[i].Line < v.problems[j].Line })
		return nil, Errors(v.problems)
	}
	cfg.File = name
	cfg.Warnings = v.warnings
	return cfg, nil
}

// unknownKeys reports every key the decoder did not use. A key inside an
// unknown table is not reported again; a key repeated in several elements of
// an array of tables is reported at each of them.
func (v *validator) unknownKeys(keys []toml.Key) {
	unknown := map[string]bool{}
	seen := map[string]int{}
	for _, k := range keys {
		key := strings.Join(k, ".")
		unknown[key] = true
		parent := false
		for i := 1; i < len(k); i++ {
			if unknown[strings.Join(k[:i], ".")] {
				parent = true
				break
			}
		}
		if parent {
			continue
		}
		occ := v.loc.nth(key, seen[key])
		seen[key]++
		msg := "unknown key; check its spelling and section against the configuration reference in docs/reference.md"
		if near := nearest(k[len(k)-1], keysAt(k[:len(k)-1])); near != "" {
			msg = fmt.Sprintf("unknown key; did you mean %s? (the keys of each section are in docs/reference.md)", near)
		}
		v.problems = append(v.problems, Problem{File: v.file, Line: occ.line, Key: occ.key, Msg: msg})
	}
}

// typeErr matches BurntSushi/toml's type mismatch errors, which carry the
// position only in their text.
var typeErr = regexp.MustCompile(`^toml: line (\d+) \(last key ("(?:[^"\\]|\\.)*")\): (.*)$`)

var mismatch = regexp.MustCompile(`^incompatible types: TOML value has type (.*); destination has type (.*)$`)

// decodeProblem turns a decoder error into a located Problem.
func decodeProblem(name string, src []byte, err error) Problem {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		return Problem{File: name, Line: pe.Position.Line, Key: pe.LastKey, Msg: "TOML syntax: " + pe.Message}
	}
	m := typeErr.FindStringSubmatch(err.Error())
	if m == nil {
		return Problem{File: name, Msg: err.Error()}
	}
	line, _ := strconv.Atoi(m[1])
	key, uerr := strconv.Unquote(m[2])
	if uerr != nil {
		key = m[2]
	}
	if k, ok := newLocator(src).atLine(key, line); ok {
		key = k // with the array index, like other problems
	}
	msg := m[3]
	if mm := mismatch.FindStringSubmatch(msg); mm != nil {
		msg = fmt.Sprintf("must be %s, not %s", tomlKind(mm[2]), tomlKind(mm[1]))
		if mm[2] == "string" {
			msg += ` (durations and addresses are quoted: write "5s", not 5)`
		}
	}
	return Problem{File: name, Line: line, Key: key, Msg: msg}
}

// tomlKind names a type from a decoder message the way a config author
// thinks of it.
func tomlKind(t string) string {
	switch {
	case t == "string":
		return "a string"
	case t == "integer" || strings.HasPrefix(t, "int"):
		return "an integer"
	case t == "float" || strings.HasPrefix(t, "float"):
		return "a number"
	case t == "boolean" || t == "bool":
		return "true or false"
	case t == "slice" || strings.HasPrefix(t, "[]"):
		return "an array"
	case t == "map" || strings.HasPrefix(t, "map["):
		return "a table"
	case strings.Contains(t, "time.") || strings.Contains(t, "Local"):
		return "a date/time"
	}
	return t
}
