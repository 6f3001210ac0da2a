package l7

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"

	"sluice/internal/rawio"
)

// headReader buffers one connection's input. It reads a message head
// (request or response line plus headers) into a buffer it reuses across
// messages, growing it up to max, and keeps whatever follows the head (body
// bytes, pipelined requests) for the next reads. It is the only reader of
// its connection, so leftover bytes are never lost between messages.
type headReader struct {
	conn net.Conn
	buf  []byte
	bp   *[]byte // buf's pool slot while buf is the pooled 8 KiB one
	r, w int     // unread bytes are buf[r:w]
	max  int
	// scanned is how far (from r) the end-of-head search has already looked.
	scanned int
	// rawRead, bound at the first waitRaw, reads the descriptor; rawN and
	// rawErr are what it saw.
	rawRead func(fd uintptr) bool
	rawN    int
	rawErr  error
	// raw, when set, is the descriptor fill waits on with an empty buffer
	// (waitRaw): a connection waiting for its peer's next bytes (a server's
	// answer, a client's first request) holds no buffer.
	raw syscall.RawConn
	// onWait, while set (a client's head read by a holder of a slot of
	// busy), is told when the read must wait for the peer; true ends
	// the read with errHeadWait instead (nothing read yet: the caller
	// parks the connection). moreRead, bound once, is fill's raw read.
	onWait   func() bool
	moreRead func(fd uintptr) bool
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 8<<10); return &b }}

func newHeadReader(c net.Conn, max int) *headReader {
	h := &headReader{conn: c, max: max}
	h.acquire()
	return h
}

// acquire takes a buffer from the pool for an empty reader.
func (h *headReader) acquire() {
	h.bp = bufPool.Get().(*[]byte)
	h.buf = *h.bp
	h.r, h.w, h.scanned = 0, 0, 0
}

// release returns the buffer to the pool (its slot kept, so no allocation);
// the next fill takes one again. Only for a reader with nothing buffered.
func (h *headReader) release() {
	if h.bp != nil {
		bufPool.Put(h.bp)
		h.bp = nil
	}
	h.buf = nil
	h.r, h.w, h.scanned = 0, 0, 0
}

// Errors of readHead.
var (
	errHeadTooLarge = errors.New("message head too large")
	errBadMessage   = errors.New("malformed message")
	errHeadWait     = errors.New("head read would wait") // onWait's stop
)

// buffered reports how many unread bytes are buffered.
func (h *headReader) buffered() int { return h.w - h.r }

