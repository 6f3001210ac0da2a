package stats

import "testing"

// TestCheckStatusLayer6: a check whose TLS handshake with the server
// failed is HAProxy's L6RSP (L6TOUT for a timeout), not a layer 4
// connection problem or timeout (the TLS descriptions of health.describe).
func TestCheckStatusLayer6(t *testing.T) {
	for desc, want := range map[string]string{
		"tls handshake: certificate signed by unknown authority": "L6RSP",
		"tls handshake: remote error: tls: handshake failure":    "L6RSP",
		"tls handshake: timeout":                                 "L6TOUT",
		"timeout":                                                "L4TOUT",
		"connection refused":                                     "L4CON",
	} {
		if got, _ := checkStatus(&CheckResult{Desc: desc}); got != want {
			t.Errorf("check_status of %q = %s, want %s", desc, got, want)
		}
	}
}
