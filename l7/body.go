package l7

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

var copyBufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

var chunkWriterPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 16<<10) }}

// errBadChunk reports broken chunked encoding.
var errBadChunk = errors.New("bad chunked encoding")

// errSideWrite marks a failure writing to the destination, so callers can
// tell which side broke.
type writeError struct{ err error }

func (e writeError) Error() string { return "write: " + e.err.Error() }
func (e writeError) Unwrap() error { return e.err }

// deadliner moves a body source's read deadline as bytes arrive.
type deadliner struct {
	conn net.Conn
	lazyDeadline
}

func (d *deadliner) touch() {
	if t, ok := d.next(); ok {
		d.conn.SetReadDeadline(t)
	}
}

// deadlineWriter writes to a connection, moving its write deadline (kept
// in dl) as bytes go out, so the timeout bounds a stall, not the transfer.
// Client and server connections each hold one, so passing it costs no
// allocation.
type deadlineWriter struct {
	conn    net.Conn
	dl      *deadlines
	timeout time.Duration
	// client, when set, is the HTTP/1 client conn is: a write it holds a
	// slot for may give the slot up (clientConn.writeSlotted).
	client *clientConn
}

func (w *deadlineWriter) Write(b []byte) (int, error) {
	if w.client != nil {
		return w.client.writeSlotted(b, w.dl, w.timeout)
	}
	w.dl.write(w.conn, time.Now(), w.timeout)
	return w.conn.Write(b)
}

// copyFixed copies exactly n body bytes from src to dst.
func copyFixed(dst io.Writer, src *headReader, n int64, idle time.Duration) (int64, error) {
	bp := copyBufPool.Get().(*[]byte)
	defer copyBufPool.Put(bp)
	buf := *bp
	dl := deadliner{conn: src.conn, lazyDeadline: lazyDeadline{timeout: idle}}
	var done int64
	for done < n {
		dl.touch()
		want := min(int64(len(buf)), n-done)
		r, err := src.Read(buf[:want])
		if r > 0 {
			if _, werr := dst.Write(buf[:r]); werr != nil {
				return done, writeError{werr}
			}
			done += int64(r)
		}
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return done, err
		}
	}
	return done, nil
}

// copyUntilEOF copies until src ends (a response framed by connection close).
func copyUntilEOF(dst io.Writer, src *headReader, idle time.Duration) (int64, error) {
	bp := copyBufPool.Get().(*[]byte)
	defer copyBufPool.Put(bp)
	buf := *bp
	dl := deadliner{conn: src.conn, lazyDeadline: lazyDeadline{timeout: idle}}
	var done int64
	for {
		dl.touch()
		r, err := src.Read(buf)
		if r > 0 {
			if _, werr := dst.Write(buf[:r]); werr != nil {
				return done, writeError{werr}
			}
			done += int64(r)
		}
		if err == io.EOF {
			return done, nil
		}
		if err != nil {
			return done, err
		}
	}
}

// copyChunked passes a chunked body (and its trailers) from src to dst
// verbatim while checking its framing, so a malformed body is caught here
// instead of confusing the next hop. Writes are batched and flushed before
// each read that may block.
func copyChunked(dst io.Writer, src *headReader, idle time.Duration) (int64, error) {
	return copyChunkedDrop(dst, src, idle, nil)
}

// copyChunkedDrop is copyChunked leaving out the trailer lines for which
// drop (nil: none) says so.
func copyChunkedDrop(dst io.Writer, src *headReader, idle time.Duration, drop func(line []byte) bool) (int64, error) {
	w := chunkWriterPool.Get().(*bufio.Writer)
	w.Reset(dst)
	defer func() { w.Reset(nil); chunkWriterPool.Put(w) }()
	dl := deadliner{conn: src.conn, lazyDeadline: lazyDeadline{timeout: idle}}
	var done int64
	flush := func() error {
		if src.buffered() == 0 && w.Buffered() > 0 {
			if err := w.Flush(); err != nil {
				return writeError{err}
			}
		}
		return nil
	}
	for {
		if err := flush(); err != nil {
			return done, err
		}
		dl.touch()
		line, err := src.readLine()
		if err != nil {
			return done, chunkErr(err)
		}
		size, ok := parseChunkSize(line)
		if !ok {
			return done, errBadChunk
		}
		w.Write(line)
		w.WriteString("\r\n")
		if size == 0 {
			// Trailers, then the empty line that ends the body.
			for {
				if err := flush(); err != nil {
					return done, err
				}
				dl.touch()
				t, err := src.readLine()
				if err != nil {
					return done, chunkErr(err)
				}
				if !validTrailer(t) {
					return done, errBadChunk
				}
				if len(t) > 0 && drop != nil && drop(t) {
					continue
				}
				w.Write(t)
				w.WriteString("\r\n")
				if len(t) == 0 {
					if err := w.Flush(); err != nil {
						return done, writeError{err}
					}
					return done, nil
				}
			}
		}
		for size > 0 {
			if src.buffered() == 0 {
				if err := flush(); err != nil {
					return done, err
				}
				dl.touch()
				if err := src.fill(); err != nil {
					return done, chunkErr(err)
				}
			}
			n := min(int64(src.buffered()), size)
			w.Write(src.buf[src.r : src.r+int(n)])
			src.r += int(n)
			size -= n
			done += n
		}
		if err := flush(); err != nil {
			return done, err
		}
		crlf, err := src.readLine()
		if err != nil {
			return done, chunkErr(err)
		}
		if len(crlf) != 0 {
			return done, errBadChunk
		}
		w.WriteString("\r\n")
	}
}

func chunkErr(err error) error {
	if err == errBadMessage || err == io.EOF {
		return errBadChunk
	}
	return err
}

// parseChunkSize reads the hex size of a chunk-size line and checks what
// follows it: optional white space, then chunk extensions free of control
// characters (a bare CR or NUL there is refused, as HAProxy does, rather
// than passed to a server that may read the line differently).
func parseChunkSize(line []byte) (int64, bool) {
	end := len(line)
	for i, c := range line {
		if c == ';' || c == ' ' || c == '\t' {
			end = i
			break
		}
	}
	if end == 0 || end > 15 {
		return 0, false
	}
	var n int64
	for _, c := range line[:end] {
		switch {
		case c >= '0' && c <= '9':
			n = n<<4 | int64(c-'0')
		case c >= 'a' && c <= 'f':
			n = n<<4 | int64(c-'a'+10)
		case c >= 'A' && c <= 'F':
			n = n<<4 | int64(c-'A'+10)
		default:
			return 0, false
		}
	}
	ext := trimOWS(line[end:])
	if len(ext) > 0 && (ext[0] != ';' || !validValue(ext)) {
		return 0, false
	}
	return n, true
}

// validTrailer accepts a trailer line as a header line: a token name, a
// colon, a value without control characters; the empty line ends them.
func validTrailer(t []byte) bool {
	if len(t) == 0 {
		return true
	}
	colon := bytes.IndexByte(t, ':')
	return colon > 0 && isToken(t[:colon]) && validValue(t[colon+1:])
}

func isTimeout(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }

// forwardingTrailer reports whether a request's trailer line is one of the
// headers sluice writes (isForwarding): a client's X-Client-Cert-Subject
// in the trailers would reach servers that merge trailers into the
// headers (old Tomcat, some CGI gateways) as if sluice had sent it.
func forwardingTrailer(line []byte) bool {
	i := bytes.IndexByte(line, ':')
	return i > 0 && isForwarding(line[:i])
}
