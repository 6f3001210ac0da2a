package peers

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"sluice/backend"
	"sluice/policy"
)

type entry struct {
	backend, id string
	client      netip.Addr
	used        time.Time
}

func handshake(t *testing.T, cs, ss []byte) (*frameWriter, *frameReader, error, error) {
	return handshakeV(t, cs, ss, 2)
}

func handshakeV(t *testing.T, cs, ss []byte, version int) (*frameWriter, *frameReader, error, error) {
	t.Helper()
	c, s := net.Pipe()
	defer c.Close()
	defer s.Close()
	type res struct {
		r   *frameReader
		err error
	}
	ch := make(chan res, 1)
	go func() {
		r, err := serverHandshake(s, ss)
		if err != nil {
			s.Close()
		}
		ch <- res{r, err}
	}()
	w, cerr := clientHandshake(c, cs, version)
	if cerr != nil {
		c.Close()
	}
	sr := <-ch
	return w, sr.r, cerr, sr.err
}

func TestHandshake(t *testing.T) {
	secret := []byte("0123456789abcdef")
	w, r, cerr, serr := handshake(t, secret, secret)
	if cerr != nil || serr != nil {
		t.Fatalf("same secret: client %v, server %v", cerr, serr)
	}
	if !bytes.Equal(w.key, r.key) {
		t.Fatal("session keys differ")
	}
	_, _, cerr, serr = handshake(t, secret, []byte("0123456789abcdeX"))
	if !errors.Is(cerr, errAuth) || !errors.Is(serr, errAuth) {
		t.Fatalf("different secrets: client %v, server %v; want both errAuth", cerr, serr)
	}
}

func TestFrames(t *testing.T) {
	key := []byte("session key")
	now := time.Unix(5000, 0)
	batch := []change{
		{backend: "app", e: backend.StickyEntry{Client: netip.MustParseAddr("10.0.0.7"), ServerID: "abc", LastUsed: now.Add(-1500 * time.Millisecond)}},
		{backend: "api", e: backend.StickyEntry{Client: netip.MustParseAddr("2001:db8::1"), ServerID: "def", LastUsed: now}},
	}
	var wire bytes.Buffer
	w := &frameWriter{key: key}
	if err := w.write(&wire, batch, now); err != nil {
		t.Fatal(err)
	}
	first := append([]byte(nil), wire.Bytes()...)
	if err := w.write(&wire, nil, now); err != nil { // heartbeat
		t.Fatal(err)
	}
	var got []entry
	apply := handler{entry: func(b string, c netip.Addr, id string, used time.Time) bool {
		got = append(got, entry{b, id, c, used})
		return true
	}}
	r := &frameReader{key: key}
	later := now.Add(time.Second) // the receiver's clock when it reads
	if n, _, err := r.read(&wire, later, apply); err != nil || n != 2 {
		t.Fatalf("read: %d, %v", n, err)
	}
	want := []entry{
		{"app", "abc", netip.MustParseAddr("10.0.0.7"), later.Add(-1500 * time.Millisecond)},
		{"api", "def", netip.MustParseAddr("2001:db8::1"), later},
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("entry %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	if n, _, err := r.read(&wire, later, apply); err != nil || n != 0 {
		t.Fatalf("heartbeat: %d, %v", n, err)
	}

	for _, tc := range []struct {
		desc  string
		frame func() []byte
	}{
		{"replayed frame", func() []byte { return first }},
		{"altered frame", func() []byte {
			b := append([]byte(nil), first...)
			b[10] ^= 1
			return b
		}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			r := &frameReader{key: key, seq: 2}
			if tc.desc == "altered frame" {
				r.seq = 0
			}
			n, _, err := r.read(bytes.NewReader(tc.frame()), later, apply)
			if !errors.Is(err, errAuth) || n != 0 {
				t.Fatalf("got %d, %v; want errAuth and nothing applied", n, err)
			}
		})
	}
}

