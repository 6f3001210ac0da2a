package sockets

import (
	"net"
	"net/netip"
	"strconv"

	"golang.org/x/sys/unix"
)

// Sockaddr is ap as the socket system calls take it, with the address
// family of a socket that reaches it: AF_INET for IPv4 (v4-mapped too),
// AF_INET6 otherwise, a zone ("[fe80::1%eth0]:53") as its interface index.
// For code that opens its own non-blocking sockets (health checks, UDP
// flows) instead of going through the net package.
func Sockaddr(ap netip.AddrPort) (family int, sa unix.Sockaddr) {
	a := ap.Addr().Unmap()
	if a.Is4() {
		return unix.AF_INET, &unix.SockaddrInet4{Port: int(ap.Port()), Addr: a.As4()}
	}
	sa6 := &unix.SockaddrInet6{Port: int(ap.Port()), Addr: a.As16()}
	if z := a.Zone(); z != "" {
		if ifi, err := net.InterfaceByName(z); err == nil {
			sa6.ZoneId = uint32(ifi.Index)
		} else if n, err := strconv.ParseUint(z, 10, 32); err == nil {
			sa6.ZoneId = uint32(n)
		}
	}
	return unix.AF_INET6, sa6
}
