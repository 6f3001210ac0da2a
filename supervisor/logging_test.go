package supervisor

import (
	"log/slog"
	"log/syslog"
	"strings"
	"testing"
	"time"

	"sluice/conf"
)

// TestEveryFacilityHasItsNumber: each name conf accepts maps to the
// facility log/syslog numbers it as (RFC 5424 table 1: kern 0 to ftp 11,
// local0 16 to local7 23).
func TestEveryFacilityHasItsNumber(t *testing.T) {
	for i, name := range conf.SyslogFacilityNames {
		if i >= 12 {
			i += 4 // RFC 5424's 12..15 have no name in log/syslog
		}
		p, ok := facilities[name]
		if !ok {
			t.Errorf("facility %q accepted by conf but not mapped", name)
			continue
		}
		if want := syslog.Priority(i << 3); p != want {
			t.Errorf("facility %q = %d, want %d", name, p, want)
		}
	}
	if len(facilities) != len(conf.SyslogFacilityNames) {
		t.Errorf("%d facilities mapped, conf accepts %d", len(facilities), len(conf.SyslogFacilityNames))
	}
}

// JSON lines write durations as the configuration does ("30s"), not in
// nanoseconds.
func TestJSONLogDurations(t *testing.T) {
	var b strings.Builder
	slog.New(formatHandler(conf.LogJSON, &b, &slog.HandlerOptions{})).Info("draining", "hard_stop_after", 30*time.Second)
	if !strings.Contains(b.String(), `"hard_stop_after":"30s"`) {
		t.Fatalf("JSON line %s: want \"hard_stop_after\":\"30s\"", b.String())
	}
}
