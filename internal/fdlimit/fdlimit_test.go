package fdlimit

import (
	"strings"
	"testing"
)

func TestFit(t *testing.T) {
	for _, tc := range []struct {
		maxconn int
		set     bool
		limit   uint64
		want    int
		warn    bool
		msg     string // substring; "" means no message
	}{
		{50000, false, 1 << 20, 50000, false, ""},
		{50000, true, 100256, 50000, false, ""},                            // exactly enough
		{50000, false, 20000, 9872, false, "global.maxconn not set: 9872"}, // (20000-256)/2
		{50000, true, 20000, 50000, true, "set global.maxconn to 9872"},
		{9000, true, 20000, 9000, false, ""},
		{10, true, 0, 10, false, ""}, // limit unknown: trust the file
		{10, false, 100, 1, false, "not set: 1 "},
	} {
		n, msg, warn := Fit(tc.maxconn, tc.set, tc.limit)
		if n != tc.want || warn != tc.warn || (tc.msg == "") != (msg == "") || !strings.Contains(msg, tc.msg) {
			t.Errorf("Fit(%d, %v, %d) = %d, %q, %v; want %d, %q…, %v", tc.maxconn, tc.set, tc.limit, n, msg, warn, tc.want, tc.msg, tc.warn)
		}
	}
}

func TestLimit(t *testing.T) {
	if Limit() == 0 {
		t.Fatal("RLIMIT_NOFILE unreadable")
	}
}
