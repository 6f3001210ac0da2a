package backend

import "testing"

// TestAdminStateNames: the one mapping of admin-state names round-trips,
// refuses anything else, and names an unknown value without panicking.
func TestAdminStateNames(t *testing.T) {
	for _, tc := range []struct {
		name string
		a    AdminState
	}{{"ready", AdminReady}, {"drain", AdminDrain}, {"maint", AdminMaint}} {
		if got := tc.a.String(); got != tc.name {
			t.Errorf("%d.String() = %q, want %q", tc.a, got, tc.name)
		}
		a, err := ParseAdminState(tc.name)
		if err != nil || a != tc.a {
			t.Errorf("ParseAdminState(%q) = %v, %v; want %v", tc.name, a, err, tc.a)
		}
	}
	for _, bad := range []string{"", "READY", "up", "maintenance"} {
		if a, err := ParseAdminState(bad); err == nil {
			t.Errorf("ParseAdminState(%q) = %v, want an error", bad, a)
		}
	}
	if got := AdminState(7).String(); got != "AdminState(7)" {
		t.Errorf("AdminState(7).String() = %q", got)
	}
}
