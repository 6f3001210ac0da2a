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

	"sluice/policy"
)

// The wire protocol, versions 1 and 2.
//
// Handshake (S accepts, C dials; nS, nC are 32 random bytes; v is the
// version C speaks, 1 or 2):
//
//	S → C  "SLCP" 0x01 nS
//	C → S  "SLCP" v nC HMAC(secret, client(v) nS nC)
//	S → C  0x00 HMAC(secret, server(v) nS nC)   accepted
//	       0x01                                  refused, then close
//
// with client(1) = "sluice peers client\0", client(2) = "sluice peers
// client 2\0" and likewise for server and session: the version is bound
// to the secret, so nobody on the path can rewrite it. S keeps sending
// 0x01 in its challenge so that a version 1 dialer (an older sluice) still
// gets in; a version 1 acceptor refuses a version 2 response before its
// verdict ("not a sluice peer (protocol header "SLCP\x02")") and the dialer
// then falls back to version 1 (see Syncer.push): sticky entries go on,
// rate increments are not sent to it.
//
// Then C sends frames, each
//
//	u32 length of payload | payload | first 16 bytes of HMAC(key, u64 seq | payload)
//
// with key = HMAC(secret, session(v) nS nC) and seq counting frames from
// 0, so a frame cannot be altered, replayed or reordered. An empty payload
// is a heartbeat. In version 1 a payload is sticky entries back to back:
//
//	u8 len | backend name | u8 len (4 or 16) | client address | u8 len | server id | u32 idle ms
//
// where idle is how long ago the entry was last used; the receiver's table
// applies its own TTL from there. In version 2 a payload starts with its
// kind, and a reader refuses a kind it does not know (a newer peer):
//
//	0x01 sticky entries as in version 1
//	0x02 rate increments back to back, each
//	     u8 len | frontend name | u8 len (4 or 16) | client address |
//	     u64 period (unix time / rate_limit.period) | u32 requests | u32 new connections
const (
	magic    = "SLCP\x01" // the challenge's header, and version 1's response
	magicV2  = "SLCP\x02"
	nonceLen = 32
	macLen   = sha256.Size
	tagLen   = 16
	maxFrame = 4 << 20

	kindEntries = 1
	kindRates   = 2
)

// labels are the HMAC labels of a protocol version.
type labels struct{ client, server, session string }

func labelsFor(version int) labels {
	if version == 2 {
		return labels{"sluice peers client 2\x00", "sluice peers server 2\x00", "sluice peers session 2\x00"}
	}
	return labels{"sluice peers client\x00", "sluice peers server\x00", "sluice peers session\x00"}
}

// errOldPeer is a version 2 handshake the peer closed before its verdict:
// a version 1 peer refusing the header it does not know.
var errOldPeer = errors.New("the peer closed the connection before its verdict (an older sluice that speaks protocol 1?)")

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
	version := 0
	switch string(in[:len(magic)]) {
	case magic:
		version = 1
	case magicV2:
		version = 2
	default:
		if string(in[:4]) == magic[:4] {
			return nil, fmt.Errorf("%w: the peer speaks protocol %d, this sluice 1 and 2 (upgrade this node)", errAuth, in[4])
		}
		return nil, fmt.Errorf("%w: not a sluice peer (protocol header %q)", errAuth, in[:len(magic)])
	}
	l := labelsFor(version)
	nC := in[len(magic) : len(magic)+nonceLen]
	if !hmac.Equal(in[len(magic)+nonceLen:], mac(secret, l.client, nS, nC)) {
		rw.Write([]byte{1})
		return nil, fmt.Errorf("%w: wrong response to the challenge (different secret)", errAuth)
	}
	if _, err := rw.Write(append([]byte{0}, mac(secret, l.server, nS, nC)...)); err != nil {
		return nil, err
	}
	return &frameReader{key: mac(secret, l.session, nS, nC), version: version}, nil
}

// clientHandshake proves the secret to the peer at the other end of rw,
// checks the peer's proof, and returns the writer for frames of the given
// protocol version (1 or 2).
func clientHandshake(rw io.ReadWriter, secret []byte, version int) (*frameWriter, error) {
	in := make([]byte, len(magic)+nonceLen)
	if _, err := io.ReadFull(rw, in); err != nil {
		return nil, fmt.Errorf("reading the challenge: %w", err)
	}
	if string(in[:len(magic)]) != magic {
		return nil, fmt.Errorf("%w: not a sluice peer (protocol header %q)", errAuth, in[:len(magic)])
	}
	nS := in[len(magic):]
	nC := nonce()
	l, hdr := labelsFor(version), magic
	if version == 2 {
		hdr = magicV2
	}
	out := append(append([]byte(hdr), nC...), mac(secret, l.client, nS, nC)...)
	if _, err := rw.Write(out); err != nil {
		return nil, err
	}
	var status [1]byte
	if _, err := io.ReadFull(rw, status[:]); err != nil {
		if version == 2 && errors.Is(err, io.EOF) {
			return nil, errOldPeer
		}
		return nil, fmt.Errorf("reading the verdict: %w", err)
	}
	if status[0] != 0 {
		return nil, fmt.Errorf("%w: the peer refused our response (different secret)", errAuth)
	}
	proof := make([]byte, macLen)
	if _, err := io.ReadFull(rw, proof); err != nil {
		return nil, fmt.Errorf("reading the peer's proof: %w", err)
	}
	if !hmac.Equal(proof, mac(secret, l.server, nS, nC)) {
		return nil, fmt.Errorf("%w: the peer does not prove the secret", errAuth)
	}
	return &frameWriter{key: mac(secret, l.session, nS, nC), version: version}, nil
}

