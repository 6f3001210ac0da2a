// Package rawio reads and writes non-blocking sockets with raw system
// calls, which do not tell the Go scheduler they are in a system call.
//
// syscall.Read and Write mark the goroutine's P as in a system call; when
// one lasts past a tick of the runtime's monitor (sysmon, 20 µs at its
// busiest) the monitor hands the P to another thread (a futex wake and a
// context switch) and keeps waking every 20 µs to look. A write to a local
// socket does the receiver's TCP work inline and often lasts that long on
// a virtual machine, so sysmon and those hand-offs took 9–12% of the
// worker's CPU. A call on a non-blocking socket never blocks: it may keep
// its P for the few microseconds it takes.
package rawio

import (
	"net"
	"net/netip"
	"strconv"
	"syscall"
	"unsafe"
)

// Read reads from the non-blocking socket fd.
//
// Read and Write are recvfrom and sendto, not read and write: on a socket
// those go straight to the socket layer where read and write pass through
// the VFS (2–3% of the relay's samples), as HAProxy's recv and send do;
// MSG_NOSIGNAL spares a SIGPIPE when the peer is gone.
func Read(fd int, b []byte) (int, error) {
	var p unsafe.Pointer
	if len(b) > 0 {
		p = unsafe.Pointer(&b[0])
	}
	n, _, e := syscall.RawSyscall6(syscall.SYS_RECVFROM, uintptr(fd), uintptr(p), uintptr(len(b)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// Write writes to the non-blocking socket fd.
func Write(fd int, b []byte) (int, error) {
	var p unsafe.Pointer
	if len(b) > 0 {
		p = unsafe.Pointer(&b[0])
	}
	n, _, e := syscall.RawSyscall6(syscall.SYS_SENDTO, uintptr(fd), uintptr(p), uintptr(len(b)), syscall.MSG_NOSIGNAL, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// WriteMore is Write; more adds MSG_MORE: the kernel may hold a last
// partial segment for what follows (more bytes, or the FIN of a shutdown
// or close made right after).
func WriteMore(fd int, b []byte, more bool) (int, error) {
	if !more {
		return Write(fd, b)
	}
	var p unsafe.Pointer
	if len(b) > 0 {
		p = unsafe.Pointer(&b[0])
	}
	n, _, e := syscall.RawSyscall6(syscall.SYS_SENDTO, uintptr(fd), uintptr(p), uintptr(len(b)), syscall.MSG_NOSIGNAL|syscall.MSG_MORE, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// Close closes fd, a socket with no SO_LINGER: its close does not wait.
func Close(fd int) error {
	_, _, e := syscall.RawSyscall(syscall.SYS_CLOSE, uintptr(fd), 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// Accept4 accepts on the non-blocking listening socket fd with flags
// (SOCK_NONBLOCK, SOCK_CLOEXEC); sa is filled with the peer's address,
// n its length (0: none given).
func Accept4(fd int, sa *syscall.RawSockaddrAny, flags int) (int, error) {
	l := uint32(syscall.SizeofSockaddrAny)
	nfd, _, e := syscall.RawSyscall6(syscall.SYS_ACCEPT4, uintptr(fd), uintptr(unsafe.Pointer(sa)), uintptr(unsafe.Pointer(&l)), uintptr(flags), 0, 0)
	if e != 0 {
		return -1, e
	}
	return int(nfd), nil
}

// AddrPort is the address accept4 wrote into sa, without the allocations
// of a syscall.Sockaddr. An IPv6 link-local peer keeps its zone (the
// interface's name, as net's addresses carry it): the same fe80:: address
// on two links is two clients.
func AddrPort(sa *syscall.RawSockaddrAny) netip.AddrPort {
	switch sa.Addr.Family {
	case syscall.AF_INET:
		a := (*syscall.RawSockaddrInet4)(unsafe.Pointer(sa))
		p := (*[2]byte)(unsafe.Pointer(&a.Port))
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(p[0])<<8|uint16(p[1]))
	case syscall.AF_INET6:
		a := (*syscall.RawSockaddrInet6)(unsafe.Pointer(sa))
		p := (*[2]byte)(unsafe.Pointer(&a.Port))
		ip := netip.AddrFrom16(a.Addr).Unmap()
		if a.Scope_id != 0 && ip.Is6() {
			ip = ip.WithZone(zoneName(int(a.Scope_id)))
		}
		return netip.AddrPortFrom(ip, uint16(p[0])<<8|uint16(p[1]))
	}
	return netip.AddrPort{}
}

// zoneName is the name of interface index, or the index itself when the
// interface is gone (as net does).
func zoneName(index int) string {
	if ifi, err := net.InterfaceByIndex(index); err == nil {
		return ifi.Name
	}
	return strconv.Itoa(index)
}
