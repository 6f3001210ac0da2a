// Package stats serves what operators look at: the HTML stats page, the same
// figures as CSV and JSON, Prometheus /metrics, and the runtime admin API
// (drain, maintenance, weight, sticky table) on the stats listener.
//
// Everything is read from the live atomics of frontends, backends and
// servers at request time: nothing on the data path calls into this package.
package stats

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"sluice/backend"
	"sluice/frontend"
)

// Options is what a stats server reads and how it behaves.
type Options struct {
	Frontends []*frontend.Frontend
	Backends  []*backend.Backend // shown in this order (the engine sorts them by name)
	Process   *Process           // nil: a fresh one for this process
	// Current returns the connections open on all frontends (for the
	// process line); nil counts them from Frontends.
	Current func() int
	MaxConn int // global.maxconn
	// MaxConns caps the connections served at once (stats.maxconn);
	// 0 means DefaultMaxConns.
	MaxConns int
	// FDs is how the descriptor limit is shared; nil: not shown.
	FDs *FDs
	// VitalFrontends must each have a server up for /healthz to answer 200.
	VitalFrontends []string
	// Node is the node's admin state (maintenance); nil: a fresh one.
	Node *Node
	// Unserved, when set, says why this node cannot serve, or "": /healthz
	// and the page ask it (the engine passes its one rule, which the
	// master's track file follows too). nil: frontend.Unserved over the
	// frontends and backends above.
	Unserved func() string
	// TrackFile is global.track_file, shown on the page; "" for none.
	TrackFile string
	// AdminToken enables the admin API; "" disables it.
	AdminToken string
	Log        *slog.Logger
	// RateInterval is how often session rates are sampled; 0 means 1s.
	RateInterval time.Duration
	// Counters are figures without a column in the tables (see Counter).
	Counters []Counter
	// AfterAdminChange, when set, is called after an admin call changed a
	// server and before the call is answered: a worker makes the change
	// reach its master there, so "done" survives a crash right after.
	AfterAdminChange func()
	// BGP, when set, is the master's BGP state (nil: no [bgp]).
	BGP func() *BGP
}

// Process is the process information shown at the top of the page. Its
// fields may be changed while the server runs (the master updates workers
// and reloads).
type Process struct {
	Version string
	PID     int
	Started time.Time
	Workers atomic.Int64 // workers running (1 without a master)
	Reloads atomic.Int64 // reloads done by the master so far
}

// ReloadsEnv is the environment variable a master sets on a worker to tell
// it how many reloads came before it.
const ReloadsEnv = "SLUICE_RELOADS"

// NewProcess describes this process: started now, one worker, the reload
// count taken from $SLUICE_RELOADS when set.
func NewProcess(version string) *Process {
	p := &Process{Version: version, PID: os.Getpid(), Started: time.Now()}
	p.Workers.Store(1)
	if n, err := strconv.ParseInt(os.Getenv(ReloadsEnv), 10, 64); err == nil && n >= 0 {
		p.Reloads.Store(n)
	}
	return p
}

// FDs is the file descriptor budget the engine planned (fdlimit.Plan):
// connections get 2 each under global.maxconn, UDP flows 1 each under
// their frontends' max_flows, and a reserve the rest.
type FDs struct {
	Limit        uint64 `json:"limit"` // RLIMIT_NOFILE; 0 when unknown
	Reserve      int    `json:"reserve"`
	MaxConnShare int    `json:"maxconn_share"` // 2 * global.maxconn
	FlowsShare   int    `json:"flows_share"`   // sum of the max_flows of udp frontends
	FlowsUsed    int    `json:"flows_used"`    // filled in each snapshot
}

// Server serves the stats listener.
type Server struct {
	opt      Options
	fronts   map[string]*frontend.Frontend
	backends map[string]*backend.Backend
	node     *Node
	token    []byte // sha256 of the admin token, nil when admin is off
	registry *prometheus.Registry
	rates    *rates
	// backendStates follows backends going up and down.
	backendStates *backendStates
	log           *slog.Logger
	mux           *http.ServeMux

	httpSrv  *http.Server
	ln       *limitListener
	stopOnce sync.Once
	stop     chan struct{}
	wg       sync.WaitGroup
}