// TestHandshakeVersions: a dialer of either version gets in with the
// matching reader; the version is bound to the secret (rewriting it on the
// path fails authentication); a version 2 dialer facing a version 1
// acceptor (an older sluice, which closes without a verdict on a header it
// does not know) gets errOldPeer, so it can fall back.
func TestHandshakeVersions(t *testing.T) {
	secret := []byte("0123456789abcdef")
	for _, v := range []int{1, 2} {
		w, r, cerr, serr := handshakeV(t, secret, secret, v)
		if cerr != nil || serr != nil {
			t.Fatalf("version %d: client %v, server %v", v, cerr, serr)
		}
		if w.version != v || r.version != v || !bytes.Equal(w.key, r.key) {
			t.Fatalf("version %d: writer %d, reader %d, same key %v", v, w.version, r.version, bytes.Equal(w.key, r.key))
		}
	}
	if a, b := labelsFor(1), labelsFor(2); a.session == b.session || a.client == b.client {
		t.Fatal("versions share labels")
	}

	// On the path, the version byte of the response rewritten from 2 to 1:
	// cli <-> relayC | relayS <-> srv.
	cli, relayC := net.Pipe()
	relayS, srv := net.Pipe()
	for _, p := range []net.Conn{cli, relayC, relayS, srv} {
		p.SetDeadline(time.Now().Add(5 * time.Second))
		defer p.Close()
	}
	go func() {
		buf := make([]byte, len(magic)+nonceLen)
		io.ReadFull(relayS, buf)
		relayC.Write(buf)
		resp := make([]byte, len(magic)+nonceLen+macLen)
		io.ReadFull(relayC, resp)
		resp[4] = 1
		relayS.Write(resp)
		io.Copy(relayC, relayS)
		relayC.Close()
	}()
	errs := make(chan error, 1)
	go func() {
		_, err := serverHandshake(srv, secret)
		srv.Close()
		relayS.Close()
		errs <- err
	}()
	_, cerr := clientHandshake(cli, secret, 2)
	if serr := <-errs; !errors.Is(serr, errAuth) || cerr == nil {
		t.Fatalf("downgraded on the path: server %v, client %v; want errAuth and a failure", serr, cerr)
	}

	// A version 1 acceptor, as sluice had it before version 2.
	c, s := net.Pipe()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	s.SetDeadline(time.Now().Add(5 * time.Second))
	go func() {
		defer s.Close()
		s.Write(append([]byte(magic), nonce()...))
		in := make([]byte, len(magic)+nonceLen+macLen)
		io.ReadFull(s, in)
		if string(in[:len(magic)]) != magic {
			return // "not a sluice peer": closed without a verdict
		}
	}()
	if _, err := clientHandshake(c, secret, 2); !errors.Is(err, errOldPeer) {
		t.Fatalf("version 2 to an old acceptor: %v, want errOldPeer", err)
	}
	c.Close()

	// A dialer of a version this node does not know is told so.
	c, s = net.Pipe()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	s.SetDeadline(time.Now().Add(5 * time.Second))
	go func() {
		in := make([]byte, len(magic)+nonceLen)
		io.ReadFull(c, in)
		c.Write(append(append([]byte("SLCP\x03"), nonce()...), make([]byte, macLen)...))
		io.Copy(io.Discard, c)
	}()
	_, err := serverHandshake(s, secret)
	s.Close()
	c.Close()
	if !errors.Is(err, errAuth) || !strings.Contains(err.Error(), "protocol 3") {
		t.Fatalf("a version 3 dialer: %v, want errAuth naming protocol 3", err)
	}
}

// TestRateFrames: version 2 frames carry their kind; rate increments cross
// intact, a heartbeat stays empty, and a frame of a kind this node does not
// know is refused with a clear error rather than misread.
func TestRateFrames(t *testing.T) {
	key := []byte("session key")
	now := time.Unix(5000, 0)
	w := &frameWriter{key: key, version: 2}
	r := &frameReader{key: key, version: 2}
	rates := []rate{
		{"web", policy.Increment{Client: netip.MustParseAddr("10.0.0.7"), Period: 1 << 40, Requests: 7, Connections: 3}},
		{"api", policy.Increment{Client: netip.MustParseAddr("2001:db8::1"), Period: 500, Requests: 1 << 31}},
		{strings.Repeat("x", 256), policy.Increment{Client: netip.MustParseAddr("10.0.0.8"), Period: 1, Requests: 1}}, // name too long: skipped
	}
	entries := []change{{backend: "app", e: backend.StickyEntry{Client: netip.MustParseAddr("10.0.0.7"), ServerID: "abc", LastUsed: now}}}
	var wire bytes.Buffer
	if err := w.writeRates(&wire, rates); err != nil {
		t.Fatal(err)
	}
	if err := w.write(&wire, entries, now); err != nil {
		t.Fatal(err)
	}
	if err := w.write(&wire, nil, now); err != nil {
		t.Fatal(err)
	}
	var gotRates []rate
	var gotEntries int
	h := handler{
		entry: func(string, netip.Addr, string, time.Time) bool { gotEntries++; return true },
		rate: func(f string, inc policy.Increment) bool {
			gotRates = append(gotRates, rate{f, inc})
			return f == "web"
		},
	}
	if e, n, err := r.read(&wire, now, h); err != nil || e != 0 || n != 1 {
		t.Fatalf("rates frame: %d entries, %d rates taken, %v; want 0, 1 (the handler takes web only)", e, n, err)
	}
	if len(gotRates) != 2 || gotRates[0] != rates[0] || gotRates[1] != rates[1] {
		t.Fatalf("rates %+v, want %+v", gotRates, rates[:2])
	}
	if e, n, err := r.read(&wire, now, h); err != nil || e != 1 || n != 0 || gotEntries != 1 {
		t.Fatalf("entries frame: %d, %d, %v", e, n, err)
	}
	if e, n, err := r.read(&wire, now, h); err != nil || e != 0 || n != 0 {
		t.Fatalf("heartbeat: %d, %d, %v", e, n, err)
	}
	// Rates cannot go out in version 1, where a reader would misread them.
	if err := (&frameWriter{key: key, version: 1}).writeRates(&wire, rates); err == nil {
		t.Fatal("version 1 writer sent rates")
	}
	// A kind from the future.
	wire.Reset()
	if err := w.send(&wire, []byte{0, 0, 0, 0, 9, 1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.read(&wire, now, h); err == nil || !strings.Contains(err.Error(), "unknown kind 9") {
		t.Fatalf("frame of kind 9: %v, want an unknown kind error", err)
	}
}
