package peers

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net/netip"
	"time"
)

// The wire protocol, version 1.
//
// Handshake (S accepts, C dials; nS, nC are 32 random bytes):
//
//	S → C  "SLCP" 0x01 nS
//	C → S  "SLCP" 0x01 nC HMAC(secret, "sluice peers client\0" nS nC)
//	S → C  0x00 HMAC(secret, "sluice peers server\0" nS nC)   accepted
//	       0x01                                                refused, then close
//
// Then C sends frames, each
//
//	u32 length of payload | payload | first 16 bytes of HMAC(key, u64 seq | payload)
//
// with key = HMAC(secret, "sluice peers session\0" nS nC) and seq counting
// frames from 0, so a frame cannot be altered, replayed or reordered. A
// payload is entries back to back:
//
//	u8 len | backend name | u8 len (4 or 16) | client address | u8 len | server id | u32 idle ms
//
// where idle is how long ago the entry was last used; the receiver's table
// applies its own TTL from there. An empty payload is a heartbeat.
const (
	magic    = "SLCP\x01"
	nonceLen = 32
	macLen   = sha256.Size
	tagLen   = 16
	maxFrame = 4 << 20
)

// errAuth marks a failed authentication, as opposed to a network error.
var errAuth = errors.New("authentication failed")

func mac(secret []byte, label string, nS, nC []byte) []byte {
	h := hmac.New(sha256.New, secret)
	h.Write([]byte(label))
	h.Write(nS)
	h.Write(nC)
	return h.Sum(nil)
}

func nonce() []byte {
	b := make([]byte, nonceLen)
	rand.Read(b) // never fails on Linux (crypto/rand panics if it could not)
	return b
}

// serverHandshake authenticates the dialer of rw and returns the reader for
// its frames.
func serverHandshake(rw io.ReadWriter, secret []byte) (*frameReader, error) {
	nS := nonce()
	if _, err := rw.Write(append([]byte(magic), nS...)); err != nil {
		return nil, err
	}
	in := make([]byte, len(magic)+nonceLen+macLen)
	if _, err := io.ReadFull(rw, in); err != nil {
		return nil, fmt.Errorf("reading the challenge response: %w", err)
	}
	if string(in[:len(magic)]) != magic {
		return nil, fmt.Errorf("%w: not a sluice peer (protocol header %q)", errAuth, in[:len(magic)])
	}
	nC := in[len(magic) : len(magic)+nonceLen]
	if !hmac.Equal(in[len(magic)+nonceLen:], mac(secret, "sluice peers client\x00", nS, nC)) {
		rw.Write([]byte{1})
		return nil, fmt.Errorf("%w: wrong response to the challenge (different secret)", errAuth)
	}
	if _, err := rw.Write(append([]byte{0}, mac(secret, "sluice peers server\x00", nS, nC)...)); err != nil {
		return nil, err
	}
	return &frameReader{key: mac(secret, "sluice peers session\x00", nS, nC)}, nil
}

// clientHandshake proves the secret to the peer at the other end of rw,
// checks the peer's proof, and returns the writer for frames.
func clientHandshake(rw io.ReadWriter, secret []byte) (*frameWriter, error) {
	in := make([]byte, len(magic)+nonceLen)
	if _, err := io.ReadFull(rw, in); err != nil {
		return nil, fmt.Errorf("reading the challenge: %w", err)
	}
	if string(in[:len(magic)]) != magic {
		return nil, fmt.Errorf("%w: not a sluice peer (protocol header %q)", errAuth, in[:len(magic)])
	}
	nS := in[len(magic):]
	nC := nonce()
	out := append(append([]byte(magic), nC...), mac(secret, "sluice peers client\x00", nS, nC)...)
	if _, err := rw.Write(out); err != nil {
		return nil, err
	}
	var status [1]byte
	if _, err := io.ReadFull(rw, status[:]); err != nil {
		return nil, fmt.Errorf("reading the verdict: %w", err)
	}
	if status[0] != 0 {
		return nil, fmt.Errorf("%w: the peer refused our response (different secret)", errAuth)
	}
	proof := make([]byte, macLen)
	if _, err := io.ReadFull(rw, proof); err != nil {
		return nil, fmt.Errorf("reading the peer's proof: %w", err)
	}
	if !hmac.Equal(proof, mac(secret, "sluice peers server\x00", nS, nC)) {
		return nil, fmt.Errorf("%w: the peer does not prove the secret", errAuth)
	}
	return &frameWriter{key: mac(secret, "sluice peers session\x00", nS, nC)}, nil
}

