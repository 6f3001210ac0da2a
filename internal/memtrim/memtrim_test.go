package memtrim

import (
	"runtime"
	"sync"
	"testing"
)

var sink [][]byte

// burst allocates n bytes in 64 KiB pieces, kept live until dropped, and
// some more through a sync.Pool, as the request path's buffers are.
func burst(n int) (drop func()) {
	var pool sync.Pool
	for i := 0; i < n/(64<<10); i++ {
		b := make([]byte, 64<<10)
		b[0] = 1
		sink = append(sink, b)
		if i%4 == 0 {
			pool.Put(&b)
		}
	}
	return func() { sink = nil }
}

// heldNow is what the process holds after the trimmer's own reading.
func heldNow(t *Trimmer) uint64 { _, h := t.read(); return h }

func TestQuietAfterBurstTrims(t *testing.T) {
	runtime.GC()
	tr := New()
	before := trims.Load()
	drop := burst(64 << 20)
	drop()
	// The burst's allocations fall in the first interval: not quiet yet.
	if tr.Tick() {
		t.Fatal("trimmed in the interval of the burst itself")
	}
	heldBurst := heldNow(tr)
	if !tr.Tick() {
		t.Fatalf("a quiet interval after a burst did not trim (held %d MiB, base %d MiB)", heldBurst>>20, tr.base>>20)
	}
	after := heldNow(tr)
	if after > heldBurst-32<<20 {
		t.Errorf("held %d MiB after the trim, %d MiB before: the burst's memory was not given back", after>>20, heldBurst>>20)
	}
	if trims.Load() != before+1 {
		t.Errorf("trims counted %d, want %d", trims.Load(), before+1)
	}
	// Nothing grew since: no second trim.
	if tr.Tick() {
		t.Error("trimmed again with nothing grown")
	}
}

func TestBusyIntervalDoesNotTrim(t *testing.T) {
	runtime.GC()
	tr := New()
	keep := burst(32 << 20) // grown, and still in use
	defer keep()
	tr.Tick()
	// Allocating more than 1/quietShare of the heap each interval: busy.
	for range 3 {
		var junk [][]byte
		for range (heldNow(tr)/quietShare)/(16<<10) + 8 {
			junk = append(junk, make([]byte, 16<<10))
		}
		_ = junk
		if tr.Tick() {
			t.Fatal("trimmed during a busy interval")
		}
	}
}

// A burst every other second (a batch job, a cron'd client fleet) regrows
// the heap each time: without a back-off every quiet second after one
// trimmed, two collections and a re-fault of the burst's pages each time.
func TestBurstsEveryOtherSecondBackOff(t *testing.T) {
	runtime.GC()
	tr := New()
	n := 0
	const cycles = 20
	for range cycles {
		drop := burst(24 << 20)
		drop()
		if tr.Tick() { // the burst's own interval: busy
			n++
		}
		if tr.Tick() { // a quiet second after it
			n++
		}
	}
	if n > 4 {
		t.Errorf("%d trims in %d bursts two seconds apart, want at most 4: trims must back off when the memory is wanted again", n, cycles)
	}
	if n == 0 {
		t.Error("no trim at all after the first burst")
	}
	// The bursts stop: a long enough quiet spell still trims.
	drop := burst(24 << 20)
	drop()
	tr.Tick()
	trimmed := false
	for range 64 + 1 {
		if tr.Tick() {
			trimmed = true
			break
		}
	}
	if !trimmed {
		t.Errorf("no trim in %d quiet seconds after the bursts stopped", 64+1)
	}
}
