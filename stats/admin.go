package stats

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"sluice/backend"
	"sluice/conf"
	"sluice/frontend"
	"sluice/policy"
)

func (s *Server) routes() *http.ServeMux {
	m := http.NewServeMux()
	m.HandleFunc("/", s.serveRoot) // "/", "/;csv", "/;norefresh"…
	m.HandleFunc("GET /api/stats", s.serveJSON)
	m.Handle("GET /metrics", s.metricsHandler())
	m.HandleFunc("GET /healthz", s.serveHealthz)
	// Admin paths take every method so that a wrong one gets 405 here
	// rather than the page's 404 from "GET /".
	m.HandleFunc("/api/servers/{backend}/{server}/state", s.admin(http.MethodPost, "set state", s.setState))
	m.HandleFunc("/api/servers/{backend}/{server}/weight", s.admin(http.MethodPost, "set weight", s.setWeight))
	m.HandleFunc("/api/node/state", s.admin(http.MethodPost, "set node state", s.setNode))
	m.HandleFunc("/api/backends/{backend}/sticky", s.admin(http.MethodGet, "show sticky", s.showSticky))
	m.HandleFunc("/api/frontends/{frontend}/limits", s.admin(http.MethodGet, "show limits", s.showLimits))
	return m
}

// serveRoot answers "/;opt;opt…" as HAProxy's stats URI does: csv for CSV,
// json for the JSON of /api/stats (sluice's document, not HAProxy's typed
// fields), norefresh for the page without auto-refresh.
func (s *Server) serveRoot(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "the stats pages are read with GET", http.StatusMethodNotAllowed)
		return
	}
	path := r.URL.Path
	if path == "/" {
		s.renderPage(w, pageOptions{refresh: true})
		return
	}
	if !strings.HasPrefix(path, "/;") {
		http.NotFound(w, r)
		return
	}
	opts := pageOptions{refresh: true}
	for _, o := range strings.Split(path[2:], ";") {
		switch o {
		case "csv":
			opts.csv = true
		case "json":
			opts.json = true
		case "norefresh":
			opts.refresh = false
		case "":
		default:
			http.Error(w, fmt.Sprintf("unknown option %q; use /;csv, /;json or /;norefresh", o), http.StatusNotFound)
			return
		}
	}
	switch {
	case opts.json:
		s.serveJSON(w, r)
		return
	case opts.csv:
		s.serveCSV(w, r)
		return
	}
	s.renderPage(w, opts)
}

func (s *Server) serveJSON(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	enc.SetIndent("", " ")
	enc.Encode(s.snapshot())
}

// serveHealthz answers 200 while every vital frontend has a server that can
// take traffic, else 503 with the first reason.
func (s *Server) serveHealthz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if reason := s.unhealthy(); reason != "" {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, reason)
		return
	}
	fmt.Fprintln(w, "ok")
}

// unhealthy returns why /healthz fails, or "": the engine's rule when it
// gave one, else frontend.Unserved (the same function) over this server's
// frontends and backends.
func (s *Server) unhealthy() string {
	if s.opt.Unserved != nil {
		return s.opt.Unserved()
	}
	return frontend.Unserved(s.node.Maint(), s.opt.VitalFrontends, s.fronts, s.backends)
}

func hashToken(t string) []byte {
	h := sha256.Sum256([]byte(t))
	return h[:]
}

// authorized reports whether r carries the admin token: in an
// "Authorization: Bearer" header, or (the page's forms without JavaScript)
// in a "token" form field of a POST. Hashing first makes the comparison
// constant-time whatever the lengths.
func (s *Server) authorized(r *http.Request) bool {
	var got string
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, tok, ok := strings.Cut(h, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") {
			return false
		}
		got = strings.TrimSpace(tok)
	} else if r.Method == http.MethodPost {
		got = r.PostFormValue("token")
	}
	if got == "" {
		return false
	}
	return subtle.ConstantTimeCompare(hashToken(got), s.token) == 1
}

// adminAction is an admin call once authorized; it returns the status and
// the message to send and log.
type adminAction func(r *http.Request) (int, string, any)

