package conf_test

import (
	"path/filepath"
	"strings"
	"testing"

	"sluice/conf"
)

// TestGCHeapFloorKey: global.gc_heap_floor defaults to 32 MiB, 0 is Go's
// own pacing, and a negative or huge value is refused with file, line and
// key.
func TestGCHeapFloorKey(t *testing.T) {
	file := filepath.Join(t.TempDir(), "sluice.toml")
	base := "[frontend.f]\nbind = [\"127.0.0.1:0\"]\ndefault_backend = \"b\"\n[[backend.b.server]]\naddress = \"127.0.0.1:1\"\n"
	for _, tc := range []struct {
		global string
		want   int
	}{{"", 32 << 20}, {"gc_heap_floor = 0", 0}, {"gc_heap_floor = 134217728", 128 << 20}} {
		cfg, err := conf.Parse(file, []byte("[global]\n"+tc.global+"\n"+base))
		if err != nil {
			t.Fatalf("%q: %v", tc.global, err)
		}
		if cfg.Global.GCHeapFloor != tc.want {
			t.Errorf("%q: GCHeapFloor = %d, want %d", tc.global, cfg.Global.GCHeapFloor, tc.want)
		}
	}
	for _, bad := range []string{"gc_heap_floor = -1", "gc_heap_floor = 8589934592"} {
		_, err := conf.Parse(file, []byte("[global]\n"+bad+"\n"+base))
		errs, ok := err.(conf.Errors)
		if !ok || len(errs) != 1 || errs[0].File != file || errs[0].Line != 2 || errs[0].Key != "global.gc_heap_floor" || !strings.Contains(errs[0].Msg, "collects garbage") {
			t.Errorf("%q: got %v, want one problem at %s:2 global.gc_heap_floor", bad, err, file)
		}
	}
}
