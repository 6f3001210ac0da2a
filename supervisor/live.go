package supervisor

import (
	"bufio"
	byteorder "encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"sluice/conf"
)

// liveTimeout bounds each probe of `check --live`; keepalived runs the
// script every interval and a hung check counts as a failure anyway.
const liveTimeout = time.Second

// CheckLive answers keepalived's question "should this node hold the
// VIP?": nil when sluice runs and can serve, else a one-line reason. It
// requires, in this order:
//
//  1. the master to answer on global.control_socket (when one is set), with
//     a worker running and no reason this node cannot serve (the verdict
//     global.track_file follows: node maintenance, a vital frontend without
//     a server up, a stop under way);
//  2. GET http://STATS/healthz to answer 200 (when [stats] bind is set):
//     every vital frontend has a server up;
//  3. every frontend of global.vital_frontends to accept TCP connections on
//     its first bind address.
//
// A file that sets none of the three gives nothing to probe: that is an
// error, never a pass, or keepalived would keep the VIP on a node where
// nothing runs.
func CheckLive(cfg *conf.Config) error {
	if ControlPath(cfg.Global.ControlSocket, cfg.Global.PIDFile) == "" && cfg.Stats.Bind == "" && len(cfg.Global.VitalFrontends) == 0 {
		return errors.New("nothing to check: set global.control_socket or global.vital_frontends")
	}
	if err := pingMaster(cfg); err != nil {
		return err
	}
	if cfg.Stats.Bind != "" {
		if err := healthz(cfg.Stats.Bind); err != nil {
			return err
		}
	}
	for _, name := range cfg.Global.VitalFrontends {
		f := cfg.Frontend(name)
		if f == nil || len(f.Bind) == 0 {
			return fmt.Errorf("vital frontend %s is not configured", name)
		}
		if f.Network() != "tcp" {
			continue // nothing accepts: /healthz covers its servers
		}
		if err := accepting(f.Bind[0]); err != nil {
			return fmt.Errorf("vital frontend %s: %w", name, err)
		}
	}
	return nil
}

// pingMaster checks that the master process answers on its control socket.
// For now a connection is enough; once the control socket speaks (issue 7)
// this asks the master whether a worker is running and ready.
func pingMaster(cfg *conf.Config) error {
	path := ControlPath(cfg.Global.ControlSocket, cfg.Global.PIDFile)
	if path == "" {
		return nil
	}
	return CheckLiveSocket(path)
}

// CheckLiveSocket asks the master on the control socket path whether a
// worker runs and this node can serve (the verdict of the configuration it
// runs, which the track file follows).
func CheckLiveSocket(path string) error {
	r, _, err := Control(path, map[string]any{"cmd": "status"}, liveTimeout)
	if err != nil {
		return fmt.Errorf("master not answering on control socket %s: %v", path, err)
	}
	if !r.OK {
		return fmt.Errorf("master on %s: %s", path, r.Error)
	}
	if r.WorkerPID <= 0 {
		return fmt.Errorf("master %d on %s has no worker running", r.PID, path)
	}
	if r.Unserved != "" {
		// The verdict global.track_file follows (the rule of /healthz).
		return fmt.Errorf("master %d: this node cannot serve: %s", r.PID, r.Unserved)
	}
	return nil
}

// healthz asks the stats listener whether every vital frontend has a
// server up.
func healthz(bind string) error {
	url := "http://" + Dialable(bind) + "/healthz"
	client := http.Client{Timeout: liveTimeout}
	resp, err := client.Get(url)
	if err != nil {
		var ue interface{ Unwrap() error }
		if errors.As(err, &ue) {
			err = ue.Unwrap()
		}
		return fmt.Errorf("no answer from stats at %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	line, _ := bufio.NewReader(io.LimitReader(resp.Body, 4096)).ReadString('\n')
	line = strings.TrimSpace(line)
	if line == "" {
		line = http.StatusText(resp.StatusCode)
	}
	return fmt.Errorf("%s answered %d: %s", url, resp.StatusCode, line)
}

// accepting checks that something accepts TCP connections on the bind
// address addr. A wildcard address is dialled on loopback. An address this
// host does not hold (a VIP bound with freebind on the backup node) cannot
// be dialled: the connection would leave the host and reach whichever node
// holds the VIP, so the backup would report the master's state. There the
// kernel's table of listening sockets is read instead.
func accepting(addr string) error {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return err
	}
	if !ap.Addr().IsUnspecified() && !isLocal(ap.Addr()) {
		ok, err := listening(ap)
		if err != nil {
			return fmt.Errorf("%s is not an address of this host and the listening sockets cannot be read: %v", addr, err)
		}
		if !ok {
			return fmt.Errorf("nothing listens on %s", addr)
		}
		return nil
	}
	c, err := net.DialTimeout("tcp", Dialable(addr), liveTimeout)
	if err != nil {
		return fmt.Errorf("not accepting on %s: %v", addr, errors.Unwrap(err))
	}
	c.Close()
	return nil
}

func isLocal(a netip.Addr) bool {
	if a.IsLoopback() {
		return true
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, ia := range addrs {
		if n, ok := ia.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.Unmap() == a.Unmap() {
				return true
			}
		}
	}
	return false
}

// listening reports whether a TCP socket in the LISTEN state is bound to ap
// (or to the wildcard address on its port), from /proc/net/tcp and tcp6 of
// this network namespace.
func listening(ap netip.AddrPort) (bool, error) {
	var firstErr error
	read := 0
	for _, file := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		f, err := os.Open(file)
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		read++
		found := scanListen(f, ap)
		f.Close()
		if found {
			return true, nil
		}
	}
	if read == 0 {
		return false, firstErr
	}
	return false, nil
}

// scanListen scans one /proc/net/tcp* table for a LISTEN socket matching ap.
func scanListen(r io.Reader, ap netip.AddrPort) bool {
	sc := bufio.NewScanner(r)
	sc.Scan() // header
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 4 || fields[3] != "0A" { // TCP_LISTEN
			continue
		}
		local, ok := parseProcAddr(fields[1])
		if !ok || local.Port() != ap.Port() {
			continue
		}
		la := local.Addr().Unmap()
		if la == ap.Addr().Unmap() || la.IsUnspecified() {
			return true
		}
	}
	return false
}

// parseProcAddr decodes "0100007F:1F90": the address as 32-bit words
// printed in host byte order, then the port.
func parseProcAddr(s string) (netip.AddrPort, bool) {
	h, p, ok := strings.Cut(s, ":")
	if !ok {
		return netip.AddrPort{}, false
	}
	raw, err := hex.DecodeString(h)
	if err != nil || (len(raw) != 4 && len(raw) != 16) {
		return netip.AddrPort{}, false
	}
	b := make([]byte, len(raw))
	for i := 0; i < len(raw); i += 4 {
		byteorder.NativeEndian.PutUint32(b[i:], byteorder.BigEndian.Uint32(raw[i:]))
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return netip.AddrPort{}, false
	}
	a, _ := netip.AddrFromSlice(b)
	return netip.AddrPortFrom(a, uint16(port)), true
}