// fill reads more from the connection into the buffer, growing it when full.
func (h *headReader) fill() error {
	if h.raw != nil && h.r == h.w {
		return h.waitRaw(h.raw)
	}
	if h.buf == nil {
		h.acquire() // released while idle (an idle pooled server connection)
	}
	if h.r > 0 && h.r == h.w {
		h.r, h.w, h.scanned = 0, 0, 0
	}
	if h.w == len(h.buf) {
		if h.r > 0 {
			n := copy(h.buf, h.buf[h.r:h.w])
			h.r, h.w = 0, n
		} else {
			if len(h.buf) >= h.max {
				return errHeadTooLarge
			}
			nb := make([]byte, min(2*len(h.buf), h.max))
			copy(nb, h.buf[:h.w])
			if h.bp != nil {
				bufPool.Put(h.bp)
				h.bp = nil
			}
			h.buf = nb
		}
	}
	if h.raw != nil && h.onWait != nil {
		// The rest of a head: read the descriptor so that a wait is seen
		// (onWait) before the poller's.
		if h.moreRead == nil {
			h.moreRead = h.readMore
		}
		h.rawN, h.rawErr = 0, nil
		if err := h.raw.Read(h.moreRead); err != nil {
			return err
		}
		switch {
		case h.rawErr != nil:
			return os.NewSyscallError("read", h.rawErr)
		case h.rawN <= 0:
			return io.EOF
		}
		h.w += h.rawN
		return nil
	}
	n, err := h.conn.Read(h.buf[h.w:])
	h.w += n
	if n > 0 {
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

// readMore is fill's raw read after the buffered part of a head: false
// when it must wait, told to onWait (which cannot stop it: bytes are
// buffered).
func (h *headReader) readMore(fd uintptr) bool {
	var err error
	for {
		h.rawN, err = syscall.Read(int(fd), h.buf[h.w:])
		if err != syscall.EINTR {
			break
		}
	}
	if err == syscall.EAGAIN {
		if h.onWait != nil {
			h.onWait()
		}
		return false
	}
	h.rawErr = err
	return true
}

// readHead returns the next head, without its final empty line, as a slice
// into the buffer valid until the next call. A head is ended by an empty line
// (CRLF CRLF, or bare LF LF which RFC 9112 lets recipients accept).
func (h *headReader) readHead() ([]byte, error) {
	// Skip empty lines before a request line (RFC 9112 §2.2).
	for {
		for h.r < h.w && (h.buf[h.r] == '\r' || h.buf[h.r] == '\n') {
			h.r++
		}
		if h.r < h.w {
			break
		}
		if err := h.fill(); err != nil {
			return nil, err
		}
	}
	for {
		data := h.buf[h.r:h.w]
		start := max(h.scanned-3, 0)
		if i, end := headEnd(data, start); i >= 0 {
			if end > h.max {
				return nil, errHeadTooLarge
			}
			head := data[:i+1]
			h.r += end
			h.scanned = 0
			return head, nil
		}
		h.scanned = len(data)
		if len(data) >= h.max {
			return nil, errHeadTooLarge
		}
		if err := h.fill(); err != nil {
			if err == errHeadTooLarge {
				return nil, err
			}
			if err == io.EOF && len(data) > 0 {
				return nil, io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
}

// waitIdle waits for the next bytes when nothing is buffered, without
// holding the buffer: a keep-alive client that stays quiet costs small
// (the client connection's), not 8 KiB, and the buffer comes back from the
// pool with what arrived (all of a typical request head).
func (h *headReader) waitIdle(small []byte) error {
	h.release()
	n, err := h.conn.Read(small)
	h.acquire()
	h.w = copy(h.buf, small[:n])
	if n > 0 {
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

// waitRaw is waitIdle for a connection whose descriptor it can read: it
// waits in the poller holding no buffer at all (not even waitIdle's small
// array), and reads what came straight into a pooled one. It reads before
// it waits, as waitIdle does: bytes may wait with no readiness left to
// announce them (a skipped first read was measured to hang clients).
func (h *headReader) waitRaw(rc syscall.RawConn) error {
	h.release()
	if h.rawRead == nil {
		h.rawRead = h.readFd
	}
	h.rawN, h.rawErr = 0, nil
	if err := rc.Read(h.rawRead); err != nil {
		return err // no buffer held: the wait goes on elsewhere, or the connection ends
	}
	if h.rawErr == errHeadWait {
		return errHeadWait
	}
	if h.rawErr != nil {
		return os.NewSyscallError("read", h.rawErr)
	}
	if h.rawN <= 0 {
		return io.EOF
	}
	h.w = h.rawN
	return nil
}

// readFd is waitRaw's read: false, with no buffer held, when there is
// nothing to read yet.
func (h *headReader) readFd(fd uintptr) bool {
	h.acquire()
	var err error
	for {
		h.rawN, err = rawio.Read(int(fd), h.buf)
		if err != syscall.EINTR {
			break
		}
	}
	if err == syscall.EAGAIN {
		h.release()
		if h.onWait != nil && h.onWait() {
			h.rawErr = errHeadWait
			return true
		}
		return false
	}
	h.rawErr = err
	return true
}

// Read reads body bytes: buffered ones first, then from the connection.
func (h *headReader) Read(p []byte) (int, error) {
	if h.r < h.w {
		n := copy(p, h.buf[h.r:h.w])
		h.r += n
		return n, nil
	}
	return h.conn.Read(p)
}

// readLine reads one CRLF- or LF-terminated line (for chunk sizes and
// trailers), without its terminator. Lines longer than 4 KiB are malformed.
func (h *headReader) readLine() ([]byte, error) {
	for {
		data := h.buf[h.r:h.w]
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line := data[:i]
			h.r += i + 1
			if n := len(line); n > 0 && line[n-1] == '\r' {
				line = line[:n-1]
			}
			return line, nil
		}
		if len(data) > 4096 {
			return nil, errBadMessage
		}
		if err := h.fill(); err != nil {
			if err == io.EOF {
				return nil, io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
}

// headEnd finds the empty line that ends a head in data, searching from
// start: the first LF followed by LF or by CR LF. It returns the index of
// that first LF and the offset just past the empty line, or -1.
func headEnd(data []byte, start int) (int, int) {
	for {
		i := bytes.IndexByte(data[start:], '\n')
		if i < 0 {
			return -1, 0
		}
		i += start
		switch {
		case i+1 < len(data) && data[i+1] == '\n':
			return i, i + 2
		case i+2 < len(data) && data[i+1] == '\r' && data[i+2] == '\n':
			return i, i + 3
		}
		start = i + 1
	}
}