type frameWriter struct {
	key     []byte
	seq     uint64
	buf     []byte
	version int
}

// write sends batch as one frame; entries whose names do not fit a byte
// length are skipped. An empty batch is a heartbeat.
func (w *frameWriter) write(out io.Writer, batch []change, now time.Time) error {
	b := append(w.buf[:0], 0, 0, 0, 0)
	if w.version >= 2 && len(batch) > 0 {
		b = append(b, kindEntries)
	}
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
	return w.send(out, b)
}

// writeRates sends batch as one frame of rate increments (version 2 only);
// increments whose names do not fit a byte length are skipped.
func (w *frameWriter) writeRates(out io.Writer, batch []rate) error {
	if w.version < 2 {
		return errors.New("rate increments need protocol 2")
	}
	b := append(w.buf[:0], 0, 0, 0, 0, kindRates)
	for _, r := range batch {
		addr := r.inc.Client.Unmap()
		if len(r.frontend) > 255 || !addr.IsValid() {
			continue
		}
		b = append(b, byte(len(r.frontend)))
		b = append(b, r.frontend...)
		a := addr.AsSlice()
		b = append(b, byte(len(a)))
		b = append(b, a...)
		b = binary.BigEndian.AppendUint64(b, uint64(r.inc.Period))
		b = binary.BigEndian.AppendUint32(b, r.inc.Requests)
		b = binary.BigEndian.AppendUint32(b, r.inc.Connections)
	}
	return w.send(out, b)
}

// send completes the frame b (its payload after a 4-byte room for the
// length) with its length and tag, and writes it.
func (w *frameWriter) send(out io.Writer, b []byte) error {
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
	key     []byte
	seq     uint64
	buf     []byte
	version int
}

// handler is what a frameReader gives what it reads to; each returns
// whether it took the record.
type handler struct {
	entry func(backend string, client netip.Addr, serverID string, used time.Time) bool
	rate  func(frontend string, inc policy.Increment) bool
}

// read reads one frame and, once its tag checks, hands each record to h.
// It returns how many entries and rate increments h took.
func (r *frameReader) read(in io.Reader, now time.Time, h handler) (entries, rates int, err error) {
	var hdr [4]byte
	if _, err := io.ReadFull(in, hdr[:]); err != nil {
		return 0, 0, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > maxFrame {
		return 0, 0, fmt.Errorf("frame of %d bytes is over the %d limit", n, maxFrame)
	}
	if cap(r.buf) < int(n)+tagLen {
		r.buf = make([]byte, int(n)+tagLen)
	}
	b := r.buf[:int(n)+tagLen]
	if _, err := io.ReadFull(in, b); err != nil {
		return 0, 0, err
	}
	payload, tag := b[:n], b[n:]
	if !hmac.Equal(tag, frameTag(r.key, r.seq, payload)) {
		return 0, 0, fmt.Errorf("%w: frame %d has a bad tag", errAuth, r.seq)
	}
	r.seq++
	kind := byte(kindEntries)
	if r.version >= 2 && len(payload) > 0 {
		kind, payload = payload[0], payload[1:]
	}
	switch kind {
	case kindEntries:
		entries, err = readEntries(payload, now, h.entry)
		return entries, 0, err
	case kindRates:
		rates, err = readRates(payload, h.rate)
		return 0, rates, err
	}
	return 0, 0, fmt.Errorf("frame of unknown kind %d (the peer runs a newer sluice: upgrade this node)", kind)
}

func readEntries(payload []byte, now time.Time, apply func(string, netip.Addr, string, time.Time) bool) (int, error) {
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

func readRates(payload []byte, apply func(string, policy.Increment) bool) (int, error) {
	applied := 0
	for len(payload) > 0 {
		name, rest, ok := field(payload)
		if !ok {
			return applied, errors.New("truncated rate increment")
		}
		a, rest, ok := field(rest)
		if !ok || len(rest) < 16 {
			return applied, errors.New("truncated rate increment")
		}
		addr, ok := netip.AddrFromSlice(a)
		if !ok {
			return applied, fmt.Errorf("bad client address of %d bytes", len(a))
		}
		inc := policy.Increment{Client: addr, Period: int64(binary.BigEndian.Uint64(rest)),
			Requests: binary.BigEndian.Uint32(rest[8:]), Connections: binary.BigEndian.Uint32(rest[12:])}
		payload = rest[16:]
		if apply(string(name), inc) {
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
