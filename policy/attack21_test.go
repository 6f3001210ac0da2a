package policy

import "testing"

func TestValidAuthority(t *testing.T) {
	for _, h := range []string{"a.com", "a.com:8080", "a.com:", "[::1]", "[::1]:443", "[2001:db8::1]", "192.0.2.1:80", "xn--bcher-kva.example.", "a_b~c"} {
		if !validAuthority([]byte(h)) {
			t.Errorf("%q refused", h)
		}
	}
	for _, h := range []string{"", ":80", "a@b", "a/b", `a\b`, "a b", "a?b", "a#b", "a%2fb", "a.com:80:90", "a.com:1234567", "[::1", "[]", "[::1]x", "[g::1]", `"a"`} {
		if validAuthority([]byte(h)) {
			t.Errorf("%q taken", h)
		}
	}
}

func TestValueIn(t *testing.T) {
	for _, c := range []struct {
		v, want string
		ok      bool
	}{
		{"1", "1", true}, {"0, 1", "1", true}, {"0,1 ", "1", true}, {"1,0", "1", true},
		{"a, b", "a, b", true}, {"10, 01", "1", false}, {"", "", true}, {"a,", "", false}, {"0", "1", false},
	} {
		if got := ValueIn([]byte(c.v), c.want); got != c.ok {
			t.Errorf("ValueIn(%q, %q) = %v", c.v, c.want, got)
		}
	}
}
