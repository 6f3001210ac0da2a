package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"sluice/internal/testutil"
)

func udpConfigFor(dir, front string, servers map[string]string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "[global]\ncontrol_socket = %q\npid_file = %q\nhard_stop_after = \"5s\"\n\n", filepath.Join(dir, "ctl.sock"), filepath.Join(dir, "pid"))
	fmt.Fprintf(&b, "[frontend.dns]\nmode = \"udp\"\nbind = [%q]\ndefault_backend = \"u\"\n\n[backend.u]\nresponses = 1\n[backend.u.health]\ncheck = \"none\"\n", front)
	for name, addr := range servers {
		fmt.Fprintf(&b, "\n[[backend.u.server]]\nname = %q\naddress = %q\n", name, addr)
	}
	return b.String()
}

// udpOnce sends one datagram from a fresh socket (a new flow) and returns
// the name of the server that answered.
func udpOnce(front string, i int) (string, error) {
	c, err := net.Dial("udp", front)
	if err != nil {
		return "", err
	}
	defer c.Close()
	msg := fmt.Sprintf("q%d", i)
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		return "", err
	}
	buf := make([]byte, 256)
	n, err := c.Read(buf)
	if err != nil {
		return "", err
	}
	name, payload, _ := strings.Cut(string(buf[:n]), ":")
	if payload != msg {
		return "", fmt.Errorf("reply %q to %q", buf[:n], msg)
	}
	return name, nil
}

// TestReloadHandsOverUDP: the udp socket passes from worker to worker; a
// client sending datagrams throughout five reloads gets every answer, and
// new flows reach the new server set after each reload.
func TestReloadHandsOverUDP(t *testing.T) {
	sets := []map[string]string{
		{"a1": testutil.UDPEcho(t, "a1:"), "a2": testutil.UDPEcho(t, "a2:")},
		{"b1": testutil.UDPEcho(t, "b1:")},
	}
	dir := shortDir(t)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	front := pc.LocalAddr().String()
	pc.Close()
	file := filepath.Join(dir, "sluice.toml")
	os.WriteFile(file, []byte(udpConfigFor(dir, front, sets[0])), 0o644)
	l := startLB(t, binary, file, filepath.Join(dir, "ctl.sock"))

	var ok, failed atomic.Int64
	var firstErr atomic.Pointer[string]
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		deadline := time.Now().Add(time.Minute)
		for i := 0; i < 100000 && time.Now().Before(deadline); i++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := udpOnce(front, i); err != nil {
				failed.Add(1)
				s := err.Error()
				firstErr.CompareAndSwap(nil, &s)
			} else {
				ok.Add(1)
			}
		}
	}()
	for r := 1; r <= 5; r++ {
		set := sets[r%2]
		l.reload(udpConfigFor(dir, front, set))
		waitFor(t, 5*time.Second, "new flows on the new server set", func() bool {
			name, err := udpOnce(front, -r)
			return err == nil && set[name] != ""
		})
	}
	close(stop)
	wg.Wait()
	if failed.Load() > 0 {
		t.Fatalf("%d of %d datagrams unanswered across reloads; first: %s", failed.Load(), ok.Load()+failed.Load(), *firstErr.Load())
	}
	if ok.Load() == 0 {
		t.Fatal("no datagram answered")
	}
	t.Logf("%d datagrams answered across 5 reloads", ok.Load())
}