// admin wraps an admin call: 403 when the admin API is off, 401 without the
// right token, and one log line per call with who asked for what.
func (s *Server) admin(method, what string, act adminAction) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != method && !(method == http.MethodGet && r.Method == http.MethodHead) {
			w.Header().Set("Allow", method)
			http.Error(w, fmt.Sprintf("%s needs %s", r.URL.Path, method), http.StatusMethodNotAllowed)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
		target := r.PathValue("backend") + r.PathValue("frontend")
		if sv := r.PathValue("server"); sv != "" {
			target += "/" + sv
		}
		log := s.log.With("remote", r.RemoteAddr, "action", what, "target", target)
		if s.token == nil {
			log.Warn("admin call refused: the admin API is disabled")
			http.Error(w, "the admin API is disabled: set stats.admin_token_file", http.StatusForbidden)
			return
		}
		if !s.authorized(r) {
			log.Warn("admin call refused: missing or wrong token")
			w.Header().Set("WWW-Authenticate", `Bearer realm="sluice admin"`)
			http.Error(w, "admin token missing or wrong: send Authorization: Bearer TOKEN", http.StatusUnauthorized)
			return
		}
		code, msg, body := act(r)
		if code >= 400 {
			log.Warn("admin call failed", "status", code, "msg", msg)
			http.Error(w, msg, code)
			return
		}
		if body == nil {
			log.Info("admin call", "done", msg)
		}
		if method == http.MethodPost && s.opt.AfterAdminChange != nil {
			s.opt.AfterAdminChange()
		}
		if r.PostFormValue("from") == "page" {
			// A form of the stats page, sent without JavaScript: back to it.
			http.Redirect(w, r, "/", http.StatusSeeOther)
			return
		}
		if body != nil {
			w.Header().Set("Content-Type", "application/json")
			enc := json.NewEncoder(w)
			enc.SetIndent("", " ")
			enc.Encode(body)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, msg)
	}
}

func (s *Server) lookup(r *http.Request) (*backend.Backend, *backend.Server, string) {
	b := s.backends[r.PathValue("backend")]
	if b == nil {
		return nil, nil, fmt.Sprintf("no backend %q", r.PathValue("backend"))
	}
	sv := b.Server(r.PathValue("server"))
	if sv == nil {
		return b, nil, fmt.Sprintf("backend %s has no server %q", b.Name, r.PathValue("server"))
	}
	return b, sv, ""
}

func (s *Server) setState(r *http.Request) (int, string, any) {
	_, sv, miss := s.lookup(r)
	if sv == nil {
		return http.StatusNotFound, miss, nil
	}
	name := r.PostFormValue("state")
	st, err := conf.ParseAdminState(name)
	if err != nil {
		return http.StatusBadRequest, fmt.Sprintf("state %q is not one of ready, drain, maint", name), nil
	}
	prev := sv.Admin()
	sv.SetAdmin(st)
	return http.StatusOK, fmt.Sprintf("%s/%s: state %s -> %s", sv.Backend, sv.Name, prev, st), nil
}

func (s *Server) setWeight(r *http.Request) (int, string, any) {
	b, sv, miss := s.lookup(r)
	if sv == nil {
		return http.StatusNotFound, miss, nil
	}
	v := r.PostFormValue("weight")
	w, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil {
		return http.StatusBadRequest, fmt.Sprintf("weight %q is not a number", v), nil
	}
	prev := sv.Weight()
	if err := b.SetWeight(sv, w); err != nil {
		return http.StatusBadRequest, err.Error(), nil
	}
	return http.StatusOK, fmt.Sprintf("%s/%s: weight %d -> %d", sv.Backend, sv.Name, prev, w), nil
}

// StickyEntry is one entry of a backend's sticky table in the API.
type StickyEntry struct {
	Client  string `json:"client"`
	Server  string `json:"server"`
	Expires int64  `json:"expires_in"` // seconds; 0 when entries never expire
}

