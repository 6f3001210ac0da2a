package sockets

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// maxFDs is how many descriptors one message may carry (the kernel's
// SCM_MAX_FD is 253).
const maxFDs = 250

// SendFiles writes msg (one line, '\n' added when missing) on c with files
// attached as SCM_RIGHTS. The files stay open; the caller closes them.
func SendFiles(c *net.UnixConn, msg []byte, files []*os.File) error {
	if len(files) > maxFDs {
		return fmt.Errorf("cannot send %d descriptors in one message (at most %d)", len(files), maxFDs)
	}
	if len(msg) == 0 || msg[len(msg)-1] != '\n' {
		msg = append(msg, '\n')
	}
	fds := make([]int, len(files))
	for i, f := range files {
		fds[i] = int(f.Fd())
	}
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	n, oobn, err := c.WriteMsgUnix(msg, oob, nil)
	if err != nil {
		return err
	}
	if oobn != len(oob) {
		return errors.New("descriptors not sent")
	}
	if n < len(msg) {
		_, err = c.Write(msg[n:])
	}
	return err
}

// ReadFiles reads one line sent by SendFiles and the descriptors that came
// with it. The caller owns the files.
func ReadFiles(c *net.UnixConn) ([]byte, []*os.File, error) {
	buf := make([]byte, 64<<10)
	oob := make([]byte, unix.CmsgSpace(maxFDs*4))
	n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		return nil, nil, err
	}
	var files []*os.File
	if oobn > 0 {
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil {
			return nil, nil, err
		}
		for _, m := range msgs {
			fds, err := unix.ParseUnixRights(&m)
			if err != nil {
				continue
			}
			for _, fd := range fds {
				unix.CloseOnExec(fd)
				files = append(files, os.NewFile(uintptr(fd), "received"))
			}
		}
	}
	line := buf[:n]
	if n == 0 || line[n-1] != '\n' {
		rest, err := bufio.NewReader(c).ReadBytes('\n')
		line = append(line, rest...)
		if err != nil {
			for _, f := range files {
				f.Close()
			}
			return nil, nil, err
		}
	}
	return line, files, nil
}

// Inheritable returns a duplicate of f's descriptor that survives exec
// (close-on-exec cleared), for a process that replaces its own image.
func Inheritable(f *os.File) (int, error) {
	fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD, 3)
	if err != nil {
		return -1, err
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, 0); err != nil {
		syscall.Close(fd)
		return -1, err
	}
	return fd, nil
}
