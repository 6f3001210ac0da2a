// Package backend owns pools of servers: their state, their counters and the
// algorithms that pick one for a new connection or request.
//
// Hot paths never lock: a Backend's server list is an immutable snapshot
// behind an atomic.Pointer, replaced whole when something structural changes
// (weights, servers added or removed); per-server state and counters are
// atomics read in place.
package backend

import (
	"crypto/sha256"
	"encoding/hex"
	"sync/atomic"
	"time"

	"sluice/internal/lograte"
)

// Server is one backend server. It must not be copied: it holds atomics.
type Server struct {
	_ noCopy

	Name    string
	Backend string
	Addr    string
	ID      string // opaque id for cookies: never the address
	Backup  bool
	MaxConn int64 // 0: no per-server limit

	ConfWeight int32 // weight from the config file

	weight atomic.Int32 // current weight (runtime changes)
	up     atomic.Bool  // health: true when up
	admin  atomic.Int32 // AdminReady / AdminDrain / AdminMaint
	active atomic.Int64 // connections open to this server now

	lastChange atomic.Int64 // unix nanos of the last up/down change
	check      checkState

	queue   atomic.Pointer[waitQueue]       // the backend's queue, woken when a slot frees
	backend atomic.Pointer[BackendCounters] // the backend's totals (its scur and smax)

	passive   passive         // passive observation (observe.go)
	slowStart slowStart       // the ramp after coming back up (observe.go)
	tlsLog    lograte.Limiter // failed handshakes logged once a second (tls.go)
	// httpVersion is what the last TLS handshake chose (HTTP1, HTTP2) when
	// alpn offers both: l7 routes the server's requests by it (tls.go).
	httpVersion atomic.Int32

	Counters Counters
}

// Counters are a server's running totals, read by stats at scrape time.
type Counters struct {
	Sessions   atomic.Uint64 // connections established (or requests sent, http)
	MaxActive  atomic.Int64
	BytesIn    atomic.Uint64 // bytes from client to server
	BytesOut   atomic.Uint64 // bytes from server to client
	ConnErrors atomic.Uint64 // failed connects
	Retries    atomic.Uint64 // connects retried elsewhere after failing here
	RespErrors atomic.Uint64 // responses that failed after the request was sent (server closed, timed out, broken body)
	// HTTP exchanges with this server that the client ended (left, reset
	// its stream, stopped reading) or the server broke off in its body:
	// HAProxy's cli_abrt and srv_abrt.
	ClientAborts atomic.Uint64
	ServerAborts atomic.Uint64
	Downs        atomic.Uint64 // up -> down transitions
	// HTTP responses by status class: [1] 1xx … [5] 5xx, [0] other.
	Resp [6]atomic.Uint64
	// TLSErrors counts failed TLS handshakes by reason (TLSReasonNames).
	TLSErrors [NumTLSReasons]atomic.Uint64
}

// NewServer builds a server that starts up, ready, with weight w.
func NewServer(backendName, name, addr string, w int, backup bool, maxconn int) *Server {
	s := &Server{Name: name, Backend: backendName, Addr: addr, Backup: backup, MaxConn: int64(maxconn), ConfWeight: int32(w)}
	sum := sha256.Sum256([]byte(backendName + "/" + name))
	s.ID = hex.EncodeToString(sum[:8])
	s.weight.Store(int32(w))
	s.up.Store(true)
	s.lastChange.Store(time.Now().UnixNano())
	return s
}

// Available reports whether the server may take a new connection: up, ready,
// weighted above zero and under its own maxconn.
func (s *Server) Available() bool {
	return s.inService() && (s.MaxConn == 0 || s.active.Load() < s.MaxConn)
}

// inService is Available without the maxconn test: the server takes traffic
// when it has a free slot.
func (s *Server) inService() bool {
	return s.up.Load() && AdminState(s.admin.Load()) == AdminReady && s.weight.Load() > 0
}

// Up reports the health state.
func (s *Server) Up() bool { return s.up.Load() }

// SetUp records a health state change; it reports whether it changed.
func (s *Server) SetUp(up bool) bool {
	if s.up.Swap(up) == up {
		return false
	}
	now := time.Now().UnixNano()
	if prev := s.lastChange.Swap(now); up {
		s.check.downNs.Add(now - prev) // the down spell that just ended
	}
	if !up {
		s.Counters.Downs.Add(1)
	}
	s.wakeQueue() // a server coming up frees slots; one going down may leave none
	return true
}

// LastChange is when the health state last changed.
func (s *Server) LastChange() time.Time { return time.Unix(0, s.lastChange.Load()) }

// RestoreLastChange sets when the health state last changed, as a previous
// worker recorded it (a reload or a restart after a crash carries it over).
// A time in the future is taken as now.
func (s *Server) RestoreLastChange(t time.Time) {
	s.lastChange.Store(min(t.UnixNano(), time.Now().UnixNano()))
}

// Admin returns the admin state.
func (s *Server) Admin() AdminState { return AdminState(s.admin.Load()) }

// SetAdmin sets the admin state.
func (s *Server) SetAdmin(a AdminState) {
	if s.admin.Swap(int32(a)) != int32(a) {
		s.wakeQueue()
	}
}

// Weight is the current weight.
func (s *Server) Weight() int32 { return s.weight.Load() }

// Active is the number of connections open to the server now.
func (s *Server) Active() int64 { return s.active.Load() }

// Acquire counts a new connection to the server even past its maxconn; call
// Release when it ends. Prefer TryAcquire (or Backend.PickWait), which keeps
// to maxconn.
func (s *Server) Acquire() { s.acquired(s.active.Add(1)) }

// TryAcquire counts a new connection unless the server is at its maxconn,
// and reports whether it did. The check and the count are one atomic step,
// so two racing picks cannot both take the last slot. Call Release when the
// connection ends.
func (s *Server) TryAcquire() bool {
	if s.MaxConn == 0 {
		s.acquired(s.active.Add(1))
		return true
	}
	for {
		n := s.active.Load()
		if n >= s.MaxConn {
			return false
		}
		if s.active.CompareAndSwap(n, n+1) {
			s.acquired(n + 1)
			return true
		}
	}
}

func (s *Server) acquired(n int64) {
	s.Counters.Sessions.Add(1)
	raiseMax(&s.Counters.MaxActive, n)
	if bc := s.backend.Load(); bc != nil {
		raiseMax(&bc.MaxActive, bc.Current.Add(1))
	}
}

// raiseMax makes m at least n.
func raiseMax(m *atomic.Int64, n int64) {
	for {
		v := m.Load()
		if n <= v || m.CompareAndSwap(v, n) {
			return
		}
	}
}

// Release ends a connection counted by Acquire or TryAcquire, and hands the
// freed slot to a connection waiting in the backend's queue, if any.
func (s *Server) Release() {
	s.active.Add(-1)
	if bc := s.backend.Load(); bc != nil {
		bc.Current.Add(-1)
	}
	s.wakeQueue()
}

// wakeQueue wakes one waiter of the backend's queue after a change that may
// let it through. It costs two atomic loads when nobody waits.
func (s *Server) wakeQueue() {
	if q := s.queue.Load(); q != nil && q.waiting.Load() > 0 {
		q.wake()
	}
}

// noCopy makes `go vet` flag copies of structs that hold atomics.
type noCopy struct{}

func (*noCopy) Lock()   {}
func (*noCopy) Unlock() {}
