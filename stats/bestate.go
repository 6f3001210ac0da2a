package stats

import (
	"sync"
	"time"

	"sluice/backend"
)

// backendStates follows each backend's UP/DOWN state for HAProxy's backend
// lastchg, downtime and chkdown. sluice computes a backend's state from its
// servers when asked, so the changes are seen when a snapshot is taken or
// the rate sampler runs (once a second): a backend down for less than that
// between two looks may go unnoticed.
type backendStates struct {
	mu    sync.Mutex
	start time.Time
	m     map[*backend.Backend]*backendState
}

type backendState struct {
	up       bool
	since    time.Time     // the last change (or when sluice started)
	downtime time.Duration // spent down before since
	downs    uint64        // up -> down changes
}

func newBackendStates(start time.Time) *backendStates {
	return &backendStates{start: start, m: map[*backend.Backend]*backendState{}}
}

// observe records that b is up (or not) at now and returns the seconds
// since its last change, its total downtime in seconds and how many times
// it went down.
func (bs *backendStates) observe(b *backend.Backend, up bool, now time.Time) (lastchg, downtime int64, downs uint64) {
	bs.mu.Lock()
	defer bs.mu.Unlock()
	st := bs.m[b]
	if st == nil {
		st = &backendState{up: up, since: bs.start}
		bs.m[b] = st
	}
	if up != st.up {
		if !up {
			st.downs++
		} else {
			st.downtime += now.Sub(st.since)
		}
		st.up, st.since = up, now
	}
	down := st.downtime
	if !st.up {
		down += now.Sub(st.since)
	}
	return int64(max(0, now.Sub(st.since).Seconds())), int64(down.Seconds()), st.downs
}

// sample looks at every backend; the rate sampler calls it.
func (bs *backendStates) sample(bes []*backend.Backend, now time.Time) {
	for _, b := range bes {
		up := false
		for _, sv := range b.Servers() {
			if _, state := serverStatus(sv, b.Checked); inService(state) {
				up = true
				break
			}
		}
		bs.observe(b, up, now)
	}
}
