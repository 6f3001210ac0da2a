// Package gopool runs functions on goroutines that are kept for the next
// function once theirs returns, with the stack they grew.
//
// A goroutine starts with a 2 KiB stack; serving a connection grows it to
// 8 KiB or more, a copy at each doubling, and the grown stack is freed
// when the goroutine exits. With a goroutine per accepted connection (or
// per keep-alive client woken from the park set) that growth and the start
// itself were 6–8% of the worker's CPU on new-connection-per-request
// traffic. A kept goroutine costs its stack while it waits: at most
// maxIdle wait, and each for idleFor at most.
package gopool

import (
	"sync/atomic"
	"time"
)

// Pool is a set of kept goroutines.
type Pool struct {
	work    chan func()
	idle    atomic.Int32
	started atomic.Int64 // goroutines started (tests: reuse shows as few)
	maxIdle int32
	idleFor time.Duration
}

// New makes a pool keeping at most maxIdle goroutines waiting, each for
// idleFor at most.
func New(maxIdle int, idleFor time.Duration) *Pool {
	return &Pool{work: make(chan func()), maxIdle: int32(maxIdle), idleFor: idleFor}
}

// Default is the process's pool: 128 waiting goroutines of 8–16 KiB are
// 1–2 MiB at most (a burst's leftovers weigh on the idle clients' memory:
// docs/performance.md), and a second outlasts the gaps of steady traffic.
var Default = New(128, time.Second)

// Go runs fn on a waiting goroutine of the pool, or on a new one.
func Go(fn func()) { Default.Go(fn) }

// Go runs fn on a waiting goroutine of p, or on a new one.
func (p *Pool) Go(fn func()) {
	select {
	case p.work <- fn: // a goroutine waits in run's select
	default:
		p.started.Add(1)
		go p.run(fn)
	}
}

// Idle is how many goroutines wait for work now.
func (p *Pool) Idle() int { return int(p.idle.Load()) }

func (p *Pool) run(fn func()) {
	var t *time.Timer
	for {
		fn()
		fn = nil // nothing of the last run stays reachable while waiting
		if p.idle.Add(1) > p.maxIdle {
			p.idle.Add(-1)
			return
		}
		if t == nil {
			t = time.NewTimer(p.idleFor)
		} else {
			t.Reset(p.idleFor)
		}
		select {
		case fn = <-p.work:
			p.idle.Add(-1)
			t.Stop()
		case <-t.C:
			p.idle.Add(-1)
			return
		}
	}
}