func (s *Server) showSticky(r *http.Request) (int, string, any) {
	b := s.backends[r.PathValue("backend")]
	if b == nil {
		return http.StatusNotFound, fmt.Sprintf("no backend %q", r.PathValue("backend")), nil
	}
	t := b.StickyTable()
	switch {
	case t == nil && b.Sticky == conf.StickyCookie:
		return http.StatusNotFound, fmt.Sprintf("backend %s keeps no sticky table: it pins clients with a cookie (sticky = \"cookie\"), which the client holds", b.Name), nil
	case t == nil:
		return http.StatusNotFound, fmt.Sprintf("backend %s keeps no sticky table: set sticky = \"source\" in [backend.%s] to keep one", b.Name, b.Name), nil
	}
	out := []StickyEntry{}
	ttl := t.TTL
	now := time.Now()
	for _, e := range b.StickyEntries() {
		se := StickyEntry{Client: e.Client.String(), Server: e.Server}
		if ttl > 0 {
			se.Expires = max(0, int64(e.LastUsed.Add(ttl).Sub(now).Seconds()))
		}
		out = append(out, se)
	}
	s.log.Info("admin call", "remote", r.RemoteAddr, "action", "show sticky", "target", b.Name, "entries", len(out))
	return http.StatusOK, "", map[string]any{"backend": b.Name, "sticky": b.Sticky, "entries": out}
}

// ClientLimit is one client of a frontend's rate limit table in the API.
type ClientLimit struct {
	Client         string  `json:"client"`
	Requests       float64 `json:"requests"`        // in the sliding window (peers' included when shared)
	ConnectionRate float64 `json:"connection_rate"` // new connections in the sliding window
	Connections    int     `json:"connections"`     // open now, on this node
}

// Limits is the answer of GET /api/frontends/{frontend}/limits.
type Limits struct {
	Frontend       string        `json:"frontend"`
	Period         float64       `json:"period"` // seconds
	Requests       int           `json:"requests,omitempty"`
	Connections    int           `json:"connections,omitempty"`
	ConnectionRate int           `json:"connection_rate,omitempty"`
	Shared         bool          `json:"shared"`
	TableSize      int           `json:"table_size"`
	Tracked        int           `json:"tracked"`
	Evicted        uint64        `json:"evicted"`
	Clients        []ClientLimit `json:"clients"` // the highest request rates first, then connection rates
}

// maxTopClients bounds ?n= of the limits call.
const maxTopClients = 1000

func (s *Server) showLimits(r *http.Request) (int, string, any) {
	name := r.PathValue("frontend")
	f := s.fronts[name]
	if f == nil {
		return http.StatusNotFound, fmt.Sprintf("no frontend %q", name), nil
	}
	var l *policy.Limiter
	if p := f.Policy(); p != nil {
		l = p.Limit
	}
	if l == nil {
		return http.StatusNotFound, fmt.Sprintf("frontend %s has no rate limit: add [frontend.%s.rate_limit] (requests, connections or connection_rate) to count its clients", name, name), nil
	}
	n := 20
	if v := r.URL.Query().Get("n"); v != "" {
		k, err := strconv.Atoi(v)
		if err != nil || k < 1 {
			return http.StatusBadRequest, fmt.Sprintf("n=%q: give how many clients to list, 1 to %d", v, maxTopClients), nil
		}
		n = min(k, maxTopClients)
	}
	cfg := l.Config()
	out := Limits{
		Frontend: name, Period: cfg.Period.Seconds(), Requests: cfg.Requests, Connections: cfg.Connections,
		ConnectionRate: cfg.ConnectionRate, Shared: cfg.Shared, TableSize: cfg.TableSize,
		Tracked: l.Tracked(), Evicted: l.Evicted(), Clients: []ClientLimit{},
	}
	for _, c := range l.Top(n, time.Now()) {
		out.Clients = append(out.Clients, ClientLimit{Client: c.Client.String(), Requests: c.Requests, ConnectionRate: c.ConnectionRate, Connections: c.Connections})
	}
	s.log.Info("admin call", "remote", r.RemoteAddr, "action", "show limits", "target", name, "clients", len(out.Clients))
	return http.StatusOK, "", out
}
