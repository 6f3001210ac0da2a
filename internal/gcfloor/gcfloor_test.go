package gcfloor

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"testing"
)

func TestPercentFor(t *testing.T) {
	const mib = 1 << 20
	for _, c := range []struct{ floor, live, roots, want int64 }{
		{0, 2 * mib, 0, 100},               // off: Go's pacing
		{32 * mib, 64 * mib, 0, 100},       // doubling is more than the floor
		{32 * mib, 16 * mib, 0, 200},       // goal 48 MiB
		{32 * mib, 8 * mib, 0, 400},        // goal 40 MiB
		{32 * mib, 2 * mib, 0, 850},        // goal 34 MiB through Go's minimum heap (4 MiB × 8.5)
		{32 * mib, 0, 0, 800},              // before the first collection: the floor itself
		{32 * mib, 8 * mib, 8 * mib, 200},  // stacks count: 8 + (8+8)×2 = 40 MiB
		{32 * mib, 2 * mib, 62 * mib, 100}, // stacks past the floor: Go's own pacing
	} {
		if got := percentFor(c.floor, c.live, c.roots); got != c.want {
			t.Errorf("percentFor(%d MiB, %d MiB, %d MiB) = %d, want %d", c.floor/mib, c.live/mib, c.roots/mib, got, c.want)
		}
	}
}

// TestFloorSpacesCollections allocates the same garbage with and without a
// floor and counts the collections the runtime ran.
func TestFloorSpacesCollections(t *testing.T) {
	if !Set(0) {
		t.Skip("GOGC is set in the environment")
	}
	defer Set(0)
	cycles := func() uint64 {
		s := []metrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}}
		metrics.Read(s)
		return s[0].Value.Uint64()
	}
	var keep [][]byte
	churn := func() uint64 {
		runtime.GC()
		c0 := cycles()
		for i := range 20000 { // 320 MiB of short-lived 16 KiB buffers
			b := make([]byte, 16<<10)
			b[0] = byte(i)
			keep = append(keep[:0], b)
		}
		return cycles() - c0
	}
	base := churn()
	Set(64 << 20)
	if Percent() <= 100 {
		t.Fatalf("Percent() = %d with a 64 MiB floor over a small heap, want more than 100", Percent())
	}
	floored := churn()
	t.Logf("collections for 320 MiB of garbage: %d at Go's pacing, %d with a 64 MiB floor (GOGC %d)", base, floored, Percent())
	if floored*4 > base {
		t.Errorf("a 64 MiB floor ran %d collections where Go's pacing ran %d, want at most a quarter", floored, base)
	}
	Set(0)
	if Percent() != 100 {
		t.Errorf("Percent() = %d after Set(0), want 100", Percent())
	}
}

// TestFloorCountsStacks: with thousands of goroutines parked on deep stacks
// (a connection each) and a small live heap, the heap goal Go computes is
// still about live+floor. A percentage from the live heap alone multiplied
// the stacks too: ~1 GiB of goal for a 32 MiB floor here.
func TestFloorCountsStacks(t *testing.T) {
	if !Set(0) {
		t.Skip("GOGC is set in the environment")
	}
	defer Set(0)
	const goroutines, floorBytes = 2000, 32 << 20
	release := make(chan struct{})
	var parked, done sync.WaitGroup
	var deep func(n int) byte
	deep = func(n int) byte {
		var pad [1 << 10]byte // 64 frames: ~64 KiB of stack in use
		pad[n%len(pad)] = byte(n)
		if n == 0 {
			parked.Done()
			<-release
			return pad[0]
		}
		return deep(n-1) + pad[n%len(pad)]
	}
	for range goroutines {
		parked.Add(1)
		done.Add(1)
		go func() { defer done.Done(); deep(64) }()
	}
	parked.Wait()
	defer func() { close(release); done.Wait() }()
	runtime.GC() // records the stacks it scanned
	Set(floorBytes)
	s := []metrics.Sample{{Name: "/gc/heap/goal:bytes"}, {Name: "/gc/heap/live:bytes"}, {Name: "/gc/scan/stack:bytes"}}
	metrics.Read(s)
	goal, live, stacks := s[0].Value.Uint64(), s[1].Value.Uint64(), s[2].Value.Uint64()
	t.Logf("live heap %d KiB, stacks scanned %d MiB, GOGC %d, heap goal %d MiB", live>>10, stacks>>20, Percent(), goal>>20)
	if stacks < goroutines*32<<10 {
		t.Fatalf("only %d KiB of stacks scanned; the test did not set up what it checks", stacks>>10)
	}
	// Go's own goal is live + (live+stacks) at GOGC 100; the floor may not
	// push it past that or past live+floor, whichever is more, beyond slack.
	want := max(live+floorBytes, 2*live+stacks) + 4<<20
	if goal > want {
		t.Errorf("heap goal %d MiB with a %d MiB floor over %d KiB live and %d MiB of stacks, want at most %d MiB", goal>>20, floorBytes>>20, live>>10, stacks>>20, want>>20)
	}
}

// TestPercentShowsEnvironment: with GOGC set in the environment Set leaves
// the percentage alone, and Percent (the stats page's gc) reports the one
// in force, not the 100 this package would have set.
func TestPercentShowsEnvironment(t *testing.T) {
	t.Setenv("GOGC", "50")
	old := debug.SetGCPercent(50) // what the runtime read from GOGC=50 at start
	defer debug.SetGCPercent(old)
	if Set(32 << 20) {
		t.Fatal("Set applied a floor with GOGC set in the environment")
	}
	if p := Percent(); p != 50 {
		t.Errorf("Percent() = %d with GOGC=50, want 50", p)
	}
}

// TestSetConcurrent: Set from many goroutines while they allocate (the
// collector's finalizer adjusting at the same time) ends on the last
// value set; -race checks the rest.
func TestSetConcurrent(t *testing.T) {
	if !Set(0) {
		t.Skip("GOGC is set in the environment")
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var sink []byte
			for i := range 200 {
				Set(int64((g*200+i)%64) << 20)
				sink = make([]byte, 64<<10)
				sink[0] = byte(i)
			}
			_ = sink
		}()
	}
	wg.Wait()
	Set(0)
	if p := Percent(); p != 100 {
		t.Errorf("Percent() = %d after the last Set(0), want 100", p)
	}
}