type frameWriter struct {
	key []byte
	seq uint64
	buf []byte
}

// write sends batch as one frame; entries whose names do not fit a byte
// length are skipped.
func (w *frameWriter) write(out io.Writer, batch []change, now time.Time) error {
	b := append(w.buf[:0], 0, 0, 0, 0)
	for _, c := range batch {
		addr := c.e.Client.Unmap()
		if len(c.backend) > 255 || len(c.e.ServerID) > 255 || !addr.IsValid() {
			continue
		}
		b = append(b, byte(len(c.backend)))
		b = append(b, c.backend...)
		a := addr.AsSlice()
		b = append(b, byte(len(a)))
		b = append(b, a...)
		b = append(b, byte(len(c.e.ServerID)))
		b = append(b, c.e.ServerID...)
		idle := max(now.Sub(c.e.LastUsed).Milliseconds(), 0)
		b = binary.BigEndian.AppendUint32(b, uint32(min(idle, math.MaxUint32)))
	}
	n := len(b) - 4
	binary.BigEndian.PutUint32(b, uint32(n))
	b = append(b, w.tag(b[4:])...)
	w.buf = b
	_, err := out.Write(b)
	return err
}

func (w *frameWriter) tag(payload []byte) []byte {
	t := frameTag(w.key, w.seq, payload)
	w.seq++
	return t
}

func frameTag(key []byte, seq uint64, payload []byte) []byte {
	h := hmac.New(sha256.New, key)
	var s [8]byte
	binary.BigEndian.PutUint64(s[:], seq)
	h.Write(s[:])
	h.Write(payload)
	return h.Sum(nil)[:tagLen]
}

type frameReader struct {
	key []byte
	seq uint64
	buf []byte
}

// read reads one frame and, once its tag checks, calls apply for each entry.
// It returns how many entries apply accepted.
func (r *frameReader) read(in io.Reader, now time.Time, apply func(backend string, client netip.Addr, serverID string, used time.Time) bool) (int, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(in, hdr[:]); err != nil {
		return 0, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > maxFrame {
		return 0, fmt.Errorf("frame of %d bytes is over the %d limit", n, maxFrame)
	}
	if cap(r.buf) < int(n)+tagLen {
		r.buf = make([]byte, int(n)+tagLen)
	}
	b := r.buf[:int(n)+tagLen]
	if _, err := io.ReadFull(in, b); err != nil {
		return 0, err
	}
	payload, tag := b[:n], b[n:]
	if !hmac.Equal(tag, frameTag(r.key, r.seq, payload)) {
		return 0, fmt.Errorf("%w: frame %d has a bad tag", errAuth, r.seq)
	}
	r.seq++
	applied := 0
	for len(payload) > 0 {
		name, rest, ok := field(payload)
		if !ok {
			return applied, errors.New("truncated entry")
		}
		a, rest, ok := field(rest)
		if !ok {
			return applied, errors.New("truncated entry")
		}
		id, rest, ok := field(rest)
		if !ok || len(rest) < 4 {
			return applied, errors.New("truncated entry")
		}
		idle := time.Duration(binary.BigEndian.Uint32(rest)) * time.Millisecond
		payload = rest[4:]
		addr, ok := netip.AddrFromSlice(a)
		if !ok {
			return applied, fmt.Errorf("bad client address of %d bytes", len(a))
		}
		if apply(string(name), addr, string(id), now.Add(-idle)) {
			applied++
		}
	}
	return applied, nil
}

// field splits a one-byte-length-prefixed field off b.
func field(b []byte) (f, rest []byte, ok bool) {
	if len(b) < 1 || len(b) < 1+int(b[0]) {
		return nil, nil, false
	}
	return b[1 : 1+int(b[0])], b[1+int(b[0]):], true
}
