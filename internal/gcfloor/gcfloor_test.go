package gcfloor

import (
	"runtime"
	"runtime/metrics"
	"testing"
)

func TestPercentFor(t *testing.T) {
	const mib = 1 << 20
	for _, c := range []struct{ floor, live, want int64 }{
		{0, 2 * mib, 100},         // off: Go's pacing
		{32 * mib, 64 * mib, 100}, // doubling is more than the floor
		{32 * mib, 16 * mib, 200}, // goal 48 MiB
		{32 * mib, 8 * mib, 400},  // goal 40 MiB
		{32 * mib, 2 * mib, 850},  // goal 34 MiB through Go's minimum heap (4 MiB × 8.5)
		{32 * mib, 0, 800},        // before the first collection: the floor itself
	} {
		if got := percentFor(c.floor, c.live); got != c.want {
			t.Errorf("percentFor(%d MiB, %d MiB) = %d, want %d", c.floor/mib, c.live/mib, got, c.want)
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
