// Package memtrim gives the memory a burst left behind back to the
// operating system once traffic calms down.
//
// Go collects garbage when the heap has doubled, and returns free pages to
// the OS only above the next collection's goal. After a burst (thousands
// of clients connecting at once, say) the process goes quiet holding the
// burst's garbage, pooled buffers and free pages: nothing allocates, so no
// collection comes for up to two minutes, and the resident memory stays at
// the burst's size while the clients left idle need a third of it.
// HAProxy trims its pools the same way when memory is no longer in use.
package memtrim

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync/atomic"
	"time"
)

// Interval is how often the allocation rate is looked at.
const Interval = time.Second

// minGrowth is how much the heap the process holds must have grown since
// the last trim (or start) before a quiet interval trims it, and at least
// a quarter more: below that two collections are not worth their work.
const minGrowth = 8 << 20

// quietShare: an interval is quiet when it allocated less than
// 1/quietShare of the heap the process holds. A busy process allocates its
// heap's worth in well under a second, and collects on its own.
const quietShare = 64

// maxQuiet bounds the quiet spell a trim waits for, in intervals. A trim
// that comes within maxQuiet intervals of the previous one means the
// memory it gave back was wanted again (bursts every few seconds): the next
// trim then waits for a quiet spell twice as long, so a repeating burst
// stops being trimmed once its gaps are shorter than the spell, and no
// more than about log2(maxQuiet)+1 trims fall in any maxQuiet intervals.
// A trim longer than maxQuiet after the previous one resets the spell to
// one interval.
const maxQuiet = 64

// trims counts the trims of the process (Trims).
var trims atomic.Uint64

// Trims is how many times the process gave a burst's memory back.
func Trims() uint64 { return trims.Load() }

// Trimmer decides, once per Interval, whether to trim.
type Trimmer struct {
	samples    []metrics.Sample
	lastAllocs uint64
	base       uint64 // heap held after the last trim, or the least seen since
	ticks      uint64 // intervals seen
	lastTrim   uint64 // ticks at the last trim; 0: none yet
	quietRun   uint64 // quiet intervals in a row up to now
	quietNeed  uint64 // quiet intervals in a row a trim waits for
}

// New starts a Trimmer from the process's state now.
func New() *Trimmer {
	t := &Trimmer{samples: []metrics.Sample{
		{Name: "/gc/heap/allocs:bytes"},
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/memory/classes/heap/unused:bytes"},
		{Name: "/memory/classes/heap/free:bytes"},
	}, quietNeed: 1}
	t.lastAllocs, t.base = t.read()
	return t
}

// read returns the bytes allocated since the process started, and the heap
// memory the process holds from the OS: objects live or dead, unused parts
// of spans, free pages not yet returned.
func (t *Trimmer) read() (allocs, held uint64) {
	metrics.Read(t.samples)
	v := func(i int) uint64 {
		if t.samples[i].Value.Kind() != metrics.KindUint64 {
			return 0
		}
		return t.samples[i].Value.Uint64()
	}
	return v(0), v(1) + v(2) + v(3)
}

// Tick looks at the interval since the last one and trims when it was
// quiet after growth. It reports whether it trimmed.
func (t *Trimmer) Tick() bool {
	allocs, held := t.read()
	delta := allocs - t.lastAllocs
	t.lastAllocs = allocs
	t.base = min(t.base, held)
	t.ticks++
	if delta > held/quietShare {
		t.quietRun = 0
		return false
	}
	t.quietRun++
	if held < t.base+max(minGrowth, t.base/4) || t.quietRun < t.quietNeed {
		return false
	}
	if t.lastTrim != 0 && t.ticks-t.lastTrim <= maxQuiet {
		t.quietNeed = min(2*t.quietNeed, maxQuiet)
	} else {
		t.quietNeed = 1
	}
	t.lastTrim = t.ticks
	// Two collections: the first only moves what the sync.Pools hold to
	// their victim caches, the second frees it; FreeOSMemory's own
	// collection is the second, and it returns the free pages.
	runtime.GC()
	debug.FreeOSMemory()
	t.lastAllocs, t.base = t.read()
	trims.Add(1)
	return true
}

// Run ticks until stop is closed.
func Run(stop <-chan struct{}) {
	t := New()
	tk := time.NewTicker(Interval)
	defer tk.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tk.C:
			t.Tick()
		}
	}
}
