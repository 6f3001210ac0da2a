// Package gcfloor keeps Go's garbage collector from running while the heap
// is small.
//
// Go collects when the heap has doubled since the last collection, and at 4
// MiB at least. A balancer holds little live memory (1–2 MiB with a few
// dozen clients) and allocates fast while it works (a TLS handshake
// allocates tens of KiB): it collected ~35 times a second under TLS
// handshakes, and the collector, its assists and the page scavenger took a
// fifth of the worker's CPU. HAProxy has no collector. A floor lets the
// heap grow by that many bytes past what the last collection left live
// before the next one, and by Go's 100% when that is more: the cost is at
// most the floor in resident memory under load, given back by memtrim once
// traffic calms.
package gcfloor

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"sync/atomic"
)

// minHeap is Go's least heap goal at GOGC=100 (runtime.defaultHeapMinimum);
// it scales with GOGC, so a large percentage over a tiny live heap would
// put the goal far above the floor. percentFor keeps it at the floor.
const minHeap = 4 << 20

var (
	floor   atomic.Int64
	percent atomic.Int64 // the GOGC this package last set; 100 until Set
	once    sync.Once
	mu      sync.Mutex // sample, the collector's finalizer and Set
	// The live heap and the roots the last collection scanned: Go's goal
	// is live + (live + stacks + globals) × GOGC/100, so goroutine stacks
	// (one per TLS or HTTP/2 connection) count in the percentage too.
	sample = []metrics.Sample{{Name: "/gc/heap/live:bytes"}, {Name: "/gc/scan/stack:bytes"}, {Name: "/gc/scan/globals:bytes"}}
)

func init() { percent.Store(100) }

// Set makes the next collections wait until the heap has grown by bytes
// past what the last one left live (Go's doubling when that is more); 0
// gives Go's own pacing back. It does nothing and reports false when the
// GOGC environment variable is set: the operator's choice stands.
func Set(bytes int64) bool {
	if os.Getenv("GOGC") != "" {
		return false
	}
	floor.Store(max(bytes, 0))
	once.Do(arm)
	adjust()
	return true
}

// Cycles is how many garbage collections the process has run.
func Cycles() uint64 {
	n, _ := readOne("/gc/cycles/total:gc-cycles")
	return n
}

// readOne reads one uint64 runtime metric; false when the runtime has
// no such metric.
func readOne(name string) (uint64, bool) {
	s := []metrics.Sample{{Name: name}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0, false
	}
	return s[0].Value.Uint64(), true
}

// Percent is the GOGC in force, as the runtime has it: a GOGC environment
// variable's when that is set (-1 for off), else this package's.
func Percent() int64 {
	n, ok := readOne("/gc/gogc:percent")
	if !ok {
		return percent.Load()
	}
	return int64(n) // the runtime's int32, -1 (off) included
}

// sentinel has a pointer so that it is not tiny-allocated: a finalizer on
// a tiny object waits for its whole 16-byte block.
type sentinel struct{ _ *byte }

// arm sets a finalizer that runs after the next collection and re-arms
// itself, so the percentage follows the live heap one collection behind.
func arm() {
	runtime.SetFinalizer(&sentinel{}, func(*sentinel) {
		adjust()
		arm()
	})
}

func adjust() {
	mu.Lock()
	defer mu.Unlock()
	metrics.Read(sample)
	v := func(i int) int64 {
		if sample[i].Value.Kind() != metrics.KindUint64 {
			return 0
		}
		return int64(sample[i].Value.Uint64())
	}
	p, cur := percentFor(floor.Load(), v(0), v(1)+v(2)), percent.Load()
	// A live heap that moves by a few KiB leaves the setting alone.
	if d := p - cur; d > cur/8 || -d > cur/8 || (p == 100) != (cur == 100) {
		debug.SetGCPercent(int(p))
		percent.Store(p)
	}
}

// percentFor is the GOGC that puts the next collection at live+floor
// bytes, or where GOGC=100 puts it when that is more. Go's goal is
// max(live + (live+roots)×p/100, minHeap×p/100), roots being the stacks
// and globals the last collection scanned, hence the two bounds: a
// percentage from the live heap alone multiplies the stacks too (8,000
// goroutines' 64 MiB at GOGC 850 is 540 MiB past the floor).
func percentFor(floor, live, roots int64) int64 {
	if floor <= 0 {
		return 100
	}
	live, roots = max(live, 0), max(roots, 0)
	return max(100, min(floor*100/max(live+roots, 1), (live+floor)*100/minHeap))
}
