// Package sdnotify tells systemd about a service's state through
// $NOTIFY_SOCKET (sd_notify(3)): READY=1, RELOADING=1, STOPPING=1, MAINPID,
// STATUS. Without NOTIFY_SOCKET every call does nothing.
package sdnotify

import (
	"fmt"
	"net"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// Env is the variable systemd sets for Type=notify services.
const Env = "NOTIFY_SOCKET"

// Notify sends state lines (e.g. "READY=1", "STATUS=serving") as one
// datagram. It returns nil when NOTIFY_SOCKET is not set.
func Notify(lines ...string) error {
	path := os.Getenv(Env)
	if path == "" {
		return nil
	}
	if strings.HasPrefix(path, "@") {
		path = "\x00" + path[1:] // abstract namespace
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	defer c.Close()
	_, err = c.Write([]byte(strings.Join(lines, "\n") + "\n"))
	if err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	return nil
}

// Ready says start-up (or a reload) finished, with this process as the
// service's main PID.
func Ready(status string) error {
	return Notify("READY=1", fmt.Sprintf("MAINPID=%d", os.Getpid()), "STATUS="+status)
}

// Reloading says a reload started; systemd waits for the next Ready. The
// monotonic timestamp is what Type=notify-reload requires.
func Reloading(status string) error {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	usec := ts.Nano() / 1000
	return Notify("RELOADING=1", fmt.Sprintf("MONOTONIC_USEC=%d", usec), "STATUS="+status)
}

// Stopping says the service is shutting down.
func Stopping(status string) error { return Notify("STOPPING=1", "STATUS="+status) }

// Status updates the free-form status line only.
func Status(status string) error { return Notify("STATUS=" + status) }