// New builds a stats server over opt.
func New(opt Options) *Server {
	if opt.Process == nil {
		opt.Process = NewProcess("dev")
	}
	if opt.Log == nil {
		opt.Log = slog.New(slog.DiscardHandler)
	}
	if opt.Node == nil {
		opt.Node = &Node{}
	}
	if opt.RateInterval <= 0 {
		opt.RateInterval = time.Second
	}
	if opt.MaxConns <= 0 {
		opt.MaxConns = DefaultMaxConns
	}
	s := &Server{
		opt:      opt,
		fronts:   map[string]*frontend.Frontend{},
		backends: map[string]*backend.Backend{},
		log:      opt.Log,
		node:     opt.Node,
		stop:     make(chan struct{}),
	}
	for _, f := range opt.Frontends {
		s.fronts[f.Name] = f
	}
	for _, b := range opt.Backends {
		s.backends[b.Name] = b
	}
	if opt.AdminToken != "" {
		s.token = hashToken(opt.AdminToken)
	}
	s.ln = newLimitListener(nil, opt.MaxConns)
	// Counted here so that every stats server shows its own cap.
	s.opt.Counters = append(s.opt.Counters[:len(s.opt.Counters):len(s.opt.Counters)],
		Counter{Name: "stats_conns", Help: "Connections the stats listener serves now.", Gauge: true,
			Value: func() float64 { return float64(s.ln.open.Load()) }},
		Counter{Name: "stats_conns_limit", Help: "The most connections the stats listener serves at once (stats.maxconn); more wait in the kernel's queue.", Gauge: true,
			Value: func() float64 { return float64(cap(s.ln.sem)) }},
		Counter{Name: "stats_conns_waited_total", Help: "Accepts on the stats listener that waited because stats.maxconn connections were open.",
			Value: func() float64 { return float64(s.ln.waited.Load()) }})
	s.rates = newRates(opt.Frontends, opt.Backends)
	s.backendStates = newBackendStates(time.Now())
	s.registry = newRegistry(s)
	s.mux = s.routes()
	return s
}

// Handler returns the HTTP handler of every page and API.
func (s *Server) Handler() http.Handler { return s.mux }

// Serve answers on ln until Close. It samples rates in the background.
func (s *Server) Serve(ln net.Listener) {
	s.httpSrv = &http.Server{
		Handler: s.mux,
		// Short: each connection holds one of stats.maxconn slots.
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       15 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	s.ln.Listener = ln
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		s.sampleRates()
	}()
	go func() {
		defer s.wg.Done()
		if err := s.httpSrv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Warn("stats listener stopped", "err", err)
		}
	}()
}

// Close stops the listener, waiting up to ctx for requests in flight.
func (s *Server) Close(ctx context.Context) {
	s.stopOnce.Do(func() {
		close(s.stop)
		if s.httpSrv != nil {
			if err := s.httpSrv.Shutdown(ctx); err != nil {
				s.httpSrv.Close()
			}
		}
		s.wg.Wait()
	})
}

func (s *Server) sampleRates() {
	t := time.NewTicker(s.opt.RateInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case now := <-t.C:
			s.rates.sample(now)
			s.backendStates.sample(s.opt.Backends, now)
		}
	}
}

func (s *Server) current() int {
	if s.opt.Current != nil {
		return s.opt.Current()
	}
	n := 0
	for _, f := range s.opt.Frontends {
		n += int(f.Counters.Current.Load())
	}
	return n
}

// rates keeps the per-second session rate of every frontend, backend and
// server: a sampler reads the running totals once per interval, so the
// data path pays nothing for it.
type rates struct {
	mu   sync.Mutex
	last time.Time
	m    map[any]*rate
}

type rate struct {
	prev      uint64
	cur, max  uint64
	sessTotal func() uint64
}

func newRates(fs []*frontend.Frontend, bs []*backend.Backend) *rates {
	r := &rates{m: map[any]*rate{}, last: time.Now()}
	for _, f := range fs {
		r.add(f, func() uint64 { return f.Counters.Sessions.Load() })
	}
	for _, b := range bs {
		r.add(b, func() uint64 { return backendSessions(b) })
		for _, sv := range b.Servers() {
			r.add(sv, func() uint64 { return sv.Counters.Sessions.Load() })
		}
	}
	return r
}

func (r *rates) add(k any, total func() uint64) {
	r.m[k] = &rate{prev: total(), sessTotal: total}
}

func backendSessions(b *backend.Backend) uint64 {
	var n uint64
	for _, sv := range b.Servers() {
		n += sv.Counters.Sessions.Load()
	}
	return n
}

// sample updates every rate from the totals now. Servers are found through
// their backends each time, so servers added at run time (DNS) are picked
// up.
func (r *rates) sample(now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	secs := now.Sub(r.last).Seconds()
	r.last = now
	if secs <= 0 {
		return
	}
	seen := make(map[any]bool, len(r.m))
	for k, rt := range r.m {
		if b, ok := k.(*backend.Backend); ok {
			for _, sv := range b.Servers() {
				seen[sv] = true
				if _, ok := r.m[sv]; !ok {
					r.add(sv, func() uint64 { return sv.Counters.Sessions.Load() })
				}
			}
		}
		rt.update(secs)
	}
	for k := range r.m {
		if _, ok := k.(*backend.Server); ok && !seen[k] {
			delete(r.m, k) // gone from its backend
		}
	}
}

func (rt *rate) update(secs float64) {
	t := rt.sessTotal()
	d := t - rt.prev
	rt.prev = t
	rt.cur = uint64(float64(d)/secs + 0.5)
	rt.max = max(rt.max, rt.cur)
}

// get returns the current and highest rate of k (0, 0 before the first
// sample).
func (r *rates) get(k any) (cur, mx uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if rt := r.m[k]; rt != nil {
		return rt.cur, rt.max
	}
	return 0, 0
}
