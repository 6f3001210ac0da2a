package policy

import (
	"net/netip"
	"testing"
	"time"

	"sluice/conf"
)

// TestTableSizeIsABound: table_size is the most clients tracked, for any
// size (not a multiple of the shards rounded up: 1000 held 1008).
func TestTableSizeIsABound(t *testing.T) {
	now := time.Now()
	for _, size := range []int{1, 63, 100, 1000, 4097} {
		l := NewLimiter(&conf.RateLimit{Requests: 5, Period: time.Second, TableSize: size})
		for i := range 3 * size {
			l.request(netip.AddrFrom4([4]byte{127, byte(i >> 16), byte(i >> 8), byte(i)}), now)
		}
		if l.Tracked() > size {
			t.Errorf("table_size %d: %d clients tracked", size, l.Tracked())
		}
		if got := l.Tracked() + int(l.Evicted()); got != 3*size {
			t.Errorf("table_size %d: tracked %d + evicted %d != %d clients", size, l.Tracked(), l.Evicted(), 3*size)
		}
	}
}
